"""COCO's bbob suite, driven by any ask/tell optimizer, without an observer.

The bbob testbed (Hansen et al. 2009/2021) has 24 noiseless functions f₁…f₂₄, each in instances
(random shifts x*, rotations and f* offsets) and dimensions 2, 3, 5, 10, 20, 40.  A run on one
(function, dimension, instance) records, for each of the 51 targets

    Δf_k = 10^{2 − 0.2 k},  k = 0, …, 50      (10², 10^{1.8}, …, 10⁻⁸, as COCO)

the number of evaluations after which f(x) − f* ≤ Δf_k first held (``inf`` when not within the
budget).  From these, the runtime ECDF — the fraction of (function, instance, target) triples
reached within a budget of B·d evaluations — and its area are computed here directly, with no COCO
observer, post-processing or download.

f* is not part of cocoex's Python interface.  It is recovered from x*, which cocoex writes to a file
(``Problem._best_parameter("print")``, done in a temporary directory), evaluated on a separate copy
of the problem (the run's evaluation counter is untouched) and rounded to 0.01 — bbob's f* values
are multiples of 0.01 (``bbob2009_compute_fopt``); the rounding is checked against f(x*) and the
run's ``final_target_hit`` (f − f* ≤ 1e-8 by cocoex's own book-keeping) is recorded next to ours.

The optimizer protocol is pycma's: an object with ``ask()`` (n points, an (n, d) array or a list
of n arrays), ``tell(X, f)`` and ``stop()`` (truthy when it wants to stop), built by a factory
``factory(x0, sigma0, *, popsize, seed, budget)``.  ``NaturalESFactory`` and ``PycmaFactory``
are provided.  Restarts are done here: with ``restarts="ipop"`` (Auger & Hansen 2005) a stopped
optimizer is restarted from a new uniform x0 ∈ [−4, 4]^d with twice the population while budget
remains and the final target is not reached.

    >>> from problems import bbob                                     # doctest: +SKIP
    >>> runs = bbob.run(bbob.NaturalESFactory(), functions=[1], dimensions=[2], instances=[1],
    ...                 budget_multiplier=100)                        # doctest: +SKIP
    >>> runs[0].hits[-1] <= 200                                       # doctest: +SKIP
    True

References: Hansen, Auger, Ros, Mersmann, Tušar, Brockhoff, "COCO: a platform for comparing
continuous optimizers in a black-box setting", Optim. Methods Softw. 36 (2021); Hansen, Finck,
Ros, Auger, "Real-parameter black-box optimization benchmarking 2009: noiseless functions
definitions", INRIA RR-6829; Auger & Hansen, "A restart CMA evolution strategy with increasing
population size", CEC 2005.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["TARGETS", "FUNCTION_NAMES", "AskTell", "OptimizerFactory", "NaturalESFactory",
           "PycmaFactory", "BbobRun", "run", "run_problem", "optimum", "fraction_reached", "ecdf",
           "ecdf_area", "require_cocoex"]

#: Δf targets 10^{2..−8} in steps of 10^{0.2} (51 values, decreasing), as COCO's bbob runtime ECDFs
TARGETS: np.ndarray = 10.0 ** (2 - 0.2 * np.arange(51))
TARGETS.setflags(write=False)

FUNCTION_NAMES: dict[int, str] = {
    1: "sphere", 2: "ellipsoid (separable)", 3: "Rastrigin (separable)", 4: "Büche-Rastrigin",
    5: "linear slope", 6: "attractive sector", 7: "step ellipsoid", 8: "Rosenbrock",
    9: "Rosenbrock (rotated)", 10: "ellipsoid", 11: "discus", 12: "bent cigar", 13: "sharp ridge",
    14: "different powers", 15: "Rastrigin", 16: "Weierstrass", 17: "Schaffer F7",
    18: "Schaffer F7 (ill-cond.)", 19: "Griewank-Rosenbrock", 20: "Schwefel", 21: "Gallagher 101",
    22: "Gallagher 21", 23: "Katsuura", 24: "Lunacek bi-Rastrigin",
}

DIMENSIONS = (2, 3, 5, 10, 20, 40)


def require_cocoex():
    """Import and return ``cocoex``, or raise an ImportError that says how to install it."""
    try:
        import cocoex
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "problems.bbob needs COCO's Python module `cocoex`: pip install coco-experiment "
            "(it comes with the natgrad-es[bench] extra)") from err
    return cocoex


# -- the optimizer protocol ---------------------------------------------------------------------


class AskTell(Protocol):
    """What the runner needs of an optimizer (pycma's ``CMAEvolutionStrategy`` and ``NaturalES`` fit)."""

    def ask(self) -> Any:
        """n candidate points: an (n, d) array or a list of n arrays of shape (d,)."""

    def tell(self, solutions: Any, values: Any) -> Any:
        """The f values of the points ``ask`` returned (passed back as they came)."""

    def stop(self) -> Any:
        """Truthy when the optimizer has stopped (a dict of fired criteria, or a bool)."""


class OptimizerFactory(Protocol):
    def __call__(self, x0: np.ndarray, sigma0: float, *, popsize: int | None, seed: int,
                 budget: int) -> AskTell:
        """A fresh optimizer at x0 with step size sigma0, ``popsize`` points per ask (None: its
        default), seeded, stopping at the latest after ``budget`` evaluations."""


@dataclass(frozen=True)
class NaturalESFactory:
    """Builds ``natgrad_es.es.NaturalES(x0, sigma0, structure, popsize=…, seed=…, maxfevals=…)``.

    Args:
        structure: the covariance structure (default "full").
        options: further ``NaturalES`` options (``method``, ``rank``, …), as a dict.
    """

    structure: str = "full"
    options: Mapping[str, Any] = field(default_factory=dict)
    name: str = "natgrad-es"

    def __call__(self, x0, sigma0, *, popsize, seed, budget):
        from natgrad_es.es import NaturalES

        return NaturalES(x0, sigma0, self.structure, popsize=popsize, seed=seed, maxfevals=budget,
                         **dict(self.options))


@dataclass(frozen=True)
class PycmaFactory:
    """Builds ``cma.CMAEvolutionStrategy(x0, sigma0, {"popsize", "seed", "maxfevals", …})``.

    pycma's default options otherwise (its seed 0 means "random", so seeds are used as given and
    must be ≥ 1, which ``run`` ensures).

    Args:
        options: further pycma options (e.g. ``{"CMA_diagonal": True}``).
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    name: str = "pycma"

    def __call__(self, x0, sigma0, *, popsize, seed, budget):
        import cma

        opts = {"seed": int(seed), "maxfevals": int(budget), "verbose": -9, **dict(self.options)}
        if popsize is not None:
            opts["popsize"] = int(popsize)
        return cma.CMAEvolutionStrategy(np.asarray(x0, dtype=float), sigma0, opts)


# -- one run ------------------------------------------------------------------------------------


@dataclass
class BbobRun:
    """The record of one (function, dimension, instance) run.

    Attributes:
        method: the optimizer's name.
        function, dimension, instance: the bbob problem (``problem_id`` its COCO id).
        fopt: f* of the instance.
        budget: the evaluation budget (budget_multiplier · d).
        evaluations: evaluations used (≤ budget).
        best_delta: the best f − f* seen.
        hits: shape (51,): the evaluation at which f − f* ≤ ``TARGETS[k]`` first held (inf: not
            within the budget).
        restarts: restarts done (0: the first optimizer ran to the end).
        popsizes: the population size of each start.
        final_target_hit: cocoex's own flag for f − f* ≤ 1e-8 (agrees with ``hits[-1] < inf``).
        seconds: wall time of the run.
    """

    method: str
    function: int
    dimension: int
    instance: int
    problem_id: str
    fopt: float
    budget: int
    evaluations: int
    best_delta: float
    hits: np.ndarray
    restarts: int
    popsizes: list[int]
    final_target_hit: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (unreached targets as None)."""
        out = asdict(self)
        out["hits"] = [None if not math.isfinite(h) else int(h) for h in self.hits]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BbobRun:
        data = dict(data)
        data["hits"] = np.array([math.inf if h is None else float(h) for h in data["hits"]])
        return cls(**data)


_OPTIMUM_LOCK = threading.Lock()


def optimum(problem, suite) -> tuple[np.ndarray, float]:
    """(x*, f*) of a bbob problem, evaluated on a separate copy (``problem``'s counter untouched).

    cocoex writes x* to ``._bbob_problem_best_parameter.txt`` in the current directory; this is
    done in a temporary directory (the process's working directory changes for that moment, under a
    lock).  f* = f(x*) rounded to a multiple of 0.01 when it is one to 1e-9 (bbob's f* are).
    """
    with _OPTIMUM_LOCK, tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            problem._best_parameter("print")
            xopt = np.atleast_1d(np.loadtxt("._bbob_problem_best_parameter.txt", dtype=float))
        finally:
            os.chdir(cwd)
    copy = suite.get_problem_by_function_dimension_instance(
        problem.id_function, problem.dimension, problem.id_instance)
    try:
        fx = float(copy(xopt))
        if not copy.final_target_hit:
            raise RuntimeError(f"{problem.id}: f(x*) does not reach cocoex's final target")
    finally:
        copy.free()
    rounded = round(fx * 100) / 100
    return xopt, rounded if abs(fx - rounded) <= 1e-9 else fx


def _seed(seed: int, function: int, dimension: int, instance: int) -> int:
    """A seed ≥ 1 per (seed, function, dimension, instance), the same for every method."""
    state = np.random.SeedSequence([int(seed), function, dimension, instance]).generate_state(1)
    return int(state[0] % (2**31 - 2)) + 1


def run_problem(problem, factory: OptimizerFactory | Callable[..., AskTell], budget: int, *,
                suite=None, restarts: str | None = "ipop", seed: int = 1, sigma0: float = 2.0,
                method: str | None = None, targets: np.ndarray = TARGETS,
                quiet: bool = True) -> BbobRun:
    """Run ``factory``'s optimizer (with restarts) on one cocoex problem; returns a ``BbobRun``.

    Every start draws x0 uniformly in [−4, 4]^d (seeded by ``seed`` and the problem: the same
    points for every method) with step size ``sigma0`` (2 = a fifth of the [−5, 5] domain, as
    COCO's CMA-ES examples).  Points are evaluated one by one and counted exactly; the run ends at
    the budget (the last population may be cut short — it is then not told) or once f − f* ≤ the
    last target.

    Args:
        problem: a ``cocoex`` problem (from a ``cocoex.Suite``), not observed.
        factory: ``factory(x0, sigma0, popsize=…, seed=…, budget=…)`` → an ask/tell optimizer.
        budget: largest number of evaluations.
        suite: the suite ``problem`` came from (to evaluate x* on a copy); None: a new one.
        restarts: "ipop" (twice the population at each restart), "restart" (same population) or
            None (one start; the run ends when the optimizer stops).
        seed: base seed.
        sigma0: initial step size of every start.
        method: name recorded in the result (default: ``factory.name`` or its type's name).
        targets: the Δf targets, decreasing (default ``TARGETS``).
        quiet: silence the optimizers' warnings.
    """
    if restarts not in (None, "ipop", "restart"):
        raise ValueError(f"restarts must be 'ipop', 'restart' or None, got {restarts!r}")
    budget = int(budget)
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget!r}")
    cocoex = require_cocoex()
    if suite is None:
        suite = cocoex.Suite("bbob", f"instances: {problem.id_instance}",
                             f"function_indices: {problem.id_function} dimensions: {problem.dimension}")
    _, fopt = optimum(problem, suite)
    d = int(problem.dimension)
    targets = np.asarray(targets, dtype=float)
    final = float(targets[-1])
    hits = np.full(len(targets), np.inf)
    n_hit = 0  # targets are decreasing: the first n_hit are reached
    best = math.inf
    evaluations = 0
    run_seed = _seed(seed, problem.id_function, d, problem.id_instance)
    rng = np.random.default_rng(run_seed)
    popsizes: list[int] = []
    popsize = None
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        while evaluations < budget and best > final:
            x0 = rng.uniform(-4, 4, d)
            opt = factory(x0, sigma0, popsize=popsize, seed=run_seed + len(popsizes),
                          budget=budget - evaluations)
            start_evals = evaluations
            first = True
            while evaluations < budget and not opt.stop():
                X = opt.ask()
                points = np.asarray([np.asarray(x, dtype=float) for x in X])
                if first:
                    popsizes.append(len(points))
                    first = False
                take = min(len(points), budget - evaluations)
                f = np.array([float(problem(points[i])) for i in range(take)])
                delta = f - fopt
                if take and delta.min() < best:
                    running = np.minimum.accumulate(np.minimum(delta, best))
                    while n_hit < len(targets) and running[-1] <= targets[n_hit]:
                        hits[n_hit] = evaluations + 1 + int(np.argmax(running <= targets[n_hit]))
                        n_hit += 1
                    best = float(running[-1])
                evaluations += take
                if take < len(points) or best <= final:
                    break
                opt.tell(X, f.tolist())
            if evaluations == start_evals or restarts is None:
                break  # an optimizer that stops before evaluating anything would loop forever
            if popsize is None:
                popsize = popsizes[0]
            if restarts == "ipop":
                popsize *= 2
    if evaluations != problem.evaluations:  # pragma: no cover - a bug in the loop above
        raise RuntimeError(f"counted {evaluations} evaluations, cocoex counted {problem.evaluations}")
    name = method or getattr(factory, "name", None) or type(factory).__name__
    return BbobRun(name, int(problem.id_function), d, int(problem.id_instance), str(problem.id),
                   float(fopt), budget, evaluations, best, hits, max(0, len(popsizes) - 1),
                   popsizes, bool(problem.final_target_hit), time.perf_counter() - t0)


