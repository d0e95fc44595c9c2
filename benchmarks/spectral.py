"""Time per update: Spectral vs Dense-with-eigh-per-step vs Dense (issue: seeds 000/001).

    python benchmarks/spectral.py            # d ∈ {100, 1000, 4000}, n = 32
    python benchmarks/spectral.py --quick    # d ∈ {100, 1000}

One "update" is what an ES generation does to the shape: natural gradient from Z (n×d) and w, then
the retraction.  What each row buys:
* Dense: A ← A·expm(t G₀) through the n×n Gram matrix (O(n d²)); S^p is *not* available.
* Dense + eigh: the same, then ``eigh(A Aᵀ)`` to get S^p (O(d³) with a large constant) — what a
  user who needs S^{-1/2} or S^p each step would otherwise do.
* Spectral (expm / cayley / truncated): the (μ, K) step of structures/spectral.py (O(d³) in the
  Q·R product, but matmuls, no eigendecomposition); S^p then costs two matmuls on a batch.
Each row also applies S^{-1/2} to the batch (``power``), so the rows do the same work for the user.
Prints a markdown table (ms per update, median of repeats) and the ratios to Dense + eigh.

``--es`` adds evaluations to f < 1e-8 of the ES with the spectral factor against the dense one
(same rule, same seeds; d = 10, 5 seeds): the spectral structure is a re-parametrisation of the
full covariance, so it should need about as many evaluations.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import scipy

from natgrad_es.structures import make


def timed(fn, min_time=0.3, max_repeats=50) -> float:
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 2 or (time.perf_counter() - start < min_time and len(times) < max_repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def dense_update(factor, Z, w):
    _, T0 = factor.split_trace(factor.natural_gradient(Z, w))
    return factor.retract(T0, 0.05)


def dense_eigh_update(factor, Z, w):
    new = dense_update(factor, Z, w)
    A = new.to_dense()
    lam, V = np.linalg.eigh(A @ A.T)
    return (Z @ V) * lam**-0.5 @ V.T  # S^{-1/2} on the batch


def spectral_update(factor, Z, w, method):
    _, T0 = factor.split_trace(factor.natural_gradient(Z, w))
    new = factor.retract(T0, 0.05, method=method)
    return new.power(-0.5, Z)


def run(dims, n):
    rng = np.random.default_rng(0)
    rows = []
    for d in dims:
        Z = rng.standard_normal((n, d))
        w = np.linspace(0.5, -0.5, n) / n
        dense = make("full", d)
        dense = dense_update(dense, rng.standard_normal((n, d)), w)
        spectral = make("spectral", d)
        for _ in range(3):  # separate the spectrum so rotations are not all damped to zero
            spectral = spectral.retract(spectral.natural_gradient(rng.standard_normal((n, d)), w), 0.5)
        rows.append({"d": d, "n": n, **measure(dense, spectral, Z, w)})
        print(f"d={d} done", flush=True)
    return rows


def measure(dense, spectral, Z, w) -> dict:
    row = {"dense": timed(lambda: dense_update(dense, Z, w)),
           "dense+eigh": timed(lambda: dense_eigh_update(dense, Z, w))}
    for method in ("expm", "cayley", "truncated"):
        row[f"spectral {method}"] = timed(lambda m=method: spectral_update(spectral, Z, w, m))
    return row


def table(rows) -> str:
    keys = ["dense", "dense+eigh", "spectral expm", "spectral cayley", "spectral truncated"]
    out = ["| d | " + " | ".join(f"{k} ms" for k in keys) + " | spectral truncated / dense+eigh |",
           "|---" * (len(keys) + 2) + "|"]
    for r in rows:
        out.append(f"| {r['d']} | " + " | ".join(f"{r[k] * 1e3:,.2f}" for k in keys)
                   + f" | {r['spectral truncated'] / r['dense+eigh']:.2f} |")
    return "\n".join(out)


def es_table(seeds=5, d=10) -> str:
    import problems
    from natgrad_es import minimize

    out = ["| problem | rule | full: median evals (min–max) | spectral: median evals (min–max) | ratio |",
           "|---|---|---|---|---|"]
    for name in ("ellipsoid", "rotated_ellipsoid", "rosenbrock"):
        f = problems.get(name, d)
        x0 = np.zeros(d) if name == "rosenbrock" else np.full(d, 0.5)
        for method in ("path", "xnes"):
            cells = []
            for structure in ("full", "spectral"):
                ev = [minimize(f, x0, 0.5, structure, vectorized=True, seed=s, ftarget=1e-8,
                               budget=100_000, method=method) for s in range(seeds)]
                n = [r.nfev if r.success else np.inf for r in ev]
                cells.append((np.median(n), min(n), max(n)))
            (a, a0, a1), (b, b0, b1) = cells
            out.append(f"| {name} | {method} | {a:.0f} ({a0:.0f}–{a1:.0f}) | {b:.0f} ({b0:.0f}–{b1:.0f}) "
                       f"| {b / a:.2f} |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("-n", type=int, default=32)
    parser.add_argument("--es", action="store_true", help="also: ES evaluations, spectral vs full")
    args = parser.parse_args()
    dims = [100, 1000] if args.quick else [100, 1000, 4000]
    rows = run(dims, args.n)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "numpy": np.__version__,
            "scipy": scipy.__version__}
    (out / "spectral.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(table(rows))
    if args.es:
        print()
        print(es_table())


if __name__ == "__main__":
    main()
