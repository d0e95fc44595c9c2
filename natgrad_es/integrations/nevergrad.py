"""nevergrad optimizers backed by ``NaturalES``; importing this module registers them.

    >>> import nevergrad as ng
    >>> import natgrad_es.integrations.nevergrad  # registers the NatGrad* optimizers
    >>> opt = ng.optimizers.registry["NatGradXNES"](parametrization=3, budget=600)
    >>> rec = opt.minimize(lambda x: float((x ** 2).sum()))
    >>> bool((rec.value ** 2).sum() < 1e-6)
    True

Registered names (``ng.optimizers.registry[name]``), each a configured ``NatGradES``:

=================  ===========================================================================
name               configuration
=================  ===========================================================================
``NatGradXNES``    ``NatGradES()``: full covariance, the default (path) rule
``NatGradSNES``    ``NatGradES(structure="diagonal")``
``NatGradLowRank`` ``NatGradES(structure="lowrank")``: rank ``round(√d)`` by default
``NatGradIPOP``    ``NatGradES(restarts="ipop")``: full covariance, restarts with a doubled
                   population each time the strategy's termination criteria fire
=================  ===========================================================================

``NatGradES(structure=..., rank=..., restarts=..., scale=..., **options)`` is the family (a nevergrad
``ConfiguredOptimizer``, like ``ParametrizedCMA``): register your own settings with
``NatGradES(structure="diagonal", popsize=32).set_name("MySNES", register=True)``.

How nevergrad drives the strategy
---------------------------------
nevergrad calls ``ask`` and ``tell`` one candidate at a time, possibly several asks (``num_workers``)
before any tell and tells in any order.  The optimizer works, as nevergrad's own CMA does, in the
*standardized* space of the parametrization (the data of ``get_standardized_data``; 0 is the
parametrization's initial value):

* ``ask`` hands out the rows of ``NaturalES.ask()`` one by one, asking a new generation from the same
  distribution when the rows run out before the generation is complete.
* ``tell`` collects (data, loss) pairs; once ``popsize`` of them are in, they go to
  ``NaturalES.tell`` sorted by the order they were asked.  An asked candidate is told with the row
  the strategy sampled (it keeps its z); rows of an older generation and told points that were
  never asked are mapped back to z = A⁻¹(x − m)/σ (shortened like pycma's repair).
* Bounds are the parametrization's: ``ng.p.Array(...).set_bounds(lo, hi, method=...)`` maps each
  sampled point into the box (bouncing, clipping, arctan, tanh).  The strategy is told the point it
  sampled, with the loss of the mapped point plus a penalty w·‖x − mapped(x)‖² where the map moved
  it (w = interquartile range of the generation's losses / mean ‖xᵢ − m‖², after pycma's
  BoundPenalty): f ∘ map is continuous, and the penalty keeps the distribution from drifting on the
  plateaus that clipping leaves outside the box.  Measured on shifted spheres in a box (optimum
  inside or on a bound): telling the mapped points instead, as nevergrad's CMA does, inflates σ with
  bouncing; telling the sampled points without the penalty stalls with clipping.  For a fully
  bounded parametrization the initial step size is ``0.3 · scale`` (``0.15 · scale`` for d ≥ 18),
  the rule of nevergrad's CMA, else ``scale``.
* The population size is ``max(num_workers, popsize)`` (``popsize`` default 4 + ⌊3 ln d⌋), so a full
  generation can be in flight at once.
* Termination: nevergrad's budget ends the run.  When the strategy's own criteria fire (tolfun,
  tolx, stagnation, …), ``restarts=None`` keeps it running (it keeps sampling around its optimum),
  ``restarts="restart"`` starts a fresh strategy with the same population size and
  ``restarts="ipop"`` one with twice the population (Auger & Hansen 2005), each from a random
  point of the parametrization (``parametrization.sample()``).  Candidates of a strategy that was
  replaced are recorded by nevergrad but not told to the new one.  An ``ftarget`` option, once
  reached, ends ``minimize`` early (``NevergradEarlyStopping``).
* Losses: nevergrad clips NaN and values above 5e20 to 5e20 before the optimizer sees them; the
  optimizer clips −inf to −5e20 (it ranks first, as it does in nevergrad's archive).
* Seeding: the strategy's seed is drawn from the optimizer's random state at the first ask, so
  ``optimizer.parametrization.random_state.seed(s)`` makes runs reproducible.
* The recommendation is nevergrad's best evaluated candidate (``current_bests``).

The optimizers pickle (``optimizer.dump(path)``), with the strategy's full state.

Reference: Auger & Hansen, "A restart CMA evolution strategy with increasing population size",
CEC 2005.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

try:
    import nevergrad as ng
    from nevergrad.common import errors as ng_errors
    from nevergrad.optimization import base as ng_base
    from nevergrad.parametrization import parameter as ng_p
except ImportError as err:  # pragma: no cover - exercised only without nevergrad
    raise ImportError("natgrad_es.integrations.nevergrad needs nevergrad: pip install "
                      "'natgrad-es[interop]' (or pip install nevergrad)") from err

from .. import structures
from ..es import NaturalES, defaults
from ..es.options import Options

__all__ = ["NatGradES", "NatGradOptimizer", "NatGradXNES", "NatGradSNES", "NatGradLowRank",
           "NatGradIPOP", "REGISTERED", "RESTARTS"]

#: the values of ``restarts``
RESTARTS = (None, "restart", "ipop")
#: ``Options`` the optimizer sets itself (nevergrad works on numpy float64 arrays)
_RESERVED = ("backend", "dtype", "device", "rank")
#: losses are clipped to ±5e20 (nevergrad clips NaN and large values to 5e20; −inf ranks first)
_LOSS_CLIP = 5e20


def default_rank(dim: int) -> int:
    """The low-rank structure's default rank: round(√d), clipped to 1 ≤ k < d."""
    return max(1, min(dim - 1, int(round(math.sqrt(dim)))))


