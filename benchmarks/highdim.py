"""High dimension, low rank: natgrad-es structures against pycma and pypop7 in the same run (issue 12).

Problems (``problems.functions``, problem seed = run seed, x0 = 0.5·1, σ0 = 0.5 for every method):
``ellipsoid`` Σ 1e6^{(i−1)/(d−1)} xᵢ² (separable); ``stiff_subspace`` xᵀ(I + (c − 1)PPᵀ)x and
``valley`` xᵀ(cI − (c − 1)PPᵀ)x, P a random d×r orthonormal basis, r = 10 (from d = 100), c = 1e6;
``rotated_cigar`` (the valley with r = 1); ``rosenbrock`` (x* = 1).  Target f − f* ≤ 1e-8 within
a budget of 1e6·d/1000 evaluations (× ``--budget-scale``), each run optionally stopped by a time
cap (``--time-cap``, recorded as "capped").  Every time, the cap's included, is the process's CPU
time (``CLOCK``): the machine is shared, and other jobs would inflate wall times (recorded too).

Methods (``--methods``, keys of ``METHODS``):

* ours — ``NaturalES`` with the default (path) rule on ``diagonal``, ``lowrank`` (block-triangular,
  anchor block k = ``--rank``), ``lowrank-cov`` and ``lowrank-precision`` (rank k), each by ranks and,
  once ``NaturalES`` has the ``curvature=`` option, by the value-based pairs route
  (``curvature="pairs"``; "not available" is printed until then, or where the structure refuses it);
* pycma 4.x — ``CMA_diagonal`` (sep-CMA) and full CMA-ES (skipped from d = 3000: a d×d covariance
  and its O(d³) eigendecompositions);
* pypop7 — VkD-CMA (``VKDCMA``, Akimoto & Hansen 2016), LM-MA-ES (``LMMAES``), SNES, R1NES, with
  ``is_restart=False``, ``mean = x0``, ``sigma = σ0`` (R1NES ignores σ0: it starts from σ = 1).

Objectives.  pypop7 calls f once per point (its optimizers loop over the population in Python, no
batch interface), so it always gets the per-point objective ``f(x)``, x of shape (d,).  Ours and
pycma get the vectorized objective over the (n, d) batch (``--objective vectorized``, default) or the
same per-point loop (``--objective per-point``): per-call Python overhead counts against whoever
pays it, so both are reported.  Every run also times f separately, so "evaluations/s without f"
(the optimizer's own overhead) compares the algorithms whatever the objective.

Recorded per run: evaluations to the target (at the end of the generation that reached it; pypop7
stops mid-generation, at the evaluation itself) or f − f* reached, generations, CPU time, time per
generation, evaluations/s with and without the time spent in f, whether the cap stopped it, and a
trace of the best f − f* against evaluations (log-spaced).  Printed last: one markdown table per d
(median over seeds, successes k/n; a run that misses counts as infinitely slow); plotted:
``benchmarks/results/highdim_<d>.png`` (f − f* against evaluations, one panel per problem, one line
per method: median over seeds and min–max band).

    python benchmarks/highdim.py --quick                               # smoke run, d = 100, 1 seed
    python benchmarks/highdim.py --dims 300 --seeds 3 --time-cap 60 --jobs 2 \
        --out benchmarks/results/highdim_300.json                      # d = 300, everything
    python benchmarks/highdim.py --dims 1000 --problems stiff_subspace valley --seeds 3 \
        --methods diagonal lowrank-cov lowrank-cov-pairs lowrank-precision lowrank-precision-pairs \
                  pycma-diag vkdcma lmmaes --time-cap 300 --jobs 2 --out benchmarks/results/highdim_1000.json
    python benchmarks/highdim.py --dims 1000 3000 10000 --throughput 300 \
        --methods diagonal lowrank lowrank-cov lowrank-precision snes vkdcma   # evaluations/s only
    python benchmarks/highdim.py --report benchmarks/results/highdim_300.json   # table + plot again

The full grid of the issue (d ∈ {300, 1000, 3000, 10000}, all problems and methods, 3 seeds, no cap)
is ``python benchmarks/highdim.py --dims 300 1000 3000 10000 --seeds 3 --jobs 2`` — days on two
cores (pycma full alone is ~30 ms a generation at d = 1000); run it per d, with ``--time-cap``.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import harness  # noqa: E402

import problems  # noqa: E402
from natgrad_es.es import NaturalES  # noqa: E402
from natgrad_es.es.options import Options  # noqa: E402

TARGET = 1e-8
X0, SIGMA0 = 0.5, 0.5
PROBLEMS = ("ellipsoid", "stiff_subspace", "valley", "rotated_cigar", "rosenbrock")
OBJECTIVES = ("vectorized", "per-point")
#: the clock of the time cap and of every time recorded: this process's CPU time, which the other
#: jobs of a shared machine do not inflate (BLAS threads are 1, so CPU time ≈ compute time)
CLOCK = time.process_time
#: pycma full is skipped from this dimension on
PYCMA_FULL_MAX_DIM = 3000


@dataclass(frozen=True)
class Method:
    """One competitor: its label, library and how to build it."""

    label: str
    library: str  # "natgrad-es", "pycma" or "pypop7"
    structure: str | None = None  # ours
    curvature: str | None = None  # ours: None (the default route), "ranks" or "pairs"
    diagonal: bool = False  # pycma
    pypop7_class: str | None = None  # "module:Class" under pypop7.optimizers
    sampling_threads: int = 1  # ours: NaturalES(sampling_threads=)
    draw_ahead: bool = False  # ours: NaturalES(draw_ahead=)
    dtype: str | None = None  # ours: NaturalES(dtype=) (None: float64, x0's)


METHODS: dict[str, Method] = {
    "diagonal": Method("ours diagonal", "natgrad-es", "diagonal"),
    "lowrank": Method("ours lowrank (block-triangular)", "natgrad-es", "lowrank"),
    "lowrank-cov": Method("ours lowrank-cov (ranks)", "natgrad-es", "lowrank-cov", "ranks"),
    "lowrank-cov-pairs": Method("ours lowrank-cov (pairs)", "natgrad-es", "lowrank-cov", "pairs"),
    "lowrank-precision": Method("ours lowrank-precision (ranks)", "natgrad-es", "lowrank-precision",
                                "ranks"),
    "lowrank-precision-pairs": Method("ours lowrank-precision (pairs)", "natgrad-es",
                                      "lowrank-precision", "pairs"),
    "diagonal-t2": Method("ours diagonal, 2 sampling threads", "natgrad-es", "diagonal",
                          sampling_threads=2),
    "lowrank-t2": Method("ours lowrank (block-triangular), 2 sampling threads", "natgrad-es", "lowrank",
                         sampling_threads=2),
    "lowrank-precision-t2": Method("ours lowrank-precision (ranks), 2 sampling threads", "natgrad-es",
                                   "lowrank-precision", "ranks", sampling_threads=2),
    "diagonal-ahead": Method("ours diagonal, draw ahead", "natgrad-es", "diagonal", draw_ahead=True),
    "lowrank-ahead": Method("ours lowrank (block-triangular), draw ahead", "natgrad-es", "lowrank",
                            draw_ahead=True),
    "lowrank-precision-ahead": Method("ours lowrank-precision (ranks), draw ahead", "natgrad-es",
                                      "lowrank-precision", "ranks", draw_ahead=True),
    "diagonal-ahead-f32": Method("ours diagonal, draw ahead, float32", "natgrad-es", "diagonal",
                                 draw_ahead=True, dtype="float32"),
    "lowrank-precision-ahead-f32": Method("ours lowrank-precision (ranks), draw ahead, float32",
                                          "natgrad-es", "lowrank-precision", "ranks", draw_ahead=True,
                                          dtype="float32"),
    "pycma-diag": Method("pycma CMA_diagonal", "pycma", diagonal=True),
    "pycma-full": Method("pycma full", "pycma"),
    "vkdcma": Method("pypop7 VkD-CMA", "pypop7", pypop7_class="nes.vkdcma:VKDCMA"),
    "lmmaes": Method("pypop7 LM-MA-ES", "pypop7", pypop7_class="es.lmmaes:LMMAES"),
    "snes": Method("pypop7 SNES", "pypop7", pypop7_class="nes.snes:SNES"),
    "r1nes": Method("pypop7 R1NES", "pypop7", pypop7_class="nes.r1nes:R1NES"),
}


# -- availability -------------------------------------------------------------------------------


def _has_curvature_option() -> bool:
    return "curvature" in {f.name for f in dataclasses.fields(Options)}


def _natgrad_options(method: Method, rank: int, pairs_capacity: int | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if pairs_capacity is not None and method.curvature == "pairs":
        opts["pairs_capacity"] = pairs_capacity
    if method.structure != "diagonal":
        opts["rank"] = rank
    # "ranks" is named only where the option exists (before it, ranks are the only route)
    if method.curvature is not None and (method.curvature == "pairs" or _has_curvature_option()):
        opts["curvature"] = method.curvature
    if method.sampling_threads > 1:
        opts["sampling_threads"] = method.sampling_threads
    if method.draw_ahead:
        opts["draw_ahead"] = True
    if method.dtype is not None:
        opts["dtype"] = method.dtype
    return opts


def unavailable(key: str, dim: int, rank: int = 10) -> str | None:
    """Why method ``key`` cannot run at dimension ``dim`` (None: it can)."""
    if key not in METHODS:
        raise ValueError(f"unknown method {key!r}; valid: {', '.join(METHODS)}")
    m = METHODS[key]
    if m.library == "natgrad-es":
        if m.curvature == "pairs" and not _has_curvature_option():
            return "not available: NaturalES has no curvature= option yet"
        if m.structure != "diagonal" and not 1 <= rank < dim:
            return f"rank {rank} must be in [1, d)"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                NaturalES(np.full(dim, X0), SIGMA0, m.structure, seed=1, **_natgrad_options(m, rank))
        except (TypeError, ValueError, NotImplementedError) as e:
            return f"not available: {e}"
        return None
    if m.library == "pycma":
        try:
            import cma  # noqa: F401
        except ImportError:
            return "pycma is not installed"
        if not m.diagonal and dim >= PYCMA_FULL_MAX_DIM:
            return (f"skipped at d ≥ {PYCMA_FULL_MAX_DIM}: a d×d covariance with O(d³) "
                    "eigendecompositions")
        return None
    try:
        _pypop7_class(m)
    except ImportError:
        return "pypop7 is not installed (pip install pypop7, in the bench extra)"
    return None


def _pypop7_class(m: Method):
    import importlib

    module, cls = m.pypop7_class.split(":")
    return getattr(importlib.import_module(f"pypop7.optimizers.{module}"), cls)


# -- one run ------------------------------------------------------------------------------------


class Trace:
    """Counts evaluations and keeps the best f − f* at log-spaced evaluation counts (ratio 1.02)."""

    def __init__(self, fopt: float, target: float):
        self.fopt, self.target = fopt, target
        self.evaluations = 0
        self.best = math.inf
        self.hit: int | None = None  # evaluations when f − f* ≤ target was first seen
        self.curve: list[tuple[int, float]] = []
        self._next = 1

    def add_one(self, y: float) -> None:
        """Record one evaluation (the per-point path of pypop7: kept cheap)."""
        self.evaluations += 1
        if y - self.fopt < self.best:
            self.best = y - self.fopt
            if self.hit is None and self.best <= self.target:
                self.hit = self.evaluations
        if self.evaluations >= self._next:
            self.curve.append((self.evaluations, self.best))
            self._next = max(self.evaluations + 1, math.ceil(1.02 * self.evaluations))

    def add(self, values) -> None:
        """Record the f values of the next evaluations (a batch, in evaluation order)."""
        v = np.asarray(values, dtype=float).ravel()
        self.evaluations += v.size
        finite = v[np.isfinite(v)]
        if finite.size:
            self.best = min(self.best, float(finite.min()) - self.fopt)
        if self.hit is None and self.best <= self.target:
            self.hit = self.evaluations
        if self.evaluations >= self._next:
            self.curve.append((self.evaluations, self.best))
            self._next = max(self.evaluations + 1, math.ceil(1.02 * self.evaluations))

    def close(self) -> None:
        if not self.curve or self.curve[-1][0] != self.evaluations:
            self.curve.append((self.evaluations, self.best))


def _per_point(f: Callable) -> Callable:
    return lambda X: np.array([float(f(x)) for x in X])


def _run_natgrad(m: Method, f, fopt: float, dim: int, seed: int, budget: int, cap: float, rank: int,
                 objective: str, trace: Trace, popsize: int | None = None,
                 pairs_capacity: int | None = None) -> dict:
    fb = f if objective == "vectorized" else _per_point(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        es = NaturalES(np.full(dim, X0), SIGMA0, m.structure, seed=seed, ftarget=fopt + trace.target,
                       maxfevals=budget, popsize=popsize, **_natgrad_options(m, rank, pairs_capacity))
        out = _ask_tell(es, fb, cap, trace, lambda X: X, lambda y: y)
    return {"generations": es.iterations, **out, "popsize": es.popsize,
            "curvature_fits": es.curvature_fits}  # the pairs route's fits: pairs, residuals, CPU s


def _ask_tell(es, fb, cap: float, trace: Trace, points, values) -> dict:
    """Drive an ask/tell strategy until it stops or ``cap`` CPU seconds pass; ``points`` and
    ``values`` adapt what ``ask`` returns and what ``tell`` takes.  Times: CPU, wall, inside f."""
    w0, t0 = time.perf_counter(), CLOCK()
    tf, capped = 0.0, False
    while not es.stop():
        if CLOCK() - t0 > cap:
            capped = True
            break
        X = es.ask()
        t = CLOCK()
        y = fb(points(X))
        tf += CLOCK() - t
        trace.add(y)
        es.tell(X, values(y))
    seconds, wall = CLOCK() - t0, time.perf_counter() - w0
    return {"seconds": seconds, "wall_seconds": wall, "seconds_f": tf, "capped": capped,
            "stop": sorted(es.stop()) or (["cap"] if capped else [])}


def _run_pycma(m: Method, f, fopt: float, dim: int, seed: int, budget: int, cap: float,
               objective: str, trace: Trace, popsize: int | None = None) -> dict:
    import cma

    fb = f if objective == "vectorized" else _per_point(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        es = cma.CMAEvolutionStrategy(np.full(dim, X0), SIGMA0, {
            "seed": seed, "verbose": -9, "ftarget": fopt + trace.target, "maxfevals": budget,
            "CMA_diagonal": m.diagonal, "tolconditioncov": 1e14,
            **({"popsize": popsize} if popsize else {})})
        out = _ask_tell(es, fb, cap, trace, np.asarray, lambda y: np.asarray(y).tolist())
    return {"generations": es.countiter, **out, "popsize": es.popsize}


def _run_pypop7(m: Method, f, fopt: float, dim: int, seed: int, budget: int, cap: float,
                trace: Trace, popsize: int | None = None) -> dict:
    cls = _pypop7_class(m)
    clock = {"t0": 0.0, "f": 0.0}

    def fitness(x):  # pypop7 calls it once per point; the cap is checked here, on CPU time
        t = CLOCK()
        y = float(f(x))
        t2 = CLOCK()
        clock["f"] += t2 - t
        if t2 - clock["t0"] > cap:
            raise _Capped
        trace.add_one(y)
        return y

    problem = {"fitness_function": fitness, "ndim_problem": dim,
               "lower_boundary": np.full(dim, -10.0), "upper_boundary": np.full(dim, 10.0)}
    options = {"max_function_evaluations": budget, "fitness_threshold": fopt + trace.target,
               "seed_rng": seed, "mean": np.full(dim, X0), "sigma": SIGMA0, "is_restart": False,
               "verbose": 0, "saving_fitness": 0}
    if popsize:
        options["n_individuals"] = popsize
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = cls(problem, options)
        w0 = time.perf_counter()
        clock["t0"] = CLOCK()
        try:
            opt.optimize()
            capped, stop = False, opt.Terminations(opt.termination_signal).name.lower()
        except _Capped:
            capped, stop = True, "cap"
        seconds, wall = CLOCK() - clock["t0"], time.perf_counter() - w0
    return {"generations": int(opt._n_generations), "seconds": seconds, "wall_seconds": wall,
            "seconds_f": clock["f"], "capped": capped, "stop": [stop], "popsize": opt.n_individuals}


class _Capped(Exception):
    """Raised from the objective to stop a pypop7 run at the time cap."""


def run_one(key: str, problem: str, dim: int, seed: int, budget: int, time_cap: float | None = None, *,
            rank: int = 10, objective: str = "vectorized", target: float = TARGET,
            popsize: int | None = None, pairs_capacity: int | None = None) -> dict:
    """One run of method ``key`` on ``problem`` in dimension ``dim``: the record of the run.

    ``budget`` evaluations at most, ``time_cap`` seconds (None: none); ``target`` on f − f*
    (−inf: run the whole budget, for throughput).  pypop7 methods always get the per-point objective.
    ``popsize``: every method's population size (None: each method's default).
    ``pairs_capacity``: the pair buffer of our pairs routes (None: the default 8·k·d pairs).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget!r}")
    m = METHODS[key]
    p = problems.get(problem, dim, seed=seed)
    cap = math.inf if time_cap is None else float(time_cap)
    trace = Trace(p.fopt, target)
    if m.library == "pypop7":
        objective = "per-point"
    record = {"method": key, "label": m.label, "library": m.library, "problem": problem, "dim": dim,
              "seed": seed, "budget": budget, "time_cap": time_cap, "objective": objective,
              "rank": rank if m.structure not in (None, "diagonal") else None}
    try:
        if m.library == "natgrad-es":
            out = _run_natgrad(m, p.f, p.fopt, dim, seed, budget, cap, rank, objective, trace, popsize,
                               pairs_capacity)
        elif m.library == "pycma":
            out = _run_pycma(m, p.f, p.fopt, dim, seed, budget, cap, objective, trace, popsize)
        else:
            out = _run_pypop7(m, p.f, p.fopt, dim, seed, budget, cap, trace, popsize)
    except Exception as e:  # a crash is a result too: recorded, not fatal to the sweep
        trace.close()
        return {**record, "error": f"{type(e).__name__}: {e}", "success": False,
                "evaluations": trace.evaluations, "evaluations_to_target": None, "f_reached": trace.best,
                "generations": 0, "seconds": math.nan, "wall_seconds": math.nan, "seconds_f": math.nan,
                "capped": False,
                "ms_per_generation": math.nan, "ms_per_generation_without_f": math.nan,
                "evaluations_per_s": math.nan, "evaluations_per_s_wall": math.nan,
                "evaluations_per_s_without_f": math.nan,
                "curve": trace.curve, "stop": ["error"], "popsize": None}
    trace.close()
    gens, secs, secs_f = max(out["generations"], 1), out["seconds"], out["seconds_f"]
    return {**record, **out, "error": None, "success": trace.hit is not None,
            "evaluations": trace.evaluations, "evaluations_to_target": trace.hit, "f_reached": trace.best,
            "ms_per_generation": 1e3 * secs / gens,
            "ms_per_generation_without_f": 1e3 * (secs - secs_f) / gens,
            "evaluations_per_s": trace.evaluations / secs if secs > 0 else math.nan,
            "evaluations_per_s_wall": (trace.evaluations / out["wall_seconds"]
                                       if out["wall_seconds"] > 0 else math.nan),
            "evaluations_per_s_without_f": (trace.evaluations / (secs - secs_f)
                                            if secs > secs_f else math.nan),
            "curve": trace.curve}


