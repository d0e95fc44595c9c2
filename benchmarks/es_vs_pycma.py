"""Evaluations to f < 1e-8: natgrad-es (default rule), textbook xNES and pycma, in the same run.

Protocol (shared/design/benchmarks.md): x0 = 0.5·1 (0 for rosenbrock), σ0 = 0.5, target f ≤ 1e-8,
budget 1e4·d evaluations, every method seeded 1..S.  Prints a markdown table of the median number of
evaluations (and successes/S) per (function, d), with each method's ratio to pycma's median.
A run that misses the target counts as infinite (so a median over too many failures reads "inf").

    python benchmarks/es_vs_pycma.py                       # d = 10, 20; 5 seeds
    python benchmarks/es_vs_pycma.py --variants x1 tutorial transport   # + rule variants
    python benchmarks/es_vs_pycma.py --dims 10 --seeds 3 --jobs 2

Variants (``--variants``), each the default rule with one change: ``tutorial`` (the tutorial's
constants instead of pycma's), ``x1`` (CMA's c₁, c_μ exactly; the default multiplies them by 1.5),
``x2`` (× 2), ``transport`` (paths carried along A),
``nohsig`` (no stall of the rank-one path), ``passive`` (no negative weights).
"""

from __future__ import annotations

import os

# one BLAS thread per worker process: with several processes, OpenBLAS threads spin against each
# other and a 24×24 expm goes from 0.04 ms to 10 ms (measured on the 2-core machine)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import problems  # noqa: E402
from natgrad_es.es import minimize  # noqa: E402

TARGET = 1e-8
FUNCTIONS = ("sphere", "ellipsoid", "rotated_ellipsoid", "rosenbrock")
VARIANTS = {
    "tutorial": {"constants": "tutorial"},
    "x1": {"rate_multiplier": 1.0},
    "x2": {"rate_multiplier": 2.0},
    "transport": {"transport": "both"},
    "nohsig": {"hsig": False},
    "passive": {"active": False},
}


def _x0(name: str, d: int) -> np.ndarray:
    return np.zeros(d) if name == "rosenbrock" else np.full(d, 0.5)


def run_natgrad(name: str, d: int, seed: int, options: dict) -> tuple[int, bool]:
    f = problems.get(name, d)
    res = minimize(f, _x0(name, d), 0.5, vectorized=True, seed=seed, ftarget=TARGET,
                   budget=int(1e4 * d), **options)
    return res.nfev, bool(res.fun <= TARGET)


def run_pycma(name: str, d: int, seed: int) -> tuple[int, bool]:
    import cma

    f = problems.get(name, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        es = cma.CMAEvolutionStrategy(_x0(name, d), 0.5, {
            "seed": seed, "verbose": -9, "ftarget": TARGET, "maxfevals": int(1e4 * d)})
        while not es.stop():
            X = es.ask()
            es.tell(X, f(np.asarray(X)).tolist())
    return es.countevals, bool(es.best.f <= TARGET)


def _job(args):
    method, name, d, seed = args
    t = time.perf_counter()
    if method == "pycma":
        evals, ok = run_pycma(name, d, seed)
    elif method == "xNES":
        evals, ok = run_natgrad(name, d, seed, {"method": "xnes"})
    elif method == "natgrad-es":
        evals, ok = run_natgrad(name, d, seed, {})
    else:
        evals, ok = run_natgrad(name, d, seed, VARIANTS[method])
    return args, evals, ok, time.perf_counter() - t


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--functions", nargs="+", default=list(FUNCTIONS), choices=FUNCTIONS)
    parser.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS))
    parser.add_argument("--no-xnes", action="store_true", help="skip textbook xNES")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None,
                        help="also write every run as JSON (e.g. benchmarks/results/es_vs_pycma.json)")
    args = parser.parse_args(argv)

    methods = ["natgrad-es"] + ([] if args.no_xnes else ["xNES"]) + list(args.variants) + ["pycma"]
    jobs = [(m, f, d, s) for f in args.functions for d in args.dims for m in methods
            for s in range(1, args.seeds + 1)]
    results: dict[tuple, list] = {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for (m, f, d, s), evals, ok, secs in pool.map(_job, jobs):
            results.setdefault((m, f, d), []).append((evals, ok))
            print(f"# {m:>12s} {f:>18s} d={d:<3d} seed={s} evals={evals:>7d} "
                  f"{'ok' if ok else 'FAILED'} {secs:5.1f}s", file=sys.stderr, flush=True)

    if args.out:
        import json

        rows = [{"method": m, "function": f, "d": d, "runs": [{"evaluations": e, "success": ok}
                 for e, ok in runs]} for (m, f, d), runs in sorted(results.items())]
        with open(args.out, "w") as fh:
            json.dump({"target": TARGET, "seeds": args.seeds, "results": rows}, fh, indent=1)

    def median(m, f, d):
        runs = results[(m, f, d)]
        return float(np.median([e if ok else math.inf for e, ok in runs]))

    import cma

    print(f"\nEvaluations to f < {TARGET:g}, median over {args.seeds} seeds (successes/seeds), "
          f"ratio = median / pycma median. x0 = 0.5·1 (rosenbrock 0), σ0 = 0.5, budget 1e4·d.")
    print(f"numpy {np.__version__}, pycma {cma.__version__}, python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.perf_counter() - t0:.0f} s\n")
    others = [m for m in methods if m != "pycma"]
    head = ["function", "d", "pycma"] + [f"{m} (ratio)" for m in others]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for f in args.functions:
        for d in args.dims:
            ref = median("pycma", f, d)
            nok = sum(ok for _, ok in results[("pycma", f, d)])
            cells = [f, str(d), f"{ref:.0f} ({nok}/{args.seeds})"]
            for m in others:
                med = median(m, f, d)
                nok = sum(ok for _, ok in results[(m, f, d)])
                cells.append(f"{med:.0f} ({nok}/{args.seeds}) **{med / ref:.2f}×**")
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
