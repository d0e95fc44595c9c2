"""The pairs route's curvature fit on planted problems: CPU time, passes, iterations, accuracy, memory.

Plants H = I + (c − 1)PPᵀ (``--problem stiff``, the precision side) or the valley cI − (c − 1)PPᵀ
(``--problem valley``, the covariance side), P the random d×r orthonormal basis of
``problems.functions`` (r = 10, c = 1e6), and draws N isotropic directions v (float32-exact, as the
strategy hands them to the route) with q = vᵀHv/‖v‖² from the problem's own (cancellation-free) f.
The pairs go into a fresh ``PairsRoute`` (rank k = r, its held-out split included) and one fit is
run through ``PairsRoute._maybe_fit`` at N = (pairs-per-kd)·k·d.  Each (problem, d, N, seed) runs in
a child process, so that its peak memory (``resource.getrusage`` maxrss: buffer, fit and all) is its
own.  Printed per fit: CPU seconds of the fit, Gauss–Newton steps, passes over the N×d buffer, train and
held-out residuals, accepted, the fitted rank and the whitened condition of (Ĥ^{-1/2} H Ĥ^{-1/2})
(computed in span(Q, P) plus its complement, nothing d×d).

    python benchmarks/pairs_fit.py --dims 1000 --pairs-per-kd 2 4 --problem stiff valley --seeds 1 2
    python benchmarks/pairs_fit.py --dims 1000 --pairs-per-kd 8 --problem valley --seeds 1
    python benchmarks/pairs_fit.py --dims 3000 --pairs-per-kd 2 4 --problem stiff --seeds 1
    python benchmarks/pairs_fit.py ... --pairs-module /tmp/pairs_before.py   # another pairs.py
    python benchmarks/pairs_fit.py --dims 10000 --pairs-per-kd 2 --problem stiff --seeds 1 --trace

``--pairs-module`` loads the route from another copy of ``natgrad_es/es/pairs.py`` (e.g. the one
before a change) for a before/after table; its passes are then counted by wrapping the buffer in an
ndarray subclass that counts every matmul or elementwise operation on all N rows.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from problems.functions import StiffSubspace, Valley  # noqa: E402

PROBLEMS = {"stiff": (StiffSubspace, "precision"), "valley": (Valley, "covariance")}
RANK, CONDITION = 10, 1e6
#: pairs added to the buffer per call (as a generation of the route would, but larger)
CHUNK = 5000


def _load_pairs(path: str | None):
    if path is None:
        from natgrad_es.es import pairs
        return pairs
    spec = importlib.util.spec_from_file_location("pairs_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class _Counting(np.ndarray):
    """An ndarray that counts the operations that read all of its rows (for an old pairs.py)."""

    rows = 0
    count = 0

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if any(isinstance(x, _Counting) and x.size >= _Counting.rows for x in inputs):
            _Counting.count += 1
        inputs = tuple(x.view(np.ndarray) if isinstance(x, _Counting) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)


def whitened_condition(model, prob) -> float:
    """Condition of W H W, W = Ĥ^{-1/2}: in span(Q, P) exactly, and H/s on its complement."""
    Q, s, P = model.Q, model.s, prob.P
    B, _ = np.linalg.qr(np.concatenate([Q, P], axis=1))
    a = model.whitening()
    WB = (B + Q @ (a[:, None] * (Q.T @ B))) / math.sqrt(s)
    if isinstance(prob, Valley):
        HWB = prob.condition * WB - (prob.condition - 1) * P @ (P.T @ WB)
        outside = prob.condition / s
    else:
        HWB = WB + (prob.condition - 1) * P @ (P.T @ WB)
        outside = 1.0 / s
    ev = np.linalg.eigvalsh(WB.T @ HWB)
    ev = np.concatenate([ev, [outside]]) if B.shape[1] < B.shape[0] else ev
    return float(ev.max() / ev.min()) if ev.min() > 0 else math.inf


def one_fit(problem: str, d: int, per_kd: float, seed: int, module: str | None,
            trace: bool = False) -> dict[str, Any]:
    """Fill a route's buffer with N = per_kd·k·d planted pairs and fit once; the fit's record
    (``trace``: with the residual, the alignment of span Y with span P and the passes so far at
    every point the fit evaluates, under "trace")."""
    pairs = _load_pairs(module)
    cls, side = PROBLEMS[problem]
    prob = cls(d, RANK, CONDITION, seed=seed)
    n = int(per_kd * RANK * d)
    # a buffer of exactly N pairs (the fold split is made at insertion, so the fit is the same as in
    # a larger ring); 8·k·d pairs would reserve 32 GB at d = 10000
    route = pairs.PairsRoute(d, RANK, side, pairs=1, capacity=n, seed=seed)
    route.next_fit = n
    rng = np.random.default_rng([seed, 99])
    stores_directions = hasattr(route.buffer, "held_out")  # the float32 buffer takes v, not v/‖v‖
    for start in range(0, n, CHUNK):
        V = rng.standard_normal((min(CHUNK, n - start), d)).astype(np.float32).astype(np.float64)
        norm2 = (V * V).sum(-1)
        q = prob(V) / norm2
        route.buffer.add(V if stores_directions else V / np.sqrt(norm2)[:, None], q)
    captured: dict[str, Any] = {}
    originals: dict[str, Any] = {}  # what is patched in the module, restored after the fit

    def patch(name: str, value) -> None:
        originals.setdefault(name, getattr(pairs, name))
        setattr(pairs, name, value)

    fit, passes_counted = pairs.fit_curvature, not stores_directions
    if passes_counted:  # an old pairs.py: count the passes over U and the SVP iterations
        fit_s_and_c = pairs._fit_s_and_C

        def counted_s_and_c(*args, **kwargs):
            captured["s_and_c"] = captured.get("s_and_c", 0) + 1
            return fit_s_and_c(*args, **kwargs)

        patch("_fit_s_and_C", counted_s_and_c)

    def capture(U, *args, **kwargs):
        if passes_counted:
            _Counting.rows, _Counting.count = U.size, 0
            U = U.view(_Counting)
        out = fit(U, *args, **kwargs)
        captured["model"] = out[0]
        if passes_counted:
            captured["passes"] = _Counting.count
        return out

    points: list[dict[str, float]] = []
    if trace:  # every point of the fit: the spectral start, each step fraction tried
        if not hasattr(pairs, "_point"):
            raise SystemExit("--trace needs a pairs.py with the Gauss–Newton fit (pairs._point)")
        point = pairs._point

        def traced(U, Y, *args, **kwargs):
            x = point(U, Y, *args, **kwargs)
            cos2 = np.linalg.svd(prob.P.T @ Y, compute_uv=False) ** 2
            points.append({"res": x.res, "cos2_mean": float(cos2.mean()), "cos2_min": float(cos2.min()),
                           "passes": U.passes})
            return x

        patch("_point", traced)
    patch("fit_curvature", capture)
    try:
        route._maybe_fit()
    finally:
        for name, value in originals.items():
            setattr(pairs, name, value)
    record = dict(route.fits[-1])
    if passes_counted:
        record["passes"] = captured["passes"]
        record["iterations"] = captured["s_and_c"] - 3  # one before the loop, two after it
    model = captured.get("model")
    record.update(problem=problem, d=d, N=n, seed=seed,
                  condition=None if model is None else whitened_condition(model, prob),
                  maxrss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    if trace:
        record["trace"] = points
    return record


def _fmt(x, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[1000])
    parser.add_argument("--pairs-per-kd", type=float, nargs="+", default=[2, 4],
                        help="N = this · k · d pairs per fit (default 2 4)")
    parser.add_argument("--problem", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--pairs-module", default=None, help="path of another pairs.py to time")
    parser.add_argument("--trace", action="store_true",
                        help="print each point of the fit: residual, mean and least cos² of the "
                             "principal angles between span Y and the planted span P, passes so far")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child's job, as JSON
    args = parser.parse_args()
    if args.one is not None:
        job = json.loads(args.one)
        print(json.dumps(one_fit(**job)))
        return
    print("| problem | d | N | seed | fit CPU s | iterations | passes | train | held out | accepted "
          "| rank | whitened cond. | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d in args.dims:
        for problem in args.problem:
            for per_kd in args.pairs_per_kd:
                for seed in args.seeds:
                    job = {"problem": problem, "d": d, "per_kd": per_kd, "seed": seed,
                           "module": args.pairs_module, "trace": args.trace}
                    run = subprocess.run([sys.executable, __file__, "--one", json.dumps(job)],
                                         capture_output=True, text=True)
                    if run.returncode != 0:
                        sys.exit(run.stderr)
                    r = json.loads(run.stdout.strip().splitlines()[-1])
                    print(f"| {problem} | {d} | {r['N']} | {seed} | {r['seconds']:.1f} | "
                          f"{r.get('iterations', '–')} | {r.get('passes', '–')} | {r['train']:.2e} | "
                          f"{r['held_out']:.2e} | {r['accepted']} | {r['rank']} | "
                          f"{_fmt(r['condition'], '.3g')} | {r['maxrss_gib']:.2f} |", flush=True)
                    for x in r.get("trace", []):
                        print(f"    residual {x['res']:.3e}, cos² mean {x['cos2_mean']:.4f}, "
                              f"min {x['cos2_min']:.4f}, passes {x['passes']}", flush=True)


if __name__ == "__main__":
    main()