def run(factory: OptimizerFactory | Callable[..., AskTell], functions: Iterable[int] = range(1, 25),
        dimensions: Iterable[int] = (2, 5, 10, 20), instances: Iterable[int] = range(1, 6),
        budget_multiplier: float = 1e4, *, restarts: str | None = "ipop", seed: int = 1,
        sigma0: float = 2.0, method: str | None = None,
        progress: Callable[[BbobRun], Any] | None = None, quiet: bool = True) -> list[BbobRun]:
    """Run an optimizer on bbob functions × dimensions × instances, budget ``budget_multiplier·d``.

    Args:
        factory: see ``run_problem`` (``NaturalESFactory()``, ``PycmaFactory()`` or your own).
        functions: bbob function numbers, 1…24.
        dimensions: from 2, 3, 5, 10, 20, 40.
        instances: instance numbers (1…5 are the classic ones).
        budget_multiplier: the budget per run is ⌊budget_multiplier · d⌋ evaluations.
        restarts, seed, sigma0, method, quiet: see ``run_problem``.
        progress: called with each finished ``BbobRun``.

    Returns:
        one ``BbobRun`` per (function, dimension, instance), in that nested order.
    """
    cocoex = require_cocoex()
    functions, dimensions, instances = list(functions), list(dimensions), list(instances)
    for fn in functions:
        if not (isinstance(fn, (int, np.integer)) and 1 <= fn <= 24):
            raise ValueError(f"bbob functions are numbered 1..24, got {fn!r}")
    for d in dimensions:
        if d not in DIMENSIONS:
            raise ValueError(f"bbob dimensions are {DIMENSIONS}, got {d!r}")
    for i in instances:
        if not (isinstance(i, (int, np.integer)) and i >= 1):
            raise ValueError(f"instances are positive integers, got {i!r}")
    if not budget_multiplier > 0:
        raise ValueError(f"budget_multiplier must be > 0, got {budget_multiplier!r}")
    suite = cocoex.Suite("bbob", "instances: " + ",".join(str(i) for i in instances),
                         "function_indices: " + ",".join(str(f) for f in functions)
                         + " dimensions: " + ",".join(str(d) for d in dimensions))
    out = []
    for fn in functions:
        for d in dimensions:
            for i in instances:
                problem = suite.get_problem_by_function_dimension_instance(fn, d, i)
                try:
                    r = run_problem(problem, factory, int(budget_multiplier * d), suite=suite,
                                    restarts=restarts, seed=seed, sigma0=sigma0, method=method,
                                    quiet=quiet)
                finally:
                    problem.free()
                out.append(r)
                if progress is not None:
                    progress(r)
    return out


