"""IPOP: restarts with an increasing population, around any ``NaturalES``.

A strategy that converges to a local optimum stops (tolfun, tolx, stagnation, …); IPOP starts a new
run from x0 with σ0 and a population k times larger (k = 2), until the target is reached, the shared
budget is spent or ``max_restarts`` restarts were made.  Larger populations smooth a multi-modal
landscape (they see its global structure, e.g. the parabola under rastrigin's ripples), which is
what makes an ES competitive on multi-modal functions (algorithms.md §7):

    run r = 0, 1, …:   n_r = n₀ · kʳ,   seed_r (r = 0: the given seed),   maxfevals_r = budget − used
                       run NaturalES(x0, σ0, structure, popsize=n_r) to its own stop
    the restarts end at ftarget, the budget (maxfevals), a callback, or r = max_restarts
    result: the best solution over all runs

Run 0 is the run ``NaturalES`` makes with the same seed and options, so IPOP changes nothing while
the first run succeeds.  ``IPOP`` has the ask / tell / stop / result interface of ``NaturalES``;
``minimize(..., restarts="ipop")`` drives it.

Reference: A. Auger, N. Hansen, "A Restart CMA Evolution Strategy With Increasing Population
Size", CEC 2005.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import termination
from .strategy import NaturalES, Result

__all__ = ["IPOP", "Run", "RESTARTS", "ENDS_RESTARTS", "success"]

#: the values of ``minimize(..., restarts=...)``
RESTARTS = (None, "ipop")

_STATE_VERSION = 1

#: criteria of a run after which no restart is made (the target is reached, the shared budget is
#: spent, the user asked to stop)
ENDS_RESTARTS = ("ftarget", "maxfevals", "callback")


@dataclass(frozen=True)
class Run:
    """One finished (or current) run of a restart strategy.

    Attributes:
        popsize: its population size.
        evaluations: f values it was told.
        iterations: its generations.
        fbest: its best f (inf if none was finite).
        stop: its termination criteria ``{name: threshold}`` (empty for a run still going).
    """

    popsize: int
    evaluations: int
    iterations: int
    fbest: float
    stop: dict


class IPOP:
    """Restarts of a ``NaturalES`` with a population multiplied by ``incpopsize`` each time.

    Args:
        x0, sigma0, structure: as ``NaturalES``; every run starts from them.
        popsize: n₀, the first run's population (default: ``NaturalES``'s).
        seed: the first run uses it as given; run r ≥ 1 uses a ``numpy.random.SeedSequence``
            derived from it, so the whole sequence is reproducible.
        bounds: as ``NaturalES`` (every run).
        max_restarts: the largest number of restarts (runs − 1); default 9.
        incpopsize: the factor k on the population at each restart; default 2.
        **options: ``NaturalES`` options.  ``maxfevals`` is the budget shared by all runs; the
            other termination options (tolfun, tolx, maxiter, …) apply to each run.

    Attributes:
        strategy: the current run's ``NaturalES``.
        runs: a ``Run`` for each run so far (the last one is the current run).
        restarts: the number of restarts made.
    """

    def __init__(self, x0, sigma0, structure="full", *, popsize: int | None = None, seed=None,
                 bounds=None, max_restarts: int = 9, incpopsize: float = 2, **options):
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, (int, np.integer)) \
                or max_restarts < 0:
            raise ValueError(f"max_restarts must be an integer >= 0, got {max_restarts!r}")
        if not (isinstance(incpopsize, (int, float)) and not isinstance(incpopsize, bool)
                and incpopsize >= 1):
            raise ValueError(f"incpopsize must be a number >= 1, got {incpopsize!r}")
        self._x0, self._sigma0, self._structure = x0, sigma0, structure
        self._bounds = bounds
        self._last_f = None
        self._max_restarts = int(max_restarts)
        self._incpopsize = float(incpopsize)
        self._budget = options.pop("maxfevals", None)
        self._options = options
        self._seed = seed
        self._base_seed = (seed if isinstance(seed, np.random.SeedSequence)
                           else np.random.SeedSequence(seed))
        self._used = 0          # evaluations of finished runs
        self._iterations = 0    # generations of finished runs
        self._finished: list[Run] = []
        self._best: tuple[float, Any] = (math.inf, None)
        self._end: dict[str, Any] = {}
        self.strategy = self._start(0, popsize)
        self._popsize0 = self.strategy.popsize

    # -- runs -----------------------------------------------------------------------------------
    def _seed_of(self, r: int):
        if r == 0:
            return self._seed
        b = self._base_seed
        return np.random.SeedSequence(b.entropy, spawn_key=(*b.spawn_key, 0x1F09, r),
                                      pool_size=b.pool_size)

    def _start(self, r: int, popsize: int | None) -> NaturalES:
        options = dict(self._options)
        if self._budget is not None:
            options["maxfevals"] = max(0, self._budget - self._used)
        return NaturalES(self._x0, self._sigma0, self._structure, popsize=popsize,
                         seed=self._seed_of(r), bounds=self._bounds, **options)

    def _record(self) -> Run:
        es = self.strategy
        return Run(es.popsize, es.evaluations, es.iterations, es.result.fbest, es.stop())

    def _restart_if_stopped(self) -> None:
        """Start the next run when the current one stopped and the restarts go on."""
        stop = self.strategy.stop()
        if not stop or self._end:
            return
        if any(k in stop for k in ENDS_RESTARTS):
            self._end = dict(stop)
            return
        if len(self._finished) >= self._max_restarts:
            self._end = {**stop, "maxrestarts": self._max_restarts}
            return
        popsize = int(round(self._popsize0 * self._incpopsize ** (len(self._finished) + 1)))
        used = self._used + self.strategy.evaluations
        if self._budget is not None and self._budget - used < popsize:
            # not even one generation of the next run fits in the budget
            self._end = {**stop, "maxfevals": self._budget}
            return
        self._finished.append(self._record())
        self._used = used
        self._iterations += self.strategy.iterations
        self.strategy = self._start(len(self._finished), popsize)

    # -- ask / tell -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.strategy.dim

    @property
    def popsize(self) -> int:
        """The current run's population size."""
        return self.strategy.popsize

    @property
    def restarts(self) -> int:
        return len(self._finished)

    @property
    def runs(self) -> list[Run]:
        return [*self._finished, self._record()]

    @property
    def evaluations(self) -> int:
        return self._used + self.strategy.evaluations

    @property
    def iterations(self) -> int:
        return self._iterations + self.strategy.iterations

    @property
    def mean(self):
        return self.strategy.mean

    @property
    def sigma(self) -> float:
        return self.strategy.sigma

    @property
    def factor(self):
        """The current run's factor A."""
        return self.strategy.factor

    @property
    def last_fvalues(self):
        """The f values of the last ``tell`` (of whichever run it went to)."""
        return self._last_f

    def ask(self, n: int | None = None):
        """Solutions of the current run (``NaturalES.ask``)."""
        return self.strategy.ask(n)

    def tell(self, X, fvals) -> None:
        """Tell the current run (``NaturalES.tell``); start the next run if it stopped."""
        self.strategy.tell(X, fvals)
        self._last_f = self.strategy.last_fvalues
        r = self.strategy.result
        if r.fbest < self._best[0]:
            self._best = (r.fbest, r.xbest)
        self._restart_if_stopped()

    def stop(self) -> dict:
        """Empty while runs go on; at the end the last run's criteria, plus ``maxrestarts`` when
        the restart limit ended it."""
        self._restart_if_stopped()
        return dict(self._end)

    def _add_stop(self, name: str, value: Any = True) -> None:
        """An external stop (``minimize``'s callback): ends the restarts too."""
        self.strategy._add_stop(name, value)
        self._end = self.strategy.stop()

    @property
    def result(self) -> Result:
        """The best over all runs: xbest, fbest; xmean and σ of the current run; evaluations and
        iterations summed over the runs; ``stop`` as ``stop()``."""
        cur = self.strategy.result
        fbest, xbest = self._best
        if cur.fbest < fbest:
            fbest, xbest = cur.fbest, cur.xbest
        return Result(xbest, fbest, cur.xmean, cur.sigma, self.evaluations, self.iterations,
                      self.stop())

    def disp(self, header: bool | None = None) -> str:
        return self.strategy.disp(header)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the restarts exactly: the settings, the finished runs,
        the best so far, and the current run's ``NaturalES.state_dict`` (arrays copied)."""
        b = self._base_seed
        structure = self._structure
        if not isinstance(structure, str):
            structure = {"factor": structure.state_dict()}
        return {
            "version": _STATE_VERSION, "class": "IPOP",
            "x0": copy.deepcopy(self._x0),
            "sigma0": float(self._sigma0), "structure": structure, "bounds": self._bounds,
            "options": dict(self._options), "budget": self._budget,
            "seed": self._seed if not isinstance(self._seed, np.random.SeedSequence) else None,
            "base_seed": {"entropy": b.entropy, "spawn_key": tuple(b.spawn_key),
                          "pool_size": b.pool_size},
            "max_restarts": self._max_restarts, "incpopsize": self._incpopsize,
            "popsize0": self._popsize0, "used": self._used, "iterations": self._iterations,
            "finished": [dataclasses.asdict(r) for r in self._finished],
            "best": copy.deepcopy(self._best),
            "end": dict(self._end),
            "last_f": None if self._last_f is None else np.array(self._last_f, copy=True),
            "strategy": self.strategy.state_dict(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> IPOP:
        """A new ``IPOP`` continuing the restarts saved by ``state_dict``."""
        if not isinstance(state, dict) or state.get("class") != "IPOP" \
                or state.get("version") != _STATE_VERSION:
            raise ValueError("not an IPOP state_dict (or one of another version)")
        from ..structures import from_state_dict as factor_from_state
        obj = cls.__new__(cls)
        structure = state["structure"]
        if isinstance(structure, dict):
            structure = factor_from_state(structure["factor"])
        obj._x0, obj._sigma0, obj._structure = copy.deepcopy(state["x0"]), state["sigma0"], structure
        obj._bounds = state["bounds"]
        obj._last_f = None if state["last_f"] is None else np.array(state["last_f"], copy=True)
        obj._max_restarts, obj._incpopsize = int(state["max_restarts"]), float(state["incpopsize"])
        obj._budget, obj._options = state["budget"], dict(state["options"])
        b = state["base_seed"]
        obj._base_seed = np.random.SeedSequence(b["entropy"], spawn_key=tuple(b["spawn_key"]),
                                                pool_size=b["pool_size"])
        obj._seed = state["seed"] if state["seed"] is not None else obj._base_seed
        obj._used, obj._iterations = int(state["used"]), int(state["iterations"])
        obj._finished = [Run(**r) for r in state["finished"]]
        obj._best = (float(state["best"][0]), copy.deepcopy(state["best"][1]))
        obj._end = dict(state["end"])
        obj._popsize0 = int(state["popsize0"])
        obj.strategy = NaturalES.from_state_dict(state["strategy"])
        return obj

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the restarts saved by ``state_dict`` in this object."""
        self.__dict__.update(type(self).from_state_dict(state).__dict__)

    def __repr__(self) -> str:
        return (f"IPOP(restarts={self.restarts}, max_restarts={self._max_restarts}, "
                f"strategy={self.strategy!r})")


def success(stop: dict, fbest: float, ftarget: float | None) -> bool:
    """Success of a restart strategy: f ≤ ftarget when a target was given, else the last run
    converged (``termination.success``)."""
    if ftarget is not None:
        return fbest <= ftarget
    return termination.success(stop)
