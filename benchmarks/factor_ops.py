"""Time per Factor operation for every structure: apply, natural_gradient, retract.

    python benchmarks/factor_ops.py            # d ∈ {100, 1000, 4000}, n = 32
    python benchmarks/factor_ops.py --quick    # d ∈ {100, 1000}

Prints a markdown table (microseconds per call, median of repeats) and, per structure, the
growth exponent from d = 1000 to the largest d (time ∝ d^exponent): architecture.md's costs say ~1
for diagonal, low-rank, block-diagonal (fixed block size) and Kronecker's sampling, ~2 for dense.
Anchors measured in the same run: one dense n×d×d matmul (the physical floor of dense sampling)
and scipy's d×d expm (the O(d³) retraction the Gram-matrix update avoids).
Writes ``benchmarks/results/factor_ops.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import scipy.linalg

from natgrad_es.structures import make


def timed(fn, min_time=0.2, max_repeats=200) -> float:
    """Median seconds per call over repeats, after one warm-up call."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def kronecker_shape(d: int) -> tuple[int, int]:
    d1 = max(r for r in range(1, math.isqrt(d) + 1) if d % r == 0)
    return d1, d // d1


STRUCTURES = {
    "full": lambda d: {},
    "diagonal": lambda d: {},
    "blockdiag (blocks of 50)": lambda d: {"blocks": [50] * (d // 50)},
    "kronecker": lambda d: {"shape": kronecker_shape(d)},
    "lowrank (k=16)": lambda d: {"rank": 16},
}


def run(dims, n):
    rng = np.random.default_rng(0)
    rows = []
    for label, kw in STRUCTURES.items():
        name = label.split()[0]
        for d in dims:
            factor = make(name, d, **kw(d))
            # move away from the identity so no operation hits a trivial special case
            Z = rng.standard_normal((n, d))
            w = rng.standard_normal(n) / n
            T = factor.natural_gradient(Z, w)
            factor = factor.retract(factor.split_trace(T)[1], 0.1)
            _, T0 = factor.split_trace(factor.natural_gradient(Z, w))
            rows.append({"structure": label, "d": d, "n": n, **measure(factor, Z, w, T0)})
    anchors = [{"d": d, **measure_anchors(rng, d, n)} for d in dims]
    return rows, anchors


def measure(factor, Z, w, T0) -> dict:
    return {"apply": timed(lambda: factor.apply(Z)),
            "natural_gradient": timed(lambda: factor.natural_gradient(Z, w)),
            "retract_expm": timed(lambda: factor.retract(T0, 0.1)),
            "retract_truncated2": timed(lambda: factor.retract(T0, 0.1, "truncated", 2))}


def measure_anchors(rng, d, n) -> dict:
    A = np.eye(d) + 0.01 * rng.standard_normal((d, d))
    Z = rng.standard_normal((n, d))
    return {"matmul_n_d_d": timed(lambda: Z @ A.T),
            "scipy_expm_d3": timed(lambda: scipy.linalg.expm(0.01 * A), min_time=0.05, max_repeats=5)}


def table(rows, anchors, dims) -> str:
    us = 1e6
    ops = ("apply", "natural_gradient", "retract_expm", "retract_truncated2")
    out = ["| structure | d | apply µs | natural_gradient µs | retract (expm) µs | retract (trunc 2) µs |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['structure']} | {r['d']} | " + " | ".join(f"{r[o] * us:,.0f}" for o in ops) + " |")
    out += ["", f"Growth exponent, d = {dims[-2]} → {dims[-1]} (time ∝ d^x):", "",
            "| structure | apply | natural_gradient | retract (expm) | retract (trunc 2) |",
            "|---|---|---|---|---|"]
    for label in STRUCTURES:
        a = next(r for r in rows if r["structure"] == label and r["d"] == dims[-2])
        b = next(r for r in rows if r["structure"] == label and r["d"] == dims[-1])
        exps = [math.log(b[o] / a[o]) / math.log(dims[-1] / dims[-2]) for o in ops]
        out.append(f"| {label} | " + " | ".join(f"{x:.2f}" for x in exps) + " |")
    out += ["", "Anchors in the same run (numpy): one n×d×d matmul Z Aᵀ, and scipy expm of a d×d matrix.",
            "",
            "| d | matmul µs | dense retract / matmul | scipy expm µs | dense retract / expm |",
            "|---|---|---|---|---|"]
    for an in anchors:
        dense = next(r for r in rows if r["structure"] == "full" and r["d"] == an["d"])
        out.append(f"| {an['d']} | {an['matmul_n_d_d'] * us:,.0f} | "
                   f"{dense['retract_expm'] / an['matmul_n_d_d']:.2f} | {an['scipy_expm_d3'] * us:,.0f} | "
                   f"{dense['retract_expm'] / an['scipy_expm_d3']:.3f} |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="d ∈ {100, 1000} only")
    parser.add_argument("-n", type=int, default=32, help="population size (rows of Z)")
    args = parser.parse_args()
    dims = [100, 1000] if args.quick else [100, 1000, 4000]
    rows, anchors = run(dims, args.n)
    text = table(rows, anchors, dims)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "numpy": np.__version__,
            "scipy": scipy.__version__, "python": platform.python_version()}
    (out / "factor_ops.json").write_text(json.dumps({"meta": meta, "rows": rows, "anchors": anchors},
                                                    indent=1))
    print(text)


if __name__ == "__main__":
    main()