class NatGradOptimizer(ng_base.Optimizer):
    """A nevergrad ``Optimizer`` running a ``NaturalES`` (made by ``NatGradES``; see the module
    docstring for how asks and tells reach the strategy).

    Attributes:
        es: the current ``NaturalES`` (None before the first ask).
        restarts_done: how many times the strategy was restarted.
    """

    def __init__(self, parametrization, budget: int | None = None, num_workers: int = 1,
                 config: NatGradES | None = None) -> None:
        super().__init__(parametrization, budget=budget, num_workers=num_workers)
        self._config = NatGradES() if config is None else config
        d = self.dimension
        structure, rank = self._config.structure, self._config.rank
        if structure == "lowrank":
            if d < 2:
                structure = "full"  # d = 1: every structure is the 1×1 factor
            elif rank is None:
                rank = default_rank(d)
            elif rank >= d:
                raise ValueError(f"rank must be < the dimension {d} of the parametrization, got {rank}")
        self._structure = structure
        self._rank = rank if structure == "lowrank" else None
        if structure in ("lowrank", "blockdiag", "kronecker"):  # keywords that must fit d: check now
            keywords = {k: v for k, v in self._config.options.items() if k in ("blocks", "shape")}
            if self._rank is not None:
                keywords["rank"] = self._rank
            structures.make(structure, d, **keywords)
        options = dict(self._config.options)
        popsize = options.pop("popsize", None)
        self._base_popsize = max(num_workers, popsize if popsize is not None else defaults.popsize(d))
        self._popsize = self._base_popsize
        self._options = options
        bounded = ng.p.helpers.Normalizer(self.parametrization).fully_bounded
        self._sigma0 = self._config.scale * ((0.3 if d < 18 else 0.15) if bounded else 1.0)
        self.es: NaturalES | None = None
        self.restarts_done = 0
        self._run = 0  # id of the current strategy (one per restart)
        self._seq = 0  # order of the asks
        self._rows: deque[np.ndarray] = deque()  # sampled rows not handed out yet
        self._order: dict[str, tuple[int, int, np.ndarray]] = {}  # uid -> (run, ask order, row)
        self._told: list[tuple[float, np.ndarray, float, float]] = []  # (order, data, loss, viol.)
        self._early_stop = False

    # -- the strategy ----------------------------------------------------------------------------
    def _new_es(self, x0: np.ndarray) -> NaturalES:
        seed = int(self._rng.randint(2 ** 31 - 1))
        kw: dict[str, Any] = dict(self._options)
        if self._rank is not None:
            kw["rank"] = self._rank
        return NaturalES(x0, self._sigma0, self._structure, popsize=self._popsize, seed=seed,
                         backend="numpy", dtype="float64", **kw)

    def _strategy(self) -> NaturalES:
        if self.es is None:
            self.es = self._new_es(np.zeros(self.dimension))
        return self.es

    def _restart(self) -> None:
        self.restarts_done += 1
        if self._config.restarts == "ipop":
            self._popsize *= 2
        x0 = np.asarray(self.parametrization.sample().get_standardized_data(
            reference=self.parametrization), dtype=np.float64)
        self.es = self._new_es(x0 if np.all(np.isfinite(x0)) else np.zeros(self.dimension))
        self._run += 1
        self._rows.clear()
        self._told = []

    # -- nevergrad's hooks -------------------------------------------------------------------------
    def _internal_ask_candidate(self) -> ng_p.Parameter:
        if self._early_stop:
            raise ng_errors.NevergradEarlyStopping("ftarget reached")
        es = self._strategy()
        if not self._rows:
            self._rows.extend(np.asarray(es.ask(self._popsize), dtype=np.float64))
        data = self._rows.popleft()
        candidate = self.parametrization.spawn_child().set_standardized_data(data)
        self._order[candidate.uid] = (self._run, self._seq, data)
        self._seq += 1
        return candidate

    def _internal_tell_candidate(self, candidate: ng_p.Parameter, loss: float) -> None:
        if candidate.uid not in self._order:  # asked before a reload that lost it: as not asked
            self._internal_tell_not_asked(candidate, loss)
            return
        run, seq, row = self._order.pop(candidate.uid)
        if run != self._run:
            return  # sampled by a strategy that was restarted since: nevergrad keeps it, the ES not
        mapped = np.asarray(candidate.get_standardized_data(reference=self.parametrization),
                            dtype=np.float64)
        violation = float(np.sum((row - mapped) ** 2)) if mapped.shape == row.shape else 0.0
        self._collect(row, loss, seq, violation if math.isfinite(violation) else 0.0)

    def _internal_tell_not_asked(self, candidate: ng_p.Parameter, loss: float) -> None:
        data = candidate.get_standardized_data(reference=self.parametrization)
        self._collect(np.asarray(data, dtype=np.float64), loss, math.inf, 0.0)

    def _collect(self, data: np.ndarray, loss: float, order: float, violation: float) -> None:
        if not np.all(np.isfinite(data)):
            return  # a point the strategy cannot place; nevergrad still records it
        loss = float(loss)
        loss = min(max(loss, -_LOSS_CLIP), _LOSS_CLIP) if not math.isnan(loss) else _LOSS_CLIP
        self._told.append((order, data, loss, violation))
        if len(self._told) >= self._popsize:
            self._tell_generation()

    def _tell_generation(self) -> None:
        es = self._strategy()
        told = sorted(self._told, key=lambda t: t[0])
        self._told = []
        X = np.stack([t[1] for t in told])
        f = np.array([t[2] for t in told])
        violation = np.array([t[3] for t in told])
        if violation.any():  # points the box map moved: penalise the distance (pycma's BoundPenalty)
            q75, q25 = np.percentile(f, [75, 25])
            step2 = float(np.mean(np.sum((X - es.mean) ** 2, axis=1)))
            weight = (q75 - q25) / step2 if q75 > q25 and step2 > 0 else 1.0
            f = f + weight * violation
        es.tell(X, f)
        stop = es.stop()
        if not stop:
            return
        if "ftarget" in stop:
            self._early_stop = True
        elif self._config.restarts is not None:
            self._restart()

    def _internal_provide_recommendation(self) -> None:
        return None  # nevergrad's best evaluated candidate (current_bests)


