"""Evaluations to f < 1e-8: natgrad-es (default rule), textbook xNES and pycma, in the same run.

Protocol (shared/design/benchmarks.md): x0 = 0.5·1 (0 for rosenbrock), σ0 = 0.5, target f ≤ 1e-8,
budget 1e4·d evaluations, every method seeded 1..S.  Prints a markdown table of the median number of
evaluations (and successes/S) per (function, d), with each method's ratio to pycma's median.
A run that misses the target counts as infinite (so a median over too many failures reads "inf").

Rastrigin (10 d + Σ xᵢ² − 10 cos 2πxᵢ, multi-modal) is run with IPOP restarts by every method
(natgrad-es ``restarts="ipop"``; pycma the same loop by hand: popsize doubled after each stop that
is not the target, budget shared), from x0 = 3·1 with σ0 = 2 and a budget of 5e4·d.

    python benchmarks/es_vs_pycma.py                       # d = 10, 20; 5 seeds
    python benchmarks/es_vs_pycma.py --variants x1 tutorial transport   # + rule variants
    python benchmarks/es_vs_pycma.py --dims 10 --seeds 3 --jobs 2

Box bounds (``--bounds``, a table of its own): three problems on the box [0, 1]^d, d ∈ {4, 10},
x0 = 0.5·1, σ0 ∈ {0.1, 0.3, 1, 3}, target f − f* ≤ 1e-8, budget 3000·d — ``corner``: Σ (xᵢ − 3)²
(optimum in the corner 1, f* = 4d), ``face``: Σ cᵢ (xᵢ + 0.5)² with cᵢ = 10^{3(i−1)/(d−1)} (optimum
on the face 0), ``inside``: Σ (xᵢ − 0.9)² (optimum inside) — for natgrad-es (``bounds=(0, 1)``:
reflection, penalty, projected mean) and pycma's two handlers, ``BoundTransform`` and
``BoundPenalty`` (``cma.fmin2`` with ``bounds`` and ``BoundaryHandler``).  Every method's f is
checked to be called inside the box only.

    python benchmarks/es_vs_pycma.py --bounds --seeds 10

Variants (``--variants``), each the default rule with one change: ``tutorial`` (the tutorial's
constants instead of pycma's), ``x1`` (CMA's c₁, c_μ exactly; the default multiplies them by 1.5),
``x2`` (× 2), ``transport`` (paths carried along A),
``nohsig`` (no stall of the rank-one path), ``passive`` (no negative weights), ``tpa``
(two-point step-size adaptation instead of CSA; the default from d = 300 on).
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
FUNCTIONS = ("sphere", "ellipsoid", "rotated_ellipsoid", "rosenbrock", "rastrigin")
VARIANTS = {
    "tutorial": {"constants": "tutorial"},
    "x1": {"rate_multiplier": 1.0},
    "x2": {"rate_multiplier": 2.0},
    "transport": {"transport": "both"},
    "nohsig": {"hsig": False},
    "passive": {"active": False},
    "tpa": {"step_size": "tpa"},
}


def _problem(name: str, d: int):
    return problems.get(name, d)


def _x0(name: str, d: int) -> np.ndarray:
    if name == "rastrigin":
        return np.full(d, 3.0)
    return np.zeros(d) if name == "rosenbrock" else np.full(d, 0.5)


def _sigma0(name: str) -> float:
    return 2.0 if name == "rastrigin" else 0.5


def _budget(name: str, d: int) -> int:
    return int(5e4 * d) if name == "rastrigin" else int(1e4 * d)


def run_natgrad(name: str, d: int, seed: int, options: dict) -> tuple[int, bool]:
    f = _problem(name, d)
    if name == "rastrigin":
        options = {"restarts": "ipop", **options}
    res = minimize(f, _x0(name, d), _sigma0(name), vectorized=True, seed=seed, ftarget=TARGET,
                   budget=_budget(name, d), **options)
    return res.nfev, bool(res.fun <= TARGET)


def run_pycma(name: str, d: int, seed: int) -> tuple[int, bool]:
    """pycma with default options; IPOP by hand on rastrigin (popsize × 2 per restart)."""
    import cma

    f = _problem(name, d)
    budget, used, best, popsize = _budget(name, d), 0, np.inf, None
    for restart in range(10 if name == "rastrigin" else 1):
        opts = {"seed": seed + 1000 * restart, "verbose": -9, "ftarget": TARGET,
                "maxfevals": budget - used}
        if popsize is not None:
            opts["popsize"] = popsize
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            es = cma.CMAEvolutionStrategy(_x0(name, d), _sigma0(name), opts)
            while not es.stop():
                X = es.ask()
                es.tell(X, f(np.asarray(X)).tolist())
        used += es.countevals
        best = min(best, es.best.f)
        popsize = 2 * es.popsize
        if best <= TARGET or budget - used < popsize:
            break
    return used, bool(best <= TARGET)


BOX_PROBLEMS = {
    "corner": (lambda X: ((X - 3) ** 2).sum(-1), lambda d: 4.0 * d),
    "face": (lambda X: (np.logspace(0, 3, X.shape[-1]) * (X + 0.5) ** 2).sum(-1),
             lambda d: 0.25 * np.logspace(0, 3, d).sum()),
    "inside": (lambda X: ((X - 0.9) ** 2).sum(-1), lambda d: 0.0),
}
BOX_METHODS = ("natgrad-es", "pycma BoundTransform", "pycma BoundPenalty")


def run_bounded(method: str, name: str, d: int, sigma0: float, seed: int) -> tuple[int, bool]:
    """Evaluations and success of one bounded run; raises if f is called outside [0, 1]^d."""
    fun, fstar = BOX_PROBLEMS[name]
    target, budget = fstar(d) + TARGET, 3000 * d

    def f(X):
        X = np.asarray(X, dtype=float)
        if np.any(X < 0) or np.any(X > 1):
            raise AssertionError(f"{method} evaluated f outside the box")
        return fun(X)

    if method == "natgrad-es":
        res = minimize(f, np.full(d, 0.5), sigma0, vectorized=True, seed=seed, bounds=(0, 1),
                       ftarget=target, budget=budget)
        return res.nfev, bool(res.fun <= target)
    import cma

    handler = getattr(cma, method.split()[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, es = cma.fmin2(lambda x: float(f(np.asarray(x)[None])[0]), np.full(d, 0.5), sigma0, {
            "seed": seed, "verbose": -9, "bounds": [0, 1], "BoundaryHandler": handler,
            "maxfevals": budget, "ftarget": target})
    fbest = float(f(np.clip(np.asarray(es.result.xbest), 0, 1)[None])[0])
    return es.countevals, bool(fbest <= target)


def _bounded_job(args):
    return args, run_bounded(*args)


def bounds_table(seeds: int, jobs: int) -> None:
    sigmas, dims = (0.1, 0.3, 1.0, 3.0), (4, 10)
    work = [(m, p, d, s0, seed) for p in BOX_PROBLEMS for d in dims for s0 in sigmas
            for m in BOX_METHODS for seed in range(1, seeds + 1)]
    results: dict[tuple, list] = {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        for (m, p, d, s0, _), (evals, ok) in pool.map(_bounded_job, work):
            results.setdefault((m, p, d, s0), []).append(evals if ok else math.inf)
    import cma

    print(f"\nBox [0, 1]^d: evaluations to f − f* ≤ {TARGET:g}, median over {seeds} seeds "
          f"(successes/seeds); x0 = 0.5·1, budget 3000·d. pycma {cma.__version__}, "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| problem | d | σ0 | " + " | ".join(BOX_METHODS) + " |")
    print("|" + "---|" * (3 + len(BOX_METHODS)))
    for p in BOX_PROBLEMS:
        for d in dims:
            for s0 in sigmas:
                cells = []
                for m in BOX_METHODS:
                    runs = results[(m, p, d, s0)]
                    ok = sum(math.isfinite(e) for e in runs)
                    cells.append(f"{float(np.median(runs)):.0f} ({ok}/{seeds})")
                print(f"| {p} | {d} | {s0:g} | " + " | ".join(cells) + " |")


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
    parser.add_argument("--bounds", action="store_true",
                        help="only the box-bounds table (natgrad-es vs pycma's bound handlers)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None,
                        help="also write every run as JSON (e.g. benchmarks/results/es_vs_pycma.json)")
    args = parser.parse_args(argv)
    if args.bounds:
        bounds_table(args.seeds, args.jobs)
        return

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
          f"ratio = median / pycma median. x0 = 0.5·1 (rosenbrock 0), σ0 = 0.5, budget 1e4·d; "
          f"rastrigin with IPOP restarts, x0 = 3·1, σ0 = 2, budget 5e4·d.")
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
