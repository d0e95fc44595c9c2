"""One ES generation captured once as a CUDA graph and replayed: ``GraphedGeneration``.

On a GPU a generation of ``NaturalES`` launches 140–250 small kernels (sampling, ranking, the
rule, the retraction, the bookkeeping).  Below n·d ≈ 1e7 the device finishes each faster than
Python issues the next, so a generation costs 1.4–2.5 ms whatever its size (measured on an H200,
``benchmarks/gpu_throughput.py``).  A CUDA graph records the launches once and replays them with
one call: the cost becomes the kernels' own time (0.2–0.55 ms at d = 1000, n = 100 there).

A replay reads and writes fixed addresses, so the generation runs on *static buffers*: copies of
the state's tensors (m, σ, the paths, the factor's arrays, the momentum buffer) that each replay
overwrites with the next state, a device counter of the generations (the rule's h_σ correction
depends on it), and a device record of the best-so-far and the (best, median) of each generation.
Around each replay the host does only what a graph cannot:

    Z ← the strategy's RandomStream (one eager launch: the same numbers as ``ask`` would draw)
    replay: X = m + σ A z, f(X), ranking, the rule's update, the record, the copy into the buffers
    every ``check_every`` generations: one transfer of the record and the checks (``NaturalES``)

So a graphed run is the run ``ask``/``tell`` would make with the same seed, up to the rounding
of the h_σ correction, which the graph computes in float64 on the device.  The strategy stays
usable: its ``mean``, ``sigma``, ``result``, ``stop()``, ``state_dict`` read the buffers (copies
where they keep a value), and an ``ask``/``tell`` or ``load_state_dict`` in between is picked up
at the next replay (the buffers are refilled from the strategy's state).

Needs: torch on CUDA (``capture=False`` runs the same steps without a graph, on any device: the
reference the tests compare with), no bounds (on torch the rank route is the only one),
``nan_policy="worst"``, and an objective ``f(X) -> (n,)`` made of device operations only (a
capture fails on any host synchronisation, and then this says so).

Example (on a GPU):
    >>> import torch                                                        # doctest: +SKIP
    >>> from natgrad_es.es import NaturalES, GraphedGeneration
    >>> es = NaturalES(torch.full((1000,), 0.5, device="cuda"), 0.5, "diagonal", popsize=100,
    ...                check_every=50, ftarget=1e-8)
    >>> step = GraphedGeneration(es, lambda X: (X * X).sum(-1))
    >>> while not es.stop():
    ...     step(50)                   # 50 generations, then the checks
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
import weakref
from collections.abc import Callable
from typing import Any

from .. import backend as B
from ..structures import Factor, Tangent
from .rules import State
from .termination import BestSoFar, DeviceRecord

__all__ = ["GraphedGeneration"]


class GraphedGeneration:
    """Run generations of ``es`` on ``f`` by replaying one captured CUDA graph (module docstring).

    Args:
        es: a ``NaturalES`` on torch (no bounds, ``nan_policy="worst"``), with no ask pending.
        f: the objective on the (n, d) batch of solutions, returning (n,) values on the device;
            device operations only.
        capture: record a CUDA graph (default: when the strategy is on a CUDA device); False runs
            the same steps eagerly.

    Calling ``step(k)`` runs k generations (default 1), with no host round-trip between the
    strategy's checks, which run every ``check_every`` generations as with ``tell``; so
    ``es.stop()`` changes at a check, and ``es.result`` brings the record to the host when read.
    """

    def __init__(self, es, f: Callable, *, capture: bool | None = None):
        if es._xp.name != "torch" or not es._on_device:
            raise ValueError("GraphedGeneration needs a strategy on torch without bounds")
        if es._options.nan_policy == "raise":
            raise ValueError("nan_policy='raise' checks f on the host every generation; use "
                             "nan_policy='worst' with GraphedGeneration")
        if not callable(f):
            raise TypeError(f"f must be callable, got {type(f).__name__}")
        self.es, self.f = es, f
        self.capture = es._device.type == "cuda" if capture is None else bool(capture)
        if self.capture and es._device.type != "cuda":
            raise ValueError(f"capture=True needs a CUDA device, the strategy is on {es._device}")
        self._graph = None
        self._buffers: _Buffers | None = None
        self._view: State | None = None  # the state the strategy holds while the buffers are its
        self._settled = False  # the last eager generation kept the state's form (``_signature``)

    def __call__(self, generations: int = 1) -> None:
        if isinstance(generations, bool) or not isinstance(generations, int) or generations < 1:
            raise ValueError(f"generations must be a positive integer, got {generations!r}")
        es = self.es
        if es._pending:
            raise RuntimeError("an ask is pending: tell it before running graphed generations")
        for _ in range(generations):
            if not self._settled:  # the first generations: the state takes its lasting form
                self._eager_generation()
                continue
            if self._view is None or es._state is not self._view:
                self._load()
            es._rng.normal(self._buffers.draw.shape, dtype=self._buffers.draw.dtype,
                           out=self._buffers.draw)
            if self._graph is not None:
                self._graph.replay()
            else:
                self._body()
            self._after_replay()
            if self._buffers.unread == self._buffers.stats.shape[0]:
                es._sync_record()  # the record's rows are all used

    # -- the captured step ------------------------------------------------------------------------
    def _body(self) -> None:
        """One generation on the buffers: everything a replay does."""
        es, b = self.es, self._buffers
        st, n = b.state, es._n
        Z = b.draw if b.draw.dtype == es._dtype else b.draw.to(es._dtype)
        if es._options.mirrored:
            Z = es._xp.concat([Z, -Z], axis=0)[:n]
        if b.tpa_pair:
            if Z is b.draw:
                Z = Z.clone()
            es._tpa_rows_device(Z, st.zbar)
        X = es._solutions_from(st, st.factor.apply(Z))
        f = es._device_fvalues(self.f(X), n)
        torch = es._xp._module
        finite = torch.isfinite(f)
        ranked = torch.where(finite, f, torch.full_like(f, math.inf))
        held, es._state = es._state, st  # the rule reads the strategy's state
        try:
            new = es._update(Z, ranked, n, b.tpa_pair)
        finally:
            es._state = held
        if not b.checked:  # the first run on these buffers: the replays will copy new into them
            if _signature(new) != b.signature:
                raise RuntimeError("the state changed its form in a generation; GraphedGeneration "
                                   "needs one that keeps it (a structure whose tangent grows)")
            b.checked = True
        b.record(ranked, finite, X, new.iteration)
        b.f.copy_(f)
        b.old_mean.copy_(st.mean)
        # read at a check only: a replay leaves these where the capture put them
        b.last = (ranked, X)
        for out, buf in zip(_leaves(new), b.leaves):
            if out.data_ptr() != buf.data_ptr():
                buf.copy_(out)
        b.iteration.copy_(new.iteration)

    def _load(self) -> None:
        """The buffers take the strategy's state (made, and the graph captured, the first time)."""
        es = self.es
        es._sync_record()  # what the last record holds, before the buffers change
        st = es._state
        if self._buffers is None or not self._buffers.fits(st):
            self._buffers = _Buffers(es, st)
            self._graph = None
            if self.capture:
                self._capture()
        else:
            self._buffers.fill(st)
        self._buffers.generation = st.iteration
        self._record_start()
        self._view = self._make_view()
        es._state = self._view

    def _capture(self) -> None:
        torch = self.es._xp._module
        b = self._buffers
        saved = [x.clone() for x in b.mutable()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: lazy handles and workspaces
            self._body()
        torch.cuda.current_stream().wait_stream(side)
        for buf, old in zip(b.mutable(), saved):  # the warm-up is not a generation
            buf.copy_(old)
        graph = torch.cuda.CUDAGraph()
        # no garbage collection inside the capture: a dead graph freed there breaks it
        gc.collect()
        enabled = gc.isenabled()
        gc.disable()
        try:
            with torch.cuda.graph(graph):
                self._body()
        except RuntimeError as err:
            self._buffers = None  # the next call captures again (and says why it cannot)
            raise RuntimeError(
                "the generation could not be captured as a CUDA graph: an operation in it waits "
                "for the host. f must run on the device without host synchronisation (no .item(), "
                "no boolean masks, no numpy); the dense structure with n + 1 ≥ d takes a d×d "
                f"matrix exponential, which does too. ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:120]})") from err
        finally:
            if enabled:
                gc.enable()
        self._graph = graph

    # -- the host bookkeeping ---------------------------------------------------------------------
    def _eager_generation(self) -> None:
        """An ``ask``/``tell`` generation.  The state's form settles in a few: z̄ and the TPA state
        become tensors after the first, the momentum buffer of a dense factor folds its rows into
        a matrix once they reach d."""
        es = self.es
        before = _signature(es._state)
        X = es.ask()
        es.tell(X, self.f(X))
        self._settled = _signature(es._state) == before
        self._view = None

    def _after_replay(self) -> None:
        es, b = self.es, self._buffers
        es._evaluations += es._n
        b.generation += 1
        b.unread += 1
        self._view = self._make_view()
        es._state = self._view
        es._last_f = b.f
        if b.generation % es._options.check_every == 0:
            self._check()

    def _make_view(self) -> State:
        return dataclasses.replace(self._buffers.state, iteration=self._buffers.generation)

    def _check(self) -> None:
        """``NaturalES._check`` for the buffers; the state kept to go back to is a copy (the
        buffers change with the next replay)."""
        es, b = self.es, self._buffers
        f_range, max_step, finite = es._check_values(b.state, *b.last, b.old_mean)
        es._sync_record()
        es._apply_check(f_range, max_step, finite, _cloned(es._state) if finite else es._state)

    def _record_start(self) -> None:
        """The buffers' record starts from the strategy's best-so-far and becomes its record."""
        es = self.es
        es._sync_record()
        self._buffers.start_record(es._fbest, es._xbest, es._best_iteration)
        es._record = _GraphRecord(es, self._buffers)


class _GraphRecord:
    """Stands for ``termination.DeviceRecord`` in the strategy while the buffers hold its state:
    ``es.result`` and the checks read the replays' record through it, and a ``tell`` of the
    strategy's own hands it back a ``DeviceRecord``.

    It holds the buffers and a weak reference to the strategy, never the ``GraphedGeneration``:
    no reference cycle keeps a captured graph alive after its last use, to be freed by the
    garbage collector at a random time (during another capture, that time breaks the capture)."""

    def __init__(self, es, buffers: _Buffers):
        self._es, self._buffers = weakref.ref(es), buffers

    @property
    def pending(self) -> bool:
        return self._buffers.unread > 0

    def sync(self) -> dict:
        return self._buffers.read_unread()

    def update(self, f, X, iteration: int) -> None:
        es = self._es()
        es._sync_record()
        es._record = DeviceRecord(es._fbest, es._xbest, es._best_iteration)
        es._record.update(f, X, iteration)


#: most generations recorded on the device between two transfers to the host
RECORD_ROWS = 1024


def record_rows(check_every: int) -> int:
    """Rows of the device record: a check reads it every ``check_every`` generations, and a
    transfer empties it when it is full (at most ``RECORD_ROWS`` rows)."""
    return max(1, min(check_every, RECORD_ROWS))


class _Buffers:
    """The static tensors a replay reads and writes (``GraphedGeneration``)."""

    def __init__(self, es, st: State):
        torch = es._xp._module
        device = es._device
        self.torch = torch
        self.signature = _signature(st)
        self.checked = False  # a generation on these buffers kept the signature
        self.leaves = _clones(_leaves(st))
        self.iteration = torch.tensor(st.iteration, dtype=torch.int64, device=device)
        self.state = _rebuild(dataclasses.replace(st, iteration=self.iteration), self.leaves)
        rows = es._n - es._n // 2 if es._options.mirrored else es._n
        draw = torch.float64 if es._dtype == torch.float64 else torch.float32
        self.draw = torch.zeros((rows, es._d), dtype=draw, device=device)
        self.tpa_pair = es._uses_tpa() and es._n >= 2
        self.f = torch.zeros(es._n, dtype=torch.float64, device=device)
        self.old_mean = torch.zeros(es._d, dtype=es._mdtype, device=device)
        self.last: tuple = ()  # (ranked f, X) of the last generation: the graph's own tensors
        self.best = BestSoFar(math.inf, None, st.iteration, st.mean)
        self.stats = torch.zeros((record_rows(es._options.check_every), 2), dtype=torch.float64,
                                 device=device)
        self.generation = st.iteration  # host counters: generations done, and not yet read
        self.unread = 0

    def fits(self, st: State) -> bool:
        return _signature(st) == self.signature

    def fill(self, st: State) -> None:
        for buf, x in zip(self.leaves, _leaves(st)):
            buf.copy_(x)
        self.iteration.fill_(st.iteration)

    def mutable(self) -> list:
        return [*self.leaves, self.iteration, self.f, self.old_mean, *self.best.tensors(),
                self.stats]

    def start_record(self, fbest: float, xbest, best_iteration: int) -> None:
        self.unread = 0
        self.best.reset(fbest, xbest, best_iteration)

    def record(self, ranked, finite, X, iteration) -> None:
        """``BestSoFar.update``; the generation's (best, median) goes to row ``iteration − 1``
        mod capacity of ``stats``."""
        pair = self.best.update(ranked, finite, X, iteration)
        slot = ((iteration - 1) % self.stats.shape[0]).reshape(1)
        self.stats.index_copy_(0, slot, pair[None])

    def read_unread(self) -> dict:
        """The record of the generations since the last read (``BestSoFar.read``), in order."""
        cap = self.stats.shape[0]
        if self.unread > cap:
            raise RuntimeError(f"{self.unread} generations since the last read exceed the "
                               f"record's {cap} rows")
        first = self.generation - self.unread
        order = self.torch.arange(first, first + self.unread, device=self.stats.device) % cap
        rec = self.best.read(self.stats.index_select(0, order))
        self.unread = 0
        return rec


# -- the tensors of a state ---------------------------------------------------------------------------


def _is_tensor(x) -> bool:
    return B.is_torch(x)


def _children(obj) -> list[tuple[str, Any]]:
    """(name, value) of what may hold tensors, in a fixed order."""
    if isinstance(obj, State):  # the counter is the graph's own buffer (``_Buffers.iteration``)
        return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.name != "iteration"]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    if isinstance(obj, (Factor, Tangent)):
        return sorted(vars(obj).items())
    if isinstance(obj, (tuple, list)):
        return list(enumerate(obj))
    return []