class NatGradES(ng_base.ConfiguredOptimizer):
    """Natural-gradient evolution strategies (``natgrad_es.es.NaturalES``) as nevergrad optimizers.

    A family, like nevergrad's ``ParametrizedCMA``: an instance is a configured optimizer; call it
    with ``(parametrization, budget, num_workers)`` to get a ``NatGradOptimizer``, or register it
    with ``.set_name(name, register=True)``.

    Args:
        structure: the covariance structure (``natgrad_es.structures.make`` names: "full",
            "diagonal", "lowrank", "blockdiag", "kronecker", "spectral"; "blockdiag" needs a
            ``blocks=`` option and "kronecker" a ``shape=`` option that fit the parametrization's
            dimension — checked when the optimizer is made).
        rank: the rank k of the "lowrank" structure (default round(√d), 1 ≤ k < d); only for
            "lowrank".
        restarts: what to do when the strategy's termination criteria fire before nevergrad's
            budget is spent: None (keep the strategy running), "restart" (a fresh strategy with the
            same population size) or "ipop" (a fresh strategy with twice the population).
        scale: the initial step size σ₀ in standardized space (times 0.3, or 0.15 for d ≥ 18, for a
            fully bounded parametrization, as nevergrad's CMA does).
        **options: ``NaturalES`` options (``popsize``, ``method``, ``tolfun``, ``ftarget``, …;
            ``Options`` lists them).  ``backend``, ``dtype`` and ``device`` are fixed (numpy
            float64: nevergrad's data).

    Example:
        >>> import nevergrad as ng
        >>> from natgrad_es.integrations.nevergrad import NatGradES
        >>> NatGradES(structure="diagonal", popsize=16)
        NatGradES(popsize=16, structure='diagonal')
        >>> opt = NatGradES(structure="diagonal")(parametrization=4, budget=400)
        >>> bool(opt.minimize(lambda x: float((x ** 2).sum())).loss < 1e-4)
        True
    """

    def __init__(self, *, structure: str = "full", rank: int | None = None,
                 restarts: str | None = None, scale: float = 1.0, **options: Any) -> None:
        if not isinstance(structure, str):
            raise TypeError(f"structure must be a structure name, got {type(structure).__name__}")
        key = getattr(structures, "_ALIASES", {}).get(structure.lower(), structure.lower())
        if key not in structures.names():
            raise ValueError(f"unknown structure {structure!r}; valid names: "
                             f"{', '.join(structures.names())}")
        if rank is not None:
            if key != "lowrank":
                raise ValueError(f"rank is for structure='lowrank', got structure={structure!r}")
            if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
                raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
        if restarts not in RESTARTS:
            raise ValueError(f"restarts must be one of {RESTARTS}, got {restarts!r}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)) \
                or not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        reserved = sorted(set(options) & set(_RESERVED))
        if reserved:
            raise TypeError(f"option(s) {reserved} cannot be set here: nevergrad hands numpy float64 "
                            f"data (use rank= for the low-rank structure's rank)")
        Options.from_kwargs(**options)  # unknown names or bad values fail here, not at first ask
        self.structure = key
        self.rank = None if rank is None else int(rank)
        self.restarts = restarts
        self.scale = float(scale)
        self.options = dict(options)
        super().__init__(NatGradOptimizer, {"structure": structure, "rank": rank,
                                            "restarts": restarts, "scale": scale,
                                            "options": options}, as_config=True)
        # flat configuration: NatGradES(**config) rebuilds an equal instance; the repr lists it
        self._config = {"structure": structure, "rank": rank, "restarts": restarts, "scale": scale,
                        **options}
        defaults_ = {"structure": "full", "rank": None, "restarts": None, "scale": 1.0}
        shown = {k: v for k, v in self._config.items() if k not in defaults_ or defaults_[k] != v}
        self.name = f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(shown.items()))})"

    def __call__(self, parametrization, budget: int | None = None,
                 num_workers: int = 1) -> NatGradOptimizer:
        return super().__call__(parametrization, budget=budget, num_workers=num_workers)


