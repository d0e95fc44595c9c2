"""High dimension, separable: d = 1000 ellipsoid (condition 1e6), diagonal structure vs pycma.

Protocol (shared/design/benchmarks.md, "ES — high dimension"): f(x) = Σ 1e6^{(i−1)/(d−1)} xᵢ²,
x0 = 0.5·1, σ0 = 0.5, target f ≤ 1e-8, budget 1e6 evaluations, seeds 1..S.  Methods:

* ``natgrad-es diagonal``: ``NaturalES(x0, σ0, "diagonal")`` with the default (path) rule;
  ``--variants`` adds the default with one change each (``VARIANTS``: rate multipliers, the
  step-size rule, …), e.g. ``x1.5`` (the diagonal's rate multiplier before it became 2) or
  ``tpa`` (two-point step-size adaptation instead of CSA);
* ``pycma CMA_diagonal``: ``cma.CMAEvolutionStrategy(x0, σ0, {"CMA_diagonal": True})`` (sep-CMA;
  pycma 4.5.0 runs it as a diagonal decoding ``sigma_vec`` with two-point step-size adaptation,
  TPA, which it uses instead of CSA from d = 300 on);
* pycma full is not run to the target at d = 1000 (~30 ms per generation on average here, its
  eigendecompositions included: a run of ~10⁵ generations would take about an hour); its
  per-generation time is measured, as is that of natgrad-es ``"full"``.

Two tables: evaluations to the target (median, min–max, successes; a run that misses counts as
infinite, its final f is shown), and the per-generation overhead — ask + tell with f computed
outside the timer, median of ``--timing-gens`` generations after ``--warmup`` ones — as a ratio
to pycma ``CMA_diagonal`` and pycma full measured in the same process.

    python benchmarks/highdim_separable.py                         # 3 seeds, d = 1000
    python benchmarks/highdim_separable.py --seeds 5 --jobs 2
    python benchmarks/highdim_separable.py --variants x1.5 tpa     # + rule variants (see VARIANTS)
    python benchmarks/highdim_separable.py --dim 100 --function sphere --timing-gens 0 --no-pycma \
        --variants x1 x1.5 x3 --seeds 7                            # the sweeps behind the defaults
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import problems  # noqa: E402
from natgrad_es.es import NaturalES  # noqa: E402

TARGET = 1e-8
#: variants of the diagonal default, each one change (``--variants``)
VARIANTS: dict[str, dict] = {
    "x1": {"rate_multiplier": 1.0},
    "x1.5": {"rate_multiplier": 1.5},
    "x2": {"rate_multiplier": 2.0},
    "x3": {"rate_multiplier": 3.0},
    "tutorial": {"constants": "tutorial"},
    "nohsig": {"hsig": False},
    "passive": {"active": False},
    "csa": {"step_size": "csa"},
    "tpa": {"step_size": "tpa"},
}


def _x0(function: str, d: int) -> np.ndarray:
    return np.zeros(d) if function == "rosenbrock" else np.full(d, 0.5)


def run_natgrad(d: int, seed: int, budget: int, options: dict, function: str) -> dict:
    f = problems.get(function, d)
    es = NaturalES(_x0(function, d), 0.5, "diagonal", seed=seed, ftarget=TARGET,
                   maxfevals=budget, **options)
    t = time.perf_counter()
    while not es.stop():
        X = es.ask()
        es.tell(X, f(X))
    return {"evaluations": es.evaluations, "f": es.result.fbest,
            "success": es.result.fbest <= TARGET, "seconds": time.perf_counter() - t,
            "stop": sorted(es.stop())}


def _pycma(d: int, seed: int, budget: int, diagonal: bool, x0=None):
    import cma

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cma.CMAEvolutionStrategy(np.full(d, 0.5) if x0 is None else x0, 0.5, {
            "seed": seed, "verbose": -9, "ftarget": TARGET, "maxfevals": budget,
            "CMA_diagonal": diagonal, "tolconditioncov": 1e14})


def run_pycma(d: int, seed: int, budget: int, function: str) -> dict:
    f = problems.get(function, d)
    es = _pycma(d, seed, budget, True, _x0(function, d))
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while not es.stop():
            X = es.ask()
            es.tell(X, f(np.asarray(X)).tolist())
    return {"evaluations": es.countevals, "f": es.best.f, "success": es.best.f <= TARGET,
            "seconds": time.perf_counter() - t, "stop": sorted(es.stop())}


def _job(args):
    method, d, seed, budget, function = args
    if method == "pycma CMA_diagonal":
        return args, run_pycma(d, seed, budget, function)
    options = VARIANTS.get(method.removeprefix("natgrad-es diagonal ").strip("()"), {})
    return args, run_natgrad(d, seed, budget, options, function)


def per_generation(d: int, gens: int, warmup: int, full: bool) -> dict[str, float]:
    """Median ms of ask + tell per generation (f outside the timer), each method in turn."""
    f = problems.get("ellipsoid", d)
    out = {}

    def ours(structure):
        es = NaturalES(np.full(d, 0.5), 0.5, structure, seed=1)
        times = []
        for g in range(warmup + gens):
            t = time.perf_counter()
            X = es.ask()
            t1 = time.perf_counter()
            y = f(X)
            t2 = time.perf_counter()
            es.tell(X, y)
            t3 = time.perf_counter()
            if g >= warmup:
                times.append((t1 - t) + (t3 - t2))
        return 1e3 * float(np.median(times)), 1e3 * float(np.mean(times))

    def theirs(diagonal):
        es = _pycma(d, 1, 10 ** 9, diagonal)
        times = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for g in range(warmup + gens):
                t = time.perf_counter()
                X = es.ask()
                t1 = time.perf_counter()
                y = f(np.asarray(X)).tolist()
                t2 = time.perf_counter()
                es.tell(X, y)
                t3 = time.perf_counter()
                if g >= warmup:
                    times.append((t1 - t) + (t3 - t2))
        return 1e3 * float(np.median(times)), 1e3 * float(np.mean(times))

    out["natgrad-es diagonal"] = ours("diagonal")
    out["pycma CMA_diagonal"] = theirs(True)
    if full:
        out["natgrad-es full"] = ours("full")
        out["pycma full"] = theirs(False)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1000)
    parser.add_argument("--function", default="ellipsoid", choices=["ellipsoid", "sphere", "rosenbrock"],
                        help="the convergence runs' function (timing always uses the ellipsoid)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=10 ** 6)
    parser.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS))
    parser.add_argument("--no-pycma", action="store_true", help="skip the pycma convergence runs")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timing-gens", type=int, default=200, help="0: no timing table")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--no-full-timing", action="store_true",
                        help="skip the per-generation timing of the full (dense) structures")
    parser.add_argument("--out", default=None, help="also write the runs as JSON")
    args = parser.parse_args(argv)

    d = args.dim
    t0 = time.perf_counter()
    timing = (per_generation(d, args.timing_gens, args.warmup, not args.no_full_timing)
              if args.timing_gens > 0 else {})

    methods = ["natgrad-es diagonal"] + [f"natgrad-es diagonal ({v})" for v in args.variants]
    if not args.no_pycma:
        methods.append("pycma CMA_diagonal")
    jobs = [(m, d, s, args.budget, args.function) for m in methods
            for s in range(1, args.seeds + 1)]
    results: dict[str, list[dict]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for (m, _, s, _, _), r in pool.map(_job, jobs):
            results.setdefault(m, []).append(r)
            print(f"# {m:>32s} seed={s} evals={r['evaluations']:>8d} f={r['f']:.2e} "
                  f"{'ok' if r['success'] else 'FAILED'} {r['seconds']:.0f}s {r['stop']}",
                  file=sys.stderr, flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"dim": d, "target": TARGET, "budget": args.budget, "runs": results,
                       "ms_per_generation": timing}, fh, indent=1)

    import cma

    name = {"ellipsoid": "separable ellipsoid (condition 1e6)"}.get(args.function, args.function)
    print(f"\nd = {d} {name}, x0 = {0 if args.function == 'rosenbrock' else 0.5}·1, σ0 = 0.5, target "
          f"{TARGET:g}, budget {args.budget:.0e}; {args.seeds} seeds. numpy {np.__version__}, "
          f"pycma {cma.__version__}, python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
          f"{time.perf_counter() - t0:.0f} s\n")
    ref = None
    if "pycma CMA_diagonal" in results:
        ref = float(np.median([r["evaluations"] if r["success"] else math.inf
                               for r in results["pycma CMA_diagonal"]]))
    print("| method | evaluations to 1e-8, median (min–max) | successes | final f, median | "
          "ratio to pycma CMA_diagonal |")
    print("|---|---|---|---|---|")
    for m in methods:
        runs = results[m]
        ev = [r["evaluations"] if r["success"] else math.inf for r in runs]
        ok = [r["evaluations"] for r in runs if r["success"]]
        span = f"{min(ok)}–{max(ok)}" if ok else "–"
        med = float(np.median(ev))
        if ref is None:
            ratio = "–"
        elif math.isinf(med):
            ratio = "inf"
        elif math.isinf(ref):  # pycma missed the target: its count is > budget
            ratio = f"< {med / args.budget:.2f}×"
        else:
            ratio = f"{med / ref:.2f}×"
        print(f"| {m} | {med:.0f} ({span}) | {len(ok)}/{len(runs)} | "
              f"{np.median([r['f'] for r in runs]):.2e} | {ratio} |")

    if not timing:
        return
    diag, full = timing["pycma CMA_diagonal"][0], timing.get("pycma full", (math.nan,))[0]
    print(f"\nPer-generation time (ask + tell, f excluded), median (mean) of {args.timing_gens} "
          f"generations after {args.warmup}, default population size:\n")
    print("| method | ms per generation | ratio to pycma CMA_diagonal | ratio to pycma full |")
    print("|---|---|---|---|")
    for m, (med, mean) in timing.items():
        print(f"| {m} | {med:.2f} ({mean:.2f}) | {med / diag:.2f}× | {med / full:.2f}× |")


if __name__ == "__main__":
    main()