def _job(args: tuple) -> dict:
    key, problem, dim, seed, budget, cap, rank, objective, target, popsize, capacity = args
    return run_one(key, problem, dim, seed, budget, cap, rank=rank, objective=objective, target=target,
                   popsize=popsize, pairs_capacity=capacity)


# -- tables and plots ---------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def _median(values) -> float:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.median(v)) if v else math.nan


def _order(names) -> Callable[[str], tuple]:
    """A sort key: the order of ``names`` first, anything else after, alphabetically."""
    index = {n: i for i, n in enumerate(names)}
    return lambda name: (index.get(name, len(index)), name)


def _label(run: dict) -> str:
    return METHODS[run["method"]].label if run["method"] in METHODS else run["label"]


def table(runs: list[dict], dim: int, skipped: dict[str, str]) -> str:
    """The markdown table of dimension ``dim``: one row per (problem, method)."""
    headers = ["problem", "method", "successes", "evaluations to 1e-8, median (min–max)",
               "f − f* reached, median (min–max)", "generations", "ms / generation",
               "evaluations/s", "evaluations/s without f", "capped"]
    rows = []
    runs = [r for r in runs if r["dim"] == dim]
    for problem in sorted({r["problem"] for r in runs}, key=_order(PROBLEMS)):
        for key in sorted({r["method"] for r in runs if r["problem"] == problem}, key=_order(METHODS)):
            rs = [r for r in runs if r["problem"] == problem and r["method"] == key]
            ok = [r for r in rs if r["success"]]
            evals = harness.summary(r["evaluations_to_target"] if r["success"] else math.inf for r in rs)
            errors = sum(r["error"] is not None for r in rs)
            rows.append([
                problem, _label(rs[0]), f"{len(ok)}/{len(rs)}" + (f" ({errors} errors)" if errors else ""),
                evals.format(".3g") if ok else "–",
                harness.summary(max(r["f_reached"], 0.0) for r in rs).format(".2g"),
                _fmt(_median(r["generations"] for r in rs)),
                _fmt(_median(r["ms_per_generation"] for r in rs)),
                _fmt(_median(r["evaluations_per_s"] for r in rs)),
                _fmt(_median(r["evaluations_per_s_without_f"] for r in rs)),
                f"{sum(r['capped'] for r in rs)}/{len(rs)}"])
    out = harness.markdown_table(headers, rows)
    if skipped:
        out += "\n\n" + "\n".join(f"* {METHODS[k].label}: {why}" for k, why in skipped.items())
    return out