def _leaves(obj) -> list:
    """The tensors of a state, factor or tangent, depth first."""
    if _is_tensor(obj):
        return [obj]
    out = []
    for _, child in _children(obj):
        out.extend(_leaves(child))
    return out


def _clones(leaves: list) -> list:
    """Copies of tensors; one copy for a tensor met twice (a spectral tangent holds its factor's
    Q and λ and is checked against them by identity)."""
    copies: dict[int, Any] = {}
    for x in leaves:
        if id(x) not in copies:
            copies[id(x)] = x.clone()
    return [copies[id(x)] for x in leaves]


def _aliases(leaves: list) -> tuple:
    """For each tensor, the index of its first occurrence: which tensors are the same one."""
    first: dict[int, int] = {}
    return tuple(first.setdefault(id(x), i) for i, x in enumerate(leaves))


def _signature(obj) -> tuple:
    """What a state's buffers must match: its structure, with each tensor's shape and dtype, and
    which of its tensors are one and the same."""
    return _form(obj), _aliases(_leaves(obj))


def _form(obj):
    if _is_tensor(obj):
        return ("tensor", tuple(obj.shape), obj.dtype, obj.device)
    kids = _children(obj)
    if not kids:
        plain = obj is None or isinstance(obj, (int, float, str, bool))
        return ("value", obj if plain else type(obj).__name__)
    return (type(obj).__name__, tuple((name, _form(child)) for name, child in kids))


def _rebuild(obj, leaves: list):
    """A copy of ``obj`` whose tensors are ``leaves`` (in ``_leaves`` order)."""
    it = iter(leaves)

    def build(x):
        if _is_tensor(x):
            return next(it)
        if isinstance(x, (Factor, Tangent)) and not dataclasses.is_dataclass(x):
            y = copy.copy(x)
            for name, value in _children(x):
                object.__setattr__(y, name, build(value))
            return y
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return dataclasses.replace(x, **{name: build(value) for name, value in _children(x)})
        if isinstance(x, tuple):
            return tuple(build(v) for v in x)
        if isinstance(x, list):
            return [build(v) for v in x]
        return x

    out = build(obj)
    if next(it, None) is not None:
        raise RuntimeError("more buffers than tensors in the state")
    return out


def _cloned(st: State) -> State:
    """A state with copies of every tensor (one a later replay cannot overwrite)."""
    return _rebuild(st, _clones(_leaves(st)))