def _register(name: str, optimizer: NatGradES, info: dict[str, Any]) -> NatGradES:
    """Register ``optimizer`` under ``name`` (again after a module reload: the old entry is ours)."""
    registry = ng.optimizers.registry
    if name in registry:
        registry.unregister(name)
    optimizer.set_name(name)
    registry.register_name(name, optimizer, info=info)
    return optimizer


def _info(structure: str, restarts: str | None) -> dict[str, Any]:
    """Capability metadata stored with each registered name (``registry.get_info(name)``)."""
    return {"package": "natgrad_es", "structure": structure, "restarts": restarts,
            "supports_bounds": True, "supports_parallel": True, "supports_tell_not_asked": True,
            "picklable": True}


NatGradXNES = _register("NatGradXNES", NatGradES(), _info("full", None))
NatGradSNES = _register("NatGradSNES", NatGradES(structure="diagonal"), _info("diagonal", None))
NatGradLowRank = _register("NatGradLowRank", NatGradES(structure="lowrank"), _info("lowrank", None))
NatGradIPOP = _register("NatGradIPOP", NatGradES(restarts="ipop"), _info("full", "ipop"))

#: the names this module registers
REGISTERED = ("NatGradXNES", "NatGradSNES", "NatGradLowRank", "NatGradIPOP")