def throughput_table(runs: list[dict]) -> str:
    """evaluations/s of each method (wall clock: a method may use a second core), as a ratio to
    pypop7 SNES and VkD-CMA at the same d; the CPU-time figures beside them."""
    headers = ["d", "method", "objective", "popsize", "ms / generation (CPU)", "ms / generation without f",
               "evaluations/s (wall)", "evaluations/s (CPU)", "÷ pypop7 SNES", "÷ pypop7 VkD-CMA"]

    def wall(r):  # records written before the wall-clock rate was kept
        return r.get("evaluations_per_s_wall", r["evaluations_per_s"])

    rows = []
    for dim in sorted({r["dim"] for r in runs}):
        rd = [r for r in runs if r["dim"] == dim and r["error"] is None]
        ref = {k: _median(wall(r) for r in rd if r["method"] == k) for k in ("snes", "vkdcma")}
        pairs = sorted({(r["method"], r["objective"]) for r in rd},
                       key=lambda mo: (_order(METHODS)(mo[0]), mo[1] != "vectorized"))
        for key, objective in pairs:
            rs = [r for r in rd if r["method"] == key and r["objective"] == objective]
            eps = _median(wall(r) for r in rs)
            rows.append([dim, _label(rs[0]), objective, rs[0]["popsize"],
                         _fmt(_median(r["ms_per_generation"] for r in rs)),
                         _fmt(_median(r["ms_per_generation_without_f"] for r in rs)), _fmt(eps),
                         _fmt(_median(r["evaluations_per_s"] for r in rs)),
                         *(f"{eps / ref[k]:.2f}×" if ref[k] > 0 else "–" for k in ("snes", "vkdcma"))])
    return harness.markdown_table(headers, rows)