# -- runtime ECDFs ------------------------------------------------------------------------------


def _normalised_hits(runs: Sequence[BbobRun]) -> np.ndarray:
    """All hits of all runs divided by the run's dimension: shape (len(runs) · n_targets,)."""
    if not runs:
        return np.zeros(0)
    return np.concatenate([np.asarray(r.hits, dtype=float) / r.dimension for r in runs])


def fraction_reached(runs: Sequence[BbobRun], budget_multiplier: float) -> float:
    """The fraction of (run, target) pairs reached within ``budget_multiplier · d`` evaluations."""
    h = _normalised_hits(runs)
    return float(np.mean(h <= budget_multiplier)) if h.size else math.nan


def ecdf(runs: Sequence[BbobRun], budget_multipliers: np.ndarray) -> np.ndarray:
    """The runtime ECDF: for each x in ``budget_multipliers``, the fraction of (function,
    instance, target) triples of ``runs`` reached within x·d evaluations."""
    h = np.sort(_normalised_hits(runs))
    x = np.asarray(budget_multipliers, dtype=float)
    if not h.size:
        return np.full(x.shape, math.nan)
    return np.searchsorted(h, x, side="right") / h.size


def ecdf_area(runs: Sequence[BbobRun], max_budget_multiplier: float) -> float:
    """The area under the runtime ECDF over log₁₀(evaluations/d) ∈ [0, log₁₀ B], divided by log₁₀ B.

    = mean over (run, target) pairs of (log₁₀ B − log₁₀ max(1, hit/d)) / log₁₀ B, 0 when not reached
    within B·d.  1 would be every target at the first evaluation; larger is better.
    """
    h = _normalised_hits(runs)
    if not h.size:
        return math.nan
    top = math.log10(max_budget_multiplier)
    with np.errstate(divide="ignore"):
        reached = h <= max_budget_multiplier
        logs = np.log10(np.maximum(np.where(reached, h, 1.0), 1.0))
    return float(np.mean(np.where(reached, (top - logs) / top, 0.0)))