def plot(runs: list[dict], dim: int, path: str | os.PathLike) -> Path:
    """f − f* against evaluations, one panel per problem, one line per method (median, min–max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r["dim"] == dim and r["curve"]]
    probs = sorted({r["problem"] for r in runs}, key=_order(PROBLEMS))
    runs = sorted(runs, key=lambda r: _order(METHODS)(r["method"]))
    cols = min(3, max(1, len(probs)))
    nrows = math.ceil(len(probs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.0 * nrows), squeeze=False)
    budget = max(r["budget"] for r in runs)
    labels = list(dict.fromkeys(_label(r) for r in runs))  # every method, in METHODS order
    palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20").colors  # distinct when it can
    colors = {lab: palette[k % len(palette)] for k, lab in enumerate(labels)}
    for ax, problem in zip(axes.flat, probs):
        curves: dict[str, list] = {}
        for r in runs:
            if r["problem"] == problem:
                e, v = zip(*r["curve"])
                curves.setdefault(_label(r), []).append((list(e), list(v)))
        harness.plot_convergence(curves, None, ax=ax, title=f"{problem}, d = {dim}", xlim=(1, budget),
                                 colors=colors)
    for ax in list(axes.flat)[len(probs):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[lab]) for lab in labels]
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(labels) / 4), 1, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# -- main ---------------------------------------------------------------------------------------


def _header(data: dict) -> str:
    env, a = data["environment"], data["args"]
    libs = ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("date", "cpu", "cores", "python") and v)
    caps = sorted({r["time_cap"] for r in data["runs"] if r["time_cap"]})
    cap = " / ".join(f"{c:g}" for c in caps) + " CPU s per run" if caps else "none"
    machine = f"{env['date']}, {env['cpu']}, {env['cores']} cores (shared), python {env['python']}, {libs}. "
    if a.get("throughput"):
        return machine + (f"{a['throughput']} generations of each method on the stiff subspace (no target), "
                          f"x0 = {X0}·1, σ0 = {SIGMA0}, rank k = {a['rank']}; times are CPU times.")
    return machine + (f"x0 = {X0}·1, σ0 = {SIGMA0}, target f − f* ≤ {a['target']:g}, budget "
                      f"{a['budget_scale']:g}·1e6·d/1000, {a['seeds']} seeds, time cap {cap}, rank k = "
                      f"{a['rank']}, objective {a['objective']} (pypop7: per point); times are CPU times.")


def report(data: dict, out: str | None, make_plots: bool = True) -> None:
    runs, skipped = data["runs"], data.get("skipped", {})
    if data["environment"].get("pypop7") == "?":  # files written before _environment's fix
        data["environment"]["pypop7"] = _environment()["pypop7"]
    print("\n" + _header(data) + "\n")
    if data["args"].get("throughput"):
        print(throughput_table(runs))
        return
    for dim in sorted({r["dim"] for r in runs}):
        if make_plots:
            base = Path(out).parent if out else harness.RESULTS
            p = plot(runs, dim, base / f"highdim_{dim}.png")
            print(f"plot: {p}")
        print(f"\n### d = {dim}\n")
        print(table(runs, dim, {k: v for k, v in skipped.get(str(dim), {}).items()}))


def _environment() -> dict:
    env = harness.environment(("numpy", "scipy", "cma", "pypop7"))
    if env.get("pypop7") == "?":  # pypop7 has no __version__
        from importlib.metadata import version

        env["pypop7"] = version("pypop7")
    return env


def _load(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        return json.load(fh)


def merge(datasets: list[dict]) -> dict:
    """One dataset from several saved ones: their runs, skips and the last one's environment and
    arguments (the seeds argument becomes the largest; the report prints k/n per row anyway)."""
    out = {**datasets[-1], "runs": [], "skipped": {}}
    out["args"] = {**datasets[-1]["args"], "seeds": max(d["args"]["seeds"] for d in datasets)}
    for d in datasets:
        out["runs"] += d["runs"]
        for dim, why in d.get("skipped", {}).items():
            out["skipped"].setdefault(dim, {}).update(why)
    ran = {(str(r["dim"]), r["method"]) for r in out["runs"]}
    out["skipped"] = {dim: {k: v for k, v in why.items() if (dim, k) not in ran}
                      for dim, why in out["skipped"].items()}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="budget = scale · 1e6 · d / 1000 evaluations")
    parser.add_argument("--time-cap", type=float, default=None, help="CPU seconds per run (default: none)")
    parser.add_argument("--rank", type=int, default=10, help="k of our low-rank structures (default 10 = r)")
    parser.add_argument("--popsize", type=int, default=None,
                        help="every method's population size (default: each method's own)")
    parser.add_argument("--pairs-capacity", type=float, default=None, metavar="C",
                        help="our pairs routes keep C·rank·d pairs (default 8; memory 4·C·rank·d² bytes)")
    parser.add_argument("--objective", default="vectorized", choices=OBJECTIVES,
                        help="for ours and pycma (pypop7 is always per point)")
    parser.add_argument("--throughput", type=int, default=0, metavar="GENS",
                        help="instead: run about GENS generations on the stiff subspace with no target "
                             "and report evaluations/s, ours with both objectives")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: d = 100, 1 seed, budget scale 0.05, time cap 20 s")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=1, help="seeds first-seed, first-seed + 1, …")
    parser.add_argument("--out", default=str(harness.RESULTS / "highdim.json"))
    parser.add_argument("--append", action="store_true", help="add the runs to those already in --out")
    parser.add_argument("--report", metavar="JSON", nargs="+",
                        help="print the tables and plots of saved runs (several files are merged)")
    args = parser.parse_args(argv)

    if args.report:
        report(merge([_load(p) for p in args.report]), args.report[0])
        return
    if args.quick:
        args.dims, args.seeds, args.budget_scale = [100], 1, 0.05
        args.time_cap = args.time_cap or 20.0
    if args.seeds < 1 or args.budget_scale <= 0 or args.jobs < 1:
        parser.error("--seeds and --jobs must be >= 1, --budget-scale > 0")

    target = -math.inf if args.throughput else TARGET
    jobs, skipped, runnable = [], {}, {}
    for dim in args.dims:
        runnable[dim] = []
        for key in args.methods:
            why = unavailable(key, dim, args.rank)
            if why:
                skipped.setdefault(str(dim), {})[key] = why
                print(f"# d = {dim}: {METHODS[key].label} skipped: {why}", file=sys.stderr)
            else:
                runnable[dim].append(key)
    for dim in args.dims:
        if args.throughput:
            for key in runnable[dim]:
                n = args.popsize or _popsize(key, dim, args.rank)
                pypop = METHODS[key].library == "pypop7"
                for obj in ["per-point"] if pypop else ["vectorized", "per-point"]:
                    jobs.append((key, "stiff_subspace", dim, 1, args.throughput * n, args.time_cap, args.rank,
                                 obj, target, args.popsize, None))
            continue
        budget = max(1, round(args.budget_scale * 1e6 * dim / 1000))
        # seeds outermost: a sweep stopped early still compares every method on the first seeds
        for seed in harness.seeds(args.seeds, args.first_seed):
            for problem in args.problems:
                for key in runnable[dim]:
                    capacity = (None if args.pairs_capacity is None
                                else round(args.pairs_capacity * args.rank * dim))
                    jobs.append((key, problem, dim, seed, budget, args.time_cap, args.rank, args.objective,
                                 target, args.popsize, capacity))

    data = {"environment": _environment(),
            "args": {**vars(args), "target": target}, "skipped": skipped, "runs": []}
    if args.append and Path(args.out).exists():
        data = merge([_load(args.out), data])
    t0 = time.perf_counter()
    for _, r in harness.run_parallel(_job, jobs, args.jobs, desc="highdim"):
        data["runs"].append(r)
        status = (f"evals={r['evaluations_to_target']}" if r["success"]
                  else f"f-f*={r['f_reached']:.2e} after {r['evaluations']}")
        print(f"# d={r['dim']} {r['problem']:>14s} {r['label']:>30s} seed={r['seed']} {status} "
              f"{r['seconds']:.0f}s {r['ms_per_generation']:.2f} ms/gen {r['stop']}"
              + (f" ERROR {r['error']}" if r["error"] else ""), file=sys.stderr, flush=True)
        harness.write_json(args.out, data)
    data["wall_seconds"] = time.perf_counter() - t0
    harness.write_json(args.out, data)
    report(data, args.out)


def _popsize(key: str, dim: int, rank: int) -> int:
    """The default population size of method ``key`` at ``dim`` (to size a throughput run)."""
    m = METHODS[key]
    if m.library == "pypop7" and m.pypop7_class.endswith("R1NES"):
        return int(max(5, max(4 * np.log2(dim), 0.2 * dim)))
    if m.library == "natgrad-es":
        return NaturalES(np.full(dim, X0), SIGMA0, m.structure, **_natgrad_options(m, rank)).popsize
    return 4 + int(3 * np.log(dim))


if __name__ == "__main__":
    main()
