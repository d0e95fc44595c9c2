"""``NaturalES``: the ask / tell loop of a natural-gradient evolution strategy on a structured factor.

The search distribution is N(m, σ² A Aᵀ) with A a ``structures.Factor`` (dense, diagonal,
block-diagonal, Kronecker, block-triangular low rank).  One generation:

    ask():   Z ~ N(0, I) (n×d)          X = m + σ Z Aᵀ   (rows xᵢ = m + σ A zᵢ; Z is kept)
             with ``bounds``: X ← R(X), the reflection into the box (``bounds``)
    tell(X, f):  zᵢ = A⁻¹(xᵢ − m)/σ for rows the user changed (repaired, rounded, injected),
             with ``bounds``: f ← f + penalty on the raw sample's distance to the box,
             rank f (ties share their utility), then one step of the update rule (``rules``);
             with ``bounds``: m ← Π(m), the projection of the new mean on the box.

The default rule (``method="path"``) is the path-based rule of algorithms.md §2b — CSA step size,
rank-one path and active weights in local coordinates, projected on the structure; its constants
follow the structure's number of parameters (``defaults``).  ``method="xnes"`` is textbook xNES
(SNES on the diagonal structure); ``XNES`` and ``SNES`` are those published algorithms.

numpy in, numpy out: the backend (numpy or torch), dtype and device come from x0 (or from a Factor
passed as ``structure``), and ``ask``, ``mean``, ``result`` return arrays of that backend.

**On a device (torch, no bounds).**  A generation ask → tell needs no host round-trip: Z is drawn
on the device, the f values are ranked there (``shaping.assign``), σ is a 0-d tensor (the
``sigma`` property converts it: reading it is the caller's sync), and the bookkeeping of the
termination criteria runs every ``check_every`` generations (``Options``), the best-so-far being
tracked on the device in between (``termination.DeviceRecord``).  Pass ``tell`` the very tensor
``ask`` returned (changed only by torch operations, if at all: a changed tensor is detected by
its version counter, then the rows are compared on the host) and f values as a tensor on the
device.  With ``dtype=torch.bfloat16`` the factor A and the samples Z are bfloat16 (the matmuls of
sampling and of the update), while m, σ, the paths and the weighted sums of the rule are float32:
``ask`` returns float32 solutions (a bfloat16 mean could not resolve steps below 2⁻⁸|m|), and the
retraction defaults to the inverse-free truncated series (``Options.retraction``).

Example:
    >>> import numpy as np
    >>> from natgrad_es.es import NaturalES
    >>> es = NaturalES(np.ones(4), 0.5, seed=1, ftarget=1e-10)
    >>> while not es.stop():
    ...     X = es.ask()
    ...     es.tell(X, (X ** 2).sum(axis=1))
    >>> bool(es.result.fbest <= 1e-10)
    True

References: Glasmachers et al., "Exponential Natural Evolution Strategies", GECCO 2010; Schaul et
al., "High Dimensions and Heavy Tails for Natural Evolution Strategies", GECCO 2011; Hansen, "The
CMA Evolution Strategy: A Tutorial", arXiv:1604.00772; Lin et al., "Tractable structured
natural-gradient descent using local parameterizations", ICML 2021.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend as B
from .. import structures
from ..structures import Factor
from ..structures.base import tangent_from_state_dict
from . import defaults, rules, termination
from . import pairs as pairs_route
from .bounds import BoundPenalty, Box, parse_bounds
from .options import Options
from .rules import State
from .shaping import recombination_weights

__all__ = ["NaturalES", "XNES", "SNES", "Result", "NaturalESWarning"]

_STATE_VERSION = 1


class NaturalESWarning(UserWarning):
    """Warnings of the evolution strategies (non-finite f values, …)."""


@dataclass(frozen=True)
class Result:
    """What a strategy has found so far (arrays in the strategy's backend).

    Attributes:
        xbest: the best evaluated solution (None before the first finite f value).
        fbest: its f value (inf before).
        xmean: the current mean m (with bounds, always in the box).
        sigma: the current step size σ.
        evaluations: f values told so far.
        iterations: generations completed.
        stop: the termination criteria that fired, ``{name: threshold}`` (empty while running).
    """

    xbest: Any
    fbest: float
    xmean: Any
    sigma: float
    evaluations: int
    iterations: int
    stop: dict


class NaturalES:
    """Natural-gradient evolution strategy with a structured covariance factor.

    Args:
        x0: initial mean m, shape (d,); a numpy array (or list) or a torch tensor — its backend,
            dtype and device are the strategy's (unless ``structure`` is a Factor).
        sigma0: initial step size σ > 0 (about a quarter of the search range).
        structure: a name for ``structures.make`` ("full", "diagonal", "blockdiag", "kronecker",
            "lowrank"; pass ``rank=``, ``blocks=``, ``shape=`` as options) or a ``Factor``, used as
            the initial A.
        popsize: n, samples per generation (default 4 + ⌊3 ln d⌋).
        seed: seed of the random stream (an int, a ``numpy.random.SeedSequence`` or None).
        bounds: box constraints ``(lower, upper)``, each a scalar or d values (None or ±inf: that
            side unbounded), or a ``scipy.optimize.Bounds``.  ``ask`` returns points reflected
            into the box, so f is never needed outside it; ``tell`` ranks f plus a penalty on the
            raw sample's distance to the box, updates from the raw sample's z, and projects the
            new mean on the box (``bounds`` module).  x0 must lie in the box; lower ≥ upper
            raises ValueError naming the coordinate.
        **options: see ``Options`` (update rule, constants, termination, backend).

    Attributes:
        mean, sigma, factor: the current N(m, σ² A Aᵀ).
        result: a ``Result``.
        options: the ``Options``.
    """

    def __init__(self, x0, sigma0, structure: str | Factor = "full", *, popsize: int | None = None,
                 seed: int | np.random.SeedSequence | None = None, bounds=None, **options):
        if popsize is not None:
            options["popsize"] = popsize
        self._options = Options.from_kwargs(**options)
        opts = self._options
        retraction_given = "retraction" in options

        if isinstance(structure, Factor):
            factor = structure
            xp, dtype, device = factor.xp, factor.dtype, factor.device
            if opts.structure_keywords():
                raise TypeError("rank=, blocks= and shape= are for a structure name, not a Factor")
        elif isinstance(structure, str):
            factor = None
            xp = B.get_backend(opts.backend) if opts.backend else B.namespace(x0)
            same_kind = B.is_torch(x0) == (xp.name == "torch")
            dtype = getattr(x0, "dtype", None)
            if dtype is not None and not same_kind:  # numpy x0, backend="torch" (or the reverse)
                name = str(dtype).removeprefix("torch.")
                dtype = xp.dtype_of(name) if name in ("float16", "float32", "float64") else None
            if opts.dtype is not None:
                dtype = xp.dtype_of(opts.dtype) if isinstance(opts.dtype, str) else opts.dtype
            if dtype is None or not _is_float_dtype(xp, dtype):
                dtype = xp.default_dtype()
            device = opts.device if opts.device is not None else (
                x0.device if B.is_torch(x0) and same_kind else None)
        else:
            raise TypeError(f"structure must be a structure name or a Factor, got "
                            f"{type(structure).__name__}")

        mdtype = _mean_dtype(xp, dtype)
        mean = _check_x0(x0, xp, mdtype, device)
        d = int(mean.shape[0])
        sigma = _check_sigma0(sigma0)
        if mdtype != dtype and not retraction_given:  # bfloat16 / float16: matmuls only
            self._options = opts = opts.replace(retraction="truncated")
        box = bounds if isinstance(bounds, Box) else parse_bounds(bounds, d)
        if box is not None:
            if box.dim != d:
                raise ValueError(f"bounds are for dimension {box.dim}, x0 has {d} entries")
            _check_x0_in_box(mean, box)
        self._box = box
        self._penalty = BoundPenalty(box) if box is not None else None
        if factor is None:
            factor = structures.make(structure, d, backend=xp.name, dtype=dtype, device=device,
                                     **opts.structure_keywords())
        elif factor.dim != d:
            raise ValueError(f"the Factor has dim {factor.dim} but x0 has {d} entries")

        self._xp, self._dtype, self._device = xp, dtype, factor.device
        self._mdtype = mdtype  # of m, σ and the paths: float32 for a bfloat16 factor
        self._d = d
        self._route = _pairs_route(opts, factor, xp, box, d, seed)
        if opts.momentum:
            _check_transport(factor)
        if self._route is not None:  # the mean and n_p mirrored pairs
            self._n = self._route.layout()
        else:
            self._n = opts.popsize if opts.popsize is not None else defaults.popsize(d)
        for name, used in (("sampling_threads", opts.sampling_threads > 1),
                           ("draw_ahead", bool(opts.draw_ahead))):
            if used and xp.name != "numpy":
                raise ValueError(f"{name} is for the numpy backend (torch samples with its own "
                                 f"vectorised generator)")
        self._rng = B.RandomStream(seed, backend=xp.name, device=self._device,
                                   threads=opts.sampling_threads)
        zeros = xp.zeros(d, dtype=mdtype, device=self._device)
        self._state = State(mean, self._scalar(sigma), factor, zeros, xp.copy(zeros), 0)
        self._params: dict[int, Any] = {}
        self._device_params: dict[int, Any] = {}
        # torch without bounds: the generation stays on the device (module docstring)
        self._on_device = xp.name == "torch" and box is None

        # termination thresholds
        n = self._n
        self._maxfevals = opts.maxfevals
        self._maxiter = opts.maxiter if opts.maxiter is not None else defaults.maxiter(d, n)
        self._tolfun = opts.tolfun if opts.tolfun is not None else defaults.tolfun()
        self._tolx = opts.tolx if opts.tolx is not None else defaults.tolx()
        self._tolstagnation = (opts.tolstagnation if opts.tolstagnation is not None
                               else defaults.tolstagnation(d, n))
        self._tolcondition = (opts.tolcondition if opts.tolcondition is not None
                              else defaults.tolcondition())
        self._history = termination.History(defaults.tolfun_history(d, n), self._tolstagnation)

        self._evaluations = 0
        self._fbest = math.inf
        self._xbest = None
        self._best_iteration = 0
        self._gen_best = math.nan
        self._last_f: np.ndarray | None = None
        self._current_range = math.inf
        self._max_step = math.inf
        self._condition: float | None = None
        self._nonfinite = False
        self._nan_warned = False
        self._extra_stop: dict[str, Any] = {}
        self._pending: list[tuple[Any, Any, Any]] = []  # (Z, X asked, raw X or None)
        self._reach: list[float] = []  # max |A z| of each pending ask (numpy): tell's max step
        self._spare: list[np.ndarray] = []  # numpy: ask's row copies free for the next ask
        self._tpa_pending = False  # rows 0 and 1 of the pending asks are the TPA pair
        self._t0 = time.perf_counter()
        self._disp_lines = 0
        self._pending_versions: list[int | None] = []  # device path: X._version at ask
        self._record = termination.DeviceRecord()
        self._checked_state = self._state  # device path: the last state checked finite
        self._last_gen: tuple | None = None  # device path: (ranked f, raw X, old m) of the last tell
        self._condition_iteration = 0

    # -- description ----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._d

    @property
    def popsize(self) -> int:
        return self._n

    @property
    def options(self) -> Options:
        return self._options

    @property
    def mean(self):
        """m, a copy (shape (d,))."""
        return self._xp.copy(self._state.mean)

    @property
    def sigma(self) -> float:
        """σ as a Python float (on a device: a sync, the caller's choice)."""
        return float(self._state.sigma)

    @property
    def factor(self) -> Factor:
        """A (immutable)."""
        return self._state.factor

    @property
    def iterations(self) -> int:
        return self._state.iteration

    @property
    def last_fvalues(self) -> np.ndarray | None:
        """The f values of the last ``tell`` (float64 numpy copy, non-finite kept; None before it)."""
        if self._last_f is None:
            return None
        if B.is_torch(self._last_f):
            return B.get_backend("torch").to_numpy(self._last_f).astype(np.float64)
        return self._last_f.copy()

    @property
    def evaluations(self) -> int:
        return self._evaluations

    @property
    def curvature_model(self) -> pairs_route.CurvatureModel | None:
        """With ``curvature="pairs"``: the accepted Hessian model Ĥ = s I + Q diag(γ) Qᵀ (None before
        the first accepted fit, and for the rank route)."""
        return None if self._route is None else self._route.model

    @property
    def curvature_fits(self) -> list[dict[str, Any]]:
        """With ``curvature="pairs"``: one record per fit attempt (pairs in the buffer, train and
        held-out residuals, accepted, rank, CPU seconds of the fit); empty for the rank route."""
        return [] if self._route is None else [dict(r) for r in self._route.fits]

    @property
    def bounds(self) -> Box | None:
        """The ``Box`` of the box constraints (None without bounds)."""
        return self._box

    @property
    def parameters(self):
        """The rule's constants for the default population size (``rules.PathParameters`` or
        ``rules.XNESParameters``)."""
        return self._parameters(self._n)

    def covariance(self):
        """σ² A Aᵀ as a dense d×d array (O(d²) memory: for inspection and small d)."""
        A = self._state.factor.to_dense()
        return self._state.sigma ** 2 * (A @ A.mT)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(dim={self._d}, popsize={self._n}, method="
                f"{self._options.method!r}, structure={self._state.factor!r})")

    # -- ask / tell -----------------------------------------------------------------------------
    def ask(self, n: int | None = None):
        """n new solutions X = m + σ Z Aᵀ, shape (n, d) (n = popsize by default).

        With bounds, the rows are reflected into the box (``bounds.Box.reflect``); the raw rows
        and their z are kept for ``tell``.
        """
        if n is None:
            n = self._n
        if isinstance(n, bool) or not hasattr(n, "__index__") or int(n) < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        n = int(n)
        st, xp = self._state, self._xp
        if self._route is not None:
            return self._ask_pairs(n)
        Z = self._draw(n - n // 2 if self._options.mirrored else n)
        if self._options.mirrored:
            Z = xp.concat([Z, -Z], axis=0)[:n]
        if not self._pending and n >= 2 and self._uses_tpa() and st.zbar is not None:
            # the TPA pair: ±(length of a fresh sample) · z̄_prev/‖z̄_prev‖ (``rules``)
            if xp.name == "torch":
                self._tpa_rows_device(Z, st.zbar)
                self._tpa_pending = True
            else:
                norm = float((st.zbar * st.zbar).sum()) ** 0.5
                if norm > 0:
                    length = (Z[0] * Z[0]).sum() ** 0.5
                    Z[0] = st.zbar * (length / norm)
                    Z[1] = -Z[0]
                    self._tpa_pending = True
        Y = st.factor.apply(Z)
        if self._on_device:  # no copy: an in-place change shows in the version counter
            Xraw = self._solutions_from(st, Y)
            self._pending.append((Z, Xraw, None))
            self._pending_versions.append(_version(Xraw))
            return Xraw
        self._reach.append(max(float(Y.max()), -float(Y.min())))
        Xraw = xp.copy(Y) if Y is Z else Y  # in place: no temporary (n, d) array
        Xraw *= st.sigma
        Xraw += st.mean
        if self._box is None:
            self._pending.append((Z, self._copy(Xraw), None))
            return Xraw
        X = self._box.reflect(Xraw)
        self._pending.append((Z, self._copy(X), Xraw))
        return xp.copy(X) if X is Xraw else X

    def _solutions_from(self, st: State, Y):
        """X = m + σ Y on the device path, one fused pass over the (n, d) array (addcmul; a
        bfloat16 Y is widened to the mean's float32 inside it)."""
        return self._xp._module.addcmul(st.mean, st.sigma, Y)

    def _tpa_rows_device(self, Z, zbar) -> None:
        """Rows 0 and 1 of Z (in place) become the TPA pair ±‖z₀‖ z̄/‖z̄‖ (z̄ ≠ 0 as Σ w⁺ = 1:
        no host check of its norm)."""
        norm = (zbar * zbar).sum().sqrt().clamp(min=self._xp.eps(self._mdtype))
        length = self._xp.linalg.vector_norm(Z[0], dtype=self._mdtype)
        Z[0] = (zbar * (length / norm)).to(Z.dtype)
        Z[1] = -Z[0]

    def tell(self, X, fvals) -> None:
        """Update the distribution from solutions X (n×d) and their f values (n,).

        Rows of X that differ from what ``ask`` returned (repaired, rounded, injected) are mapped
        back to z = A⁻¹(x − m)/σ, shortened to ‖z‖ ≤ √d + 2d/(d + 2) (pycma's repair length).
        Non-finite f values rank last (``nan_policy="worst"``, one warning) or raise.

        With bounds, X is what ``ask`` returned (in the box): each unchanged row is ranked by
        f + (1/d) Σⱼ γⱼ (x_rawⱼ − Π(x_raw)ⱼ)² and updates with the z of its raw sample; a changed
        row by f plus the penalty on its own distance to the box.  Only rows in the box can
        become ``result.xbest``.

        torch without bounds: the update needs no host round-trip when X is the tensor ``ask``
        returned (module docstring); termination bookkeeping every ``check_every`` generations.
        """
        if self._on_device:
            return self._tell_device(X, fvals)
        X = self._solutions(X)
        n = int(X.shape[0])
        f = self._fvalues(fvals, n)
        self._last_f = f.copy()
        st, xp = self._state, self._xp
        if self._route is not None:
            Z, Xraw, tpa_pair = self._pairs_rows(X), X, False
        else:
            Z, Xraw, same = self._recover_z(X)
            tpa_pair = self._tpa_pending and n >= 2 and bool(same[0] and same[1])
        self._tpa_pending = False

        feasible = np.ones(n, dtype=bool)
        ranked_f = f
        if self._box is not None:
            ranked_f = f + self._penalty(Xraw)
            feasible = self._box.contains(X)
        finite = np.isfinite(ranked_f)
        ranked = np.where(finite, ranked_f, np.inf)
        ranked_sorted = np.sort(ranked)
        self._current_range = (float(ranked_sorted[-1] - ranked_sorted[0]) if finite.all()
                               else math.inf)
        if self._route is None and len(self._reach) == 1 and same.all():
            self._max_step = float(st.sigma) * self._reach[0]  # max |x − m| of ask's rows
        else:
            self._max_step = float(xp.abs(Xraw - st.mean).max())

        if self._route is not None:
            new = self._update_pairs(Z, f)
        else:
            new = self._update(Z, ranked, n, tpa_pair)
        self._evaluations += n
        if self._state_is_finite(new):
            self._state = new
        else:
            self._nonfinite = True
            self._state = dataclasses.replace(st, iteration=st.iteration + 1)

        if self._box is not None and not bool(self._box.contains(self._state.mean)):
            # keep the mean in the box: outside, f(R(x)) has mirror images of the optimum
            self._state = dataclasses.replace(self._state,
                                              mean=self._box.project(self._state.mean))
        candidates = np.isfinite(f) & feasible
        if candidates.any():
            i = int(np.argmin(np.where(candidates, f, np.inf)))
            self._gen_best = float(f[i])
            if f[i] < self._fbest:
                self._fbest, self._xbest = float(f[i]), xp.copy(X[i])
                self._best_iteration = self._state.iteration
        else:
            self._gen_best = math.nan
        if finite.any():
            median = 0.5 * (ranked_sorted[(n - 1) // 2] + ranked_sorted[n // 2])
            self._history.append(float(ranked_sorted[0]), float(median))
        else:
            self._history.append(math.inf, math.inf)
        if self._penalty is not None:
            self._penalty.update(f, self._state.mean, float(self._state.sigma),
                                 self._coordinate_variances(Xraw, st.mean, float(st.sigma)),
                                 recombination_weights(n).mu_eff, n)
        self._condition = self._measure_condition()
        self._recycle()

    def _tell_device(self, X, fvals) -> None:
        """``tell`` for torch without bounds: no host round-trip unless a check is due."""
        torch = self._xp._module
        unchanged = self._is_unchanged_ask(X)
        if not unchanged:
            X = self._solutions(X)
        n = int(X.shape[0])
        f = self._device_fvalues(fvals, n)
        st = self._state
        if unchanged:
            Z, Xraw = self._pending[0][0], X
            tpa_pair = self._tpa_pending and n >= 2
        else:
            Z, Xraw, same = self._recover_z(X)
            tpa_pair = self._tpa_pending and n >= 2 and bool(same[0] and same[1])
        self._tpa_pending = False
        ranked = torch.where(torch.isfinite(f), f, torch.full_like(f, math.inf))
        self._state = self._update(Z, ranked, n, tpa_pair)
        self._evaluations += n
        self._record.update(f, X, self._state.iteration)
        self._last_f = f
        self._last_gen = (ranked, Xraw, st.mean)
        self._pending, self._pending_versions = [], []
        if self._state.iteration % self._options.check_every == 0:
            self._check()

    def _check(self) -> None:
        """The host bookkeeping of the device path: the recorded generations, the finiteness of
        the state (else back to the last checked one), the last generation's f-range and step
        length, the condition number."""
        self._sync_record()
        st = self._state
        f_range, max_step, finite = self._check_values(st, *self._last_gen)
        self._apply_check(f_range, max_step, finite, st)

    def _check_values(self, st: State, ranked, Xraw, old_mean) -> tuple[float, float, bool]:
        """(f-range of the last generation, its largest |x − m| step, whether ``st`` is finite),
        in one transfer from the device."""
        torch = self._xp._module
        probe = st.factor.apply(torch.ones(self._d, dtype=self._dtype, device=self._device))
        finite = (torch.isfinite(st.sigma) & (st.sigma > 0) & torch.isfinite(st.mean).all()
                  & torch.isfinite(probe).all())
        f_range = torch.where(torch.isfinite(ranked).all(), ranked.max() - ranked.min(),
                              torch.full_like(ranked[0], math.inf))
        host = torch.stack([f_range.double(), (Xraw - old_mean).abs().max().double(),
                            finite.double()]).cpu().numpy()
        return float(host[0]), float(host[1]), bool(host[2])

    def _apply_check(self, f_range: float, max_step: float, finite: bool, checked: State) -> None:
        """The host side of a check (``_check``): the last f-range and step length, ``checked``
        kept as the state to go back to, or the state put back to the last one if not finite."""
        st = self._state
        self._current_range, self._max_step = f_range, max_step
        if finite:
            self._checked_state = checked
        else:
            self._nonfinite = True
            self._state = dataclasses.replace(self._checked_state, iteration=st.iteration)
        period = max(1, self._d // 20)
        if self.iterations // period > self._condition_iteration // period:
            self._condition_iteration = self.iterations
            self._condition = self._measure_condition(always=True)

    def _sync_record(self) -> None:
        """Move the device record of the generations since the last sync to the host."""
        if not self._on_device or not self._record.pending:
            return
        self._apply_record(self._record.sync())

    def _apply_record(self, rec: dict) -> None:
        """The host copy of a device record (``termination.DeviceRecord.sync``)."""
        self._fbest, self._best_iteration = rec["fbest"], rec["best_iteration"]
        self._xbest, self._gen_best = rec["xbest"], rec["gen_best"]
        for best, median in rec["history"]:
            self._history.append(best, median)
        if rec["nonfinite"] and not self._nan_warned:
            warnings.warn("fvals has non-finite values (NaN or inf); they are ranked worst "
                          "(nan_policy='worst'). Further occurrences are not reported.",
                          NaturalESWarning, stacklevel=4)
            self._nan_warned = True

    # -- the pairs route (``pairs``) -------------------------------------------------------------
    def _ask_pairs(self, n: int):
        """[m; m + σAZ; m − σAZ] for n_p fresh rows Z: the mean first, then the pairs."""
        if n != self._n:
            raise ValueError(f"curvature='pairs' asks for exactly 1 + 2·pairs = {self._n} points a "
                             f"generation, got n = {n}")
        if self._pending:
            raise RuntimeError("curvature='pairs': tell the last generation before asking again")
        st, xp = self._state, self._xp
        Z = self._draw(self._route.pairs)
        V = self._pair_directions(Z)
        X = xp.concat([st.mean[None], st.mean + V, st.mean - V], axis=0)
        self._pending.append((Z, self._copy(X), None))
        return X

    def _draw(self, rows: int):
        """(rows, d) normal numbers; with ``draw_ahead`` the next block of that size is started."""
        Z = self._rng.normal((rows, self._d), dtype=self._dtype)
        if self._options.draw_ahead:
            self._rng.prefetch((rows, self._d), dtype=self._dtype)
        return Z

    def _pair_directions(self, Z):
        """vᵢ = σ A zᵢ rounded to float32 values: the pair buffer stores directions in float32,
        and a direction it can hold exactly is the one whose pair was evaluated."""
        V = self._state.sigma * self._state.factor.apply(Z)
        return V.astype(np.float32).astype(V.dtype)

    def _pairs_rows(self, X):
        """The generation's Z, after checking that X is what ``ask`` returned."""
        if len(self._pending) != 1 or not bool((X.shape == self._pending[0][1].shape)
                                               and (X == self._pending[0][1]).all()):
            raise ValueError("curvature='pairs' needs the points ask() returned, unchanged and in "
                             "order (the mean, then the mirrored pairs)")
        return self._pending[0][0]

    def _update_pairs(self, Z, f: np.ndarray) -> State:
        st = self._state
        factor = st.factor
        V = self._pair_directions(Z)
        step = self._route.update(st.mean, float(st.sigma), V, f, factor.solve)
        if step.model is not None:
            factor = pairs_route.whitening_factor(step.model, factor)
        return dataclasses.replace(st, mean=step.mean, sigma=step.sigma, factor=factor,
                                   iteration=st.iteration + 1)

    def _update(self, Z, ranked, n: int, tpa_pair: bool) -> State:
        """One step of the rule, with the f values and the rule's tables in the factor's backend."""
        params = self._parameters(n)
        if self._xp.name == "torch":
            if n not in self._device_params:
                self._device_params[n] = rules.on_device(params, self._device)
            params = self._device_params[n]
            if not B.is_torch(ranked):
                ranked = self._xp.asarray(ranked, device=self._device)
        return rules.update(self._state, Z, ranked, params, tpa_pair)

    # -- termination and results ----------------------------------------------------------------
    def stop(self) -> dict:
        """The termination criteria that fired, ``{name: threshold}``; empty while running.

        See ``termination`` for the criteria and ``Options`` for their thresholds.
        """
        out: dict[str, Any] = {}
        opts = self._options  # on a device: the values of the last check (``check_every``)

        def add(name, fired_and_value, threshold):
            if fired_and_value[0]:
                out[name] = threshold

        add("ftarget", termination.ftarget(self._fbest, opts.ftarget), opts.ftarget)
        add("maxfevals", termination.maxfevals(self._evaluations, self._maxfevals),
            self._maxfevals)
        add("maxiter", termination.maxiter(self.iterations, self._maxiter), self._maxiter)
        if self.iterations > 0:
            add("tolfun", termination.tolfun(self._current_range, self._history, self._tolfun),
                self._tolfun)
            add("tolx", termination.tolx(self._max_step, self._tolx), self._tolx)
            add("tolstagnation", termination.tolstagnation(
                self._history, self.iterations, self._best_iteration, self._tolstagnation),
                self._tolstagnation)
            add("tolcondition", termination.tolcondition(self._condition, self._tolcondition),
                self._tolcondition)
        if self._nonfinite:
            out["nonfinite"] = True
        out.update(self._extra_stop)
        return out

    @property
    def result(self) -> Result:
        """xbest, fbest, xmean, sigma, evaluations, iterations, stop."""
        self._sync_record()
        xbest = None if self._xbest is None else self._xp.copy(self._xbest)
        return Result(xbest, self._fbest, self.mean, self.sigma, self._evaluations,
                      self.iterations, self.stop())

    def disp(self, header: bool | None = None) -> str:
        """Print one progress line (pycma-like; the column header before the first line).

        Columns: iteration, evaluations, best f of the last generation, axis ratio of A, σ,
        min and max of the coordinate standard deviations σ√diag(AAᵀ), elapsed time.
        Returns the printed text.
        """
        self._sync_record()
        if header is None:
            header = self._disp_lines == 0
        lines = []
        if header:
            lines.append("Iterat #Fevals   function value  axis ratio  sigma  min&max std  t[m:s]")
        sv = _singular_values(self._state.factor)
        std = _coordinate_std(self._state.factor)
        axis = float(sv.max() / sv.min()) if sv is not None else math.nan
        s = self.sigma
        lo, hi = ((s * float(std.min()), s * float(std.max())) if std is not None
                  else (math.nan, math.nan))
        elapsed = time.perf_counter() - self._t0
        minutes, seconds = divmod(elapsed, 60)
        lines.append(f"{self.iterations:>6d} {self._evaluations:>7d} {self._gen_best:>+.9e} "
                     f"{axis:>9.1e} {s:>8.2e} {lo:>6.0e} {hi:>6.0e} {int(minutes)}:{seconds:04.1f}")
        text = "\n".join(lines)
        print(text, flush=True)
        self._disp_lines += 1
        return text

    def _add_stop(self, name: str, value: Any = True) -> None:
        """Record an external termination reason (``minimize`` uses it for its callback)."""
        if name not in termination.CRITERIA:
            raise ValueError(f"unknown termination criterion {name!r}")
        self._extra_stop[name] = value

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the identical run: distribution, paths, the momentum
        buffer ("velocity", a ``Tangent.state_dict``; None without momentum), counters, histories,
        pending asked solutions and the random stream's position (arrays copied)."""
        self._sync_record()
        st, xp = self._state, self._xp
        return {
            "version": _STATE_VERSION,
            "class": type(self).__name__,
            "options": self._options.to_dict(),
            "dim": self._d,
            "backend": xp.name,
            "mean": xp.copy(st.mean),
            "sigma": float(st.sigma),
            "factor": st.factor.state_dict(),
            "p_sigma": xp.copy(st.p_sigma),
            "p_c": xp.copy(st.p_c),
            "iteration": st.iteration,
            "tpa_s": float(st.tpa_s),
            "zbar": None if st.zbar is None else xp.copy(st.zbar),
            "velocity": None if st.velocity is None else st.velocity.state_dict(),
            "tpa_pending": self._tpa_pending,
            "evaluations": self._evaluations,
            "fbest": self._fbest,
            "xbest": None if self._xbest is None else xp.copy(self._xbest),
            "best_iteration": self._best_iteration,
            "gen_best": self._gen_best,
            "current_range": self._current_range,
            "max_step": self._max_step,
            "condition": self._condition,
            "nonfinite": self._nonfinite,
            "nan_warned": self._nan_warned,
            "extra_stop": dict(self._extra_stop),
            "history": self._history.state_dict(),
            "route": None if self._route is None else self._route.state_dict(),
            "pending": [(xp.copy(Z), xp.copy(X), None if R is None else xp.copy(R))
                        for Z, X, R in self._asked()],
            "reach": list(self._reach),
            "rng": self._rng.state_dict(),
            "bounds": None if self._box is None else {
                **self._box.state_dict(), "penalty": self._penalty.state_dict()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the run saved by ``state_dict`` (options, distribution, counters, RNG).

        The options of the saved run replace this object's; its dimension must match.
        """
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError("not a NaturalES state_dict (or one of another version)")
        if state["dim"] != self._d:
            raise ValueError(f"the state_dict is for dimension {state['dim']}, this strategy has "
                             f"{self._d}")
        fresh = type(self)._from_state(state)
        self.__dict__.update(fresh.__dict__)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> NaturalES:
        """A new strategy continuing the run saved by ``state_dict``."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError("not a NaturalES state_dict (or one of another version)")
        return cls._from_state(state)

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> NaturalES:
        options = dict(state["options"])
        factor = structures.from_state_dict(state["factor"])
        for k in ("rank", "blocks", "shape", "backend", "dtype", "device"):
            options.pop(k)
        saved_bounds = state.get("bounds")
        box = None
        if saved_bounds is not None:
            box = Box(np.asarray(saved_bounds["lower"]), np.asarray(saved_bounds["upper"]))
        obj = NaturalES.__new__(cls)
        # built without bounds: the box and the penalty's state come from the saved state
        NaturalES.__init__(obj, state["mean"], state["sigma"], factor, **options)
        if box is not None:
            obj._box, obj._penalty = box, BoundPenalty(box)
            obj._penalty.load_state_dict(saved_bounds["penalty"])
            obj._on_device = False
        xp = obj._xp
        obj._options = Options(**state["options"])

        def arr(x, dtype=obj._mdtype):
            return xp.asarray(x, dtype=dtype, device=obj._device)

        zbar, velocity = state.get("zbar"), state.get("velocity")
        obj._state = State(arr(state["mean"]), obj._scalar(state["sigma"]), factor,
                           arr(state["p_sigma"]), arr(state["p_c"]), int(state["iteration"]),
                           obj._scalar(state.get("tpa_s", 0.0)), None if zbar is None else arr(zbar),
                           None if velocity is None else tangent_from_state_dict(factor, velocity))
        obj._checked_state = obj._state
        obj._condition_iteration = obj._state.iteration
        obj._tpa_pending = bool(state.get("tpa_pending", False))
        obj._evaluations = int(state["evaluations"])
        obj._fbest = float(state["fbest"])
        obj._xbest = None if state["xbest"] is None else arr(state["xbest"])
        obj._best_iteration = int(state["best_iteration"])
        obj._gen_best = float(state["gen_best"])
        obj._current_range = float(state["current_range"])
        obj._max_step = float(state["max_step"])
        obj._condition = state["condition"]
        obj._nonfinite = bool(state["nonfinite"])
        obj._nan_warned = bool(state["nan_warned"])
        obj._extra_stop = dict(state["extra_stop"])
        obj._history.load_state_dict(state["history"])
        obj._pending = [(arr(p[0], obj._dtype), arr(p[1]),
                         None if len(p) < 3 or p[2] is None else arr(p[2]))
                        for p in state["pending"]]
        obj._reach = [float(r) for r in state.get("reach", [])]
        if obj._on_device:
            obj._pending_versions = [_version(p[1]) for p in obj._pending]
        obj._record = termination.DeviceRecord(obj._fbest, obj._xbest, obj._best_iteration)
        obj._rng.load_state_dict(state["rng"])
        if state.get("route") is not None:
            obj._route = pairs_route.PairsRoute.from_state_dict(state["route"])
        return obj

    # -- internals ------------------------------------------------------------------------------
    def _parameters(self, n: int):
        if n not in self._params:
            self._params[n] = rules.parameters(self._d, n, self._state.factor.num_parameters,
                                               self._options)
        return self._params[n]

    def _scalar(self, x):
        """σ (or s) in the state's form: a Python float (numpy), a 0-d tensor of the mean's dtype
        on the device (torch)."""
        if self._xp.name == "numpy":
            return float(x)
        return self._xp.asarray(float(x), dtype=self._mdtype, device=self._device)

    def _is_unchanged_ask(self, X) -> bool:
        """X is the tensor the one pending ``ask`` returned, not changed since (device path)."""
        return (len(self._pending) == 1 and X is self._pending[0][1] and X.shape[0] >= 2
                and self._pending_versions[0] is not None
                and _version(X) == self._pending_versions[0])

    def _asked(self) -> list:
        """The pending (Z, X asked, raw X or None); on the device path a returned tensor changed
        in place since is recomputed from its Z (the same operations as ``ask``)."""
        if not self._on_device:
            return self._pending
        st, out = self._state, []
        for (Z, X, R), version in zip(self._pending, self._pending_versions):
            if version is None or _version(X) != version:
                X = self._solutions_from(st, st.factor.apply(Z))
            out.append((Z, X, R))
        return out

    def _device_fvalues(self, fvals, n: int):
        """f as a tensor on the strategy's device (floating point, the values unchanged)."""
        torch = self._xp._module
        if not B.is_torch(fvals):
            return self._xp.asarray(self._fvalues(fvals, n), device=self._device)
        f = fvals.detach()
        if f.is_complex():
            raise ValueError("fvals must be real numbers, one per row of X; got complex values")
        if f.ndim != 1:
            raise ValueError(f"fvals must be 1-D with one value per solution, got shape "
                             f"{tuple(f.shape)}")
        if f.shape[0] != n:
            raise ValueError(f"len(fvals) = {f.shape[0]} does not match len(X) = {n}: give one f "
                             f"value per row of X")
        f = f.to(self._device)
        if not f.is_floating_point():
            f = f.double()
        elif f.dtype in (torch.bfloat16, torch.float16):
            f = f.float()  # exact: the same order and ties
        if self._options.nan_policy == "raise":  # a host check, every generation
            bad = ~torch.isfinite(f)
            if bool(bad.any()):
                rows = torch.nonzero(bad).flatten()[:10].tolist()
                raise ValueError(f"fvals has {int(bad.sum())} non-finite value(s) (NaN or inf) at "
                                 f"rows {rows}; pass nan_policy='worst' to rank them last instead")
        return f

    def _solutions(self, X):
        xp = self._xp
        if B.is_torch(X) and xp.name != "torch":
            raise TypeError("X is a torch tensor but the strategy runs on numpy (x0 was numpy); "
                            "pass X as a numpy array")
        if isinstance(X, (list, tuple)) and len(X) and B.is_torch(X[0]) and xp.name == "torch":
            X = xp.stack(list(X))
        try:
            X = xp.asarray(X, dtype=self._mdtype, device=self._device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"X must be an (n, {self._d}) array of real numbers") from err
        if X.ndim != 2 or X.shape[1] != self._d:
            raise ValueError(f"X must have shape (n, {self._d}), got {tuple(X.shape)}")
        if X.shape[0] < 2:
            raise ValueError(f"tell needs at least 2 solutions to rank, got {X.shape[0]}")
        if not xp.all_finite(X):
            raise ValueError("X has non-finite entries (NaN or inf)")
        return X

    def _fvalues(self, fvals, n: int) -> np.ndarray:
        try:
            if B.is_torch(fvals):
                f = B.get_backend("torch").to_numpy(fvals)
            elif isinstance(fvals, (list, tuple)):
                f = [float(v) for v in fvals]
            else:
                f = fvals
            f = np.asarray(f, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"fvals must be real numbers, one per row of X; got "
                             f"{type(fvals).__name__}") from err
        if f.ndim != 1:
            raise ValueError(f"fvals must be 1-D with one value per solution, got shape {f.shape}")
        if f.shape[0] != n:
            raise ValueError(f"len(fvals) = {f.shape[0]} does not match len(X) = {n}: give one f "
                             f"value per row of X")
        bad = ~np.isfinite(f)
        if bad.any():
            if self._options.nan_policy == "raise":
                raise ValueError(f"fvals has {int(bad.sum())} non-finite value(s) (NaN or inf) at "
                                 f"rows {np.flatnonzero(bad)[:10].tolist()}; pass "
                                 f"nan_policy='worst' to rank them last instead")
            if not self._nan_warned:
                warnings.warn("fvals has non-finite values (NaN or inf); they are ranked worst "
                              "(nan_policy='worst'). Further occurrences are not reported.",
                              NaturalESWarning, stacklevel=3)
                self._nan_warned = True
        return f

    # -- ask's row copies, reused across generations: a fresh (n, d) array costs page faults -----------
    def _copy(self, X):
        """An internal copy of ask's rows, to see in ``tell`` which rows came back changed (numpy: in
        an array a previous ``tell`` has freed, when one of the shape is there)."""
        if self._xp.name != "numpy":
            return self._xp.copy(X)
        for i, spare in enumerate(self._spare):
            if spare.shape == X.shape and spare.dtype == X.dtype:
                out = self._spare.pop(i)
                np.copyto(out, X)
                return out
        return X.copy()

    def _recycle(self) -> None:
        """After ``tell``: the copies of the asked rows are read by nothing else, keep two for reuse
        (z is not: a tangent, e.g. a momentum buffer, may hold the rows it was computed from)."""
        if self._xp.name == "numpy":
            self._spare = ([X for _, X, _ in self._pending] + self._spare)[:2]
        self._pending, self._reach = [], []

    def _recover_z(self, X):
        """(Z, Xraw, same) for the rows of X: z and the raw sample kept from ``ask`` where the row
        is unchanged (``same``, numpy bool (n,)); else z = A⁻¹(x − m)/σ (shortened, see ``tell``)
        and the row itself."""
        xp, st = self._xp, self._state
        n = int(X.shape[0])
        if self._pending:
            asked = self._asked()
            if len(asked) == 1:  # one ask per generation (the usual case): no copies
                Zp, Xp, Rp = asked[0]
                Rp = Xp if Rp is None else Rp
            else:
                Zp = xp.concat([Z for Z, _, _ in asked], axis=0)
                Xp = xp.concat([Xa for _, Xa, _ in asked], axis=0)
                Rp = xp.concat([Xa if R is None else R for _, Xa, R in asked], axis=0)
        else:
            Zp = Xp = Rp = None
        m = min(n, 0 if Xp is None else int(Xp.shape[0]))
        same = np.zeros(n, dtype=bool)
        if m:
            same[:m] = xp.to_numpy((X[:m] == Xp[:m]).all(-1))
        if same.all():
            return (Zp, Rp, same) if n == int(Zp.shape[0]) else (Zp[:n], Rp[:n], same)
        changed = np.flatnonzero(~same)
        idx = changed if xp.name == "numpy" else xp.asarray(changed, device=self._device)
        Zc = st.factor.solve((X[idx] - st.mean) / st.sigma)
        norms = xp.to_numpy((Zc * Zc).sum(-1) ** 0.5)
        cap = defaults.repair_length(self._d)
        scale = np.where(norms > cap, cap / np.maximum(norms, 1e-300), 1.0)
        Zc = Zc * xp.asarray(scale, dtype=self._dtype, device=self._device)[:, None]
        if m == 0:
            return Zc, X, same
        Z = xp.concat([Zp[:m], xp.zeros((n - m, self._d), dtype=self._dtype,
                                        device=self._device)], axis=0)
        Z[idx] = Zc
        Xraw = xp.concat([Rp[:m], X[m:]], axis=0)
        Xraw[idx] = X[idx]
        return Z, Xraw, same

    def _coordinate_variances(self, Xraw, old_mean, old_sigma: float) -> np.ndarray:
        """diag(A Aᵀ) (numpy): exact where cheap, else estimated from the generation's raw
        samples as meanᵢ (xᵢ − m)²/σ² (unbiased, taken before the mean moved)."""
        std = _coordinate_std(self._state.factor)
        if std is not None:
            return std * std
        D = self._xp.to_numpy(Xraw - old_mean).astype(np.float64)
        return (D * D).mean(axis=0) / old_sigma ** 2

    def _uses_tpa(self) -> bool:
        p = self._parameters(self._n)
        return isinstance(p, rules.PathParameters) and p.step_size == "tpa"

    def _state_is_finite(self, s: State) -> bool:
        """σ, m and A finite (``Factor.is_finite``)."""
        sigma = float(s.sigma)
        if not (math.isfinite(sigma) and sigma > 0 and self._xp.all_finite(s.mean)):
            return False
        return bool(s.factor.is_finite())

    def _measure_condition(self, always: bool = False) -> float | None:
        """cond(AAᵀ), measured every max(1, d/20) generations (d ≤ 1000 or diagonal)."""
        if not self._tolcondition or math.isinf(self._tolcondition):
            return None
        if not always and self.iterations % max(1, self._d // 20):
            return self._condition
        sv = _singular_values(self._state.factor)
        if sv is None:
            return None
        return float((sv.max() / sv.min()) ** 2) if sv.min() > 0 else math.inf


class XNES(NaturalES):
    """Exponential NES (Glasmachers et al. 2010): dense A, the textbook xNES rule and defaults.

    ``NaturalES(x0, sigma0, "full", method="xnes")``; algorithms.md §2.  For the faster default rule
    use ``NaturalES``.
    """

    def __init__(self, x0, sigma0, *, popsize=None, seed=None, bounds=None, **options):
        _fixed(options, "XNES")
        super().__init__(x0, sigma0, "full", popsize=popsize, seed=seed, bounds=bounds,
                         method="xnes", **options)


class SNES(NaturalES):
    """Separable NES (Schaul et al. 2011): diagonal A, the textbook SNES rule and defaults.

    ``NaturalES(x0, sigma0, "diagonal", method="xnes")``; algorithms.md §2.
    """

    def __init__(self, x0, sigma0, *, popsize=None, seed=None, bounds=None, **options):
        _fixed(options, "SNES")
        super().__init__(x0, sigma0, "diagonal", popsize=popsize, seed=seed, bounds=bounds,
                         method="xnes", **options)


def _pairs_route(opts: Options, factor: Factor, xp, box, d: int, seed) -> pairs_route.PairsRoute | None:
    """The ``PairsRoute`` for ``curvature="pairs"`` (the default of the symmetric low-rank
    structures), else None; clear errors where the route cannot run."""
    symmetric = isinstance(factor, structures.SymmetricLowRank)
    curvature = opts.curvature if opts.curvature is not None else ("pairs" if symmetric else "ranks")
    if curvature == "ranks":
        if opts.pairs is not None or opts.pairs_capacity is not None:
            raise TypeError("pairs= and pairs_capacity= are options of curvature='pairs'")
        return None
    if not symmetric:
        raise ValueError(f"curvature='pairs' needs the structure 'lowrank-precision' or 'lowrank-cov', "
                         f"got {factor.name!r}")
    if opts.momentum:
        raise ValueError(f"momentum is an option of curvature='ranks' (the pairs route has no shape "
                         f"tangent to average), got momentum={opts.momentum!r} with curvature='pairs'")
    if xp.name != "numpy":
        raise ValueError("curvature='pairs' runs on numpy only; use backend='numpy' (or "
                         "curvature='ranks' on torch)")
    if box is not None:
        raise ValueError("curvature='pairs' does not take bounds; use curvature='ranks'")
    if opts.method != "path" or opts.mirrored:
        raise ValueError("method= and mirrored= are options of curvature='ranks'")
    if opts.pairs is not None:
        n_pairs = opts.pairs
    elif opts.popsize is not None:
        n_pairs = max(1, (opts.popsize - 1) // 2)
    else:
        n_pairs = max(2, defaults.popsize(d) // 2)
    side = "precision" if factor.side < 0 else "covariance"
    return pairs_route.PairsRoute(d, factor.rank, side, n_pairs, opts.pairs_capacity, seed=seed)


def _check_transport(factor: Factor) -> None:
    """ValueError unless ``factor.transport`` exists (momentum carries its buffer with it)."""
    try:
        factor.transport(factor.zero_tangent(), factor)
    except NotImplementedError as err:
        raise ValueError(f"momentum > 0 needs a structure whose Factor.transport exists; "
                         f"{factor.name!r} has none ({err}); use momentum=0 or another structure "
                         f"(full, diagonal, blockdiag, kronecker, lowrank, spectral)") from err


def _fixed(options: dict, name: str) -> None:
    for key in ("method", "structure"):
        if key in options:
            raise TypeError(f"{name} fixes {key}; use NaturalES to choose it")


# -- helpers ---------------------------------------------------------------------------------------


def _mean_dtype(xp: B.Backend, dtype):
    """The dtype of m, σ and the paths: float32 for a half-precision factor, else its dtype."""
    if xp.name == "torch" and dtype in (xp.bfloat16, xp.float16):
        return xp.float32
    return dtype


def _version(x) -> int | None:
    """The in-place version counter of a tensor (None for inference tensors, which have none)."""
    try:
        return x._version
    except RuntimeError:
        return None


def _is_float_dtype(xp: B.Backend, dtype) -> bool:
    if xp.name == "numpy":
        return np.issubdtype(np.dtype(dtype), np.floating)
    return bool(getattr(dtype, "is_floating_point", False))


def _check_x0(x0, xp: B.Backend, dtype, device):
    if B.is_torch(x0) and xp.name == "numpy":
        x0 = B.get_backend("torch").to_numpy(x0)
    try:
        arr = xp.asarray(x0, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"x0 must be a 1-D array of real numbers, got {x0!r:.200}") from err
    if arr.ndim != 1 or arr.shape[0] < 1:
        raise ValueError(f"x0 must be a non-empty 1-D array, got shape {tuple(arr.shape)}")
    if not xp.all_finite(arr):
        raise ValueError("x0 has non-finite entries (NaN or inf); give a finite starting point")
    return xp.copy(arr)


def _check_x0_in_box(mean, box: Box) -> None:
    if bool(box.contains(mean)):
        return
    x = mean.tolist() if hasattr(mean, "tolist") else list(mean)
    j = next(j for j, v in enumerate(x) if not box.lower[j] <= v <= box.upper[j])
    raise ValueError(f"x0[{j}] = {x[j]!r} lies outside the bounds [{float(box.lower[j])!r}, "
                     f"{float(box.upper[j])!r}]; start inside the box")


def _check_sigma0(sigma0) -> float:
    if B.is_torch(sigma0) or isinstance(sigma0, np.ndarray):
        if sigma0.ndim != 0 and sigma0.shape != (1,):
            raise ValueError(f"sigma0 must be a scalar step size, got shape {tuple(sigma0.shape)}")
        sigma0 = float(sigma0.reshape(()) if sigma0.ndim else sigma0)
    if isinstance(sigma0, bool) or not isinstance(sigma0, (int, float, np.floating, np.integer)):
        raise ValueError(f"sigma0 must be a positive number, got {sigma0!r}")
    sigma0 = float(sigma0)
    if not (math.isfinite(sigma0) and sigma0 > 0):
        raise ValueError(f"sigma0 must be a finite number > 0, got {sigma0!r}")
    return sigma0


def _singular_values(factor: Factor) -> np.ndarray | None:
    """Singular values of A (numpy float64), or None where only the generic SVD of ``to_dense()``
    is available and it would dominate the generation: d > 1000 for a dense A, d > 200 for a
    structured one (its generation costs O(n d k); a d×d SVD every d/20 generations would cost
    more — measured at d = 1000: 5.2 against 1.8 ms a generation)."""
    generic = type(factor).singular_values is Factor.singular_values or (
        isinstance(factor, structures.SymmetricLowRank) and not factor.scalar_diagonal)
    limit = 1000 if isinstance(factor, structures.Dense) else 200
    if factor.dim > limit and generic:
        return None
    return factor.xp.to_numpy(factor.singular_values()).astype(np.float64)


def _coordinate_std(factor: Factor) -> np.ndarray | None:
    """√diag(AAᵀ) (numpy), or None for d > 1000 (the d×d ``to_dense()`` would be too large)."""
    if isinstance(factor, structures.Diagonal):
        return np.abs(factor.xp.to_numpy(factor.a)).astype(np.float64)
    if factor.dim > 1000:
        return None
    A = factor.xp.to_numpy(factor.to_dense()).astype(np.float64)
    return np.sqrt((A * A).sum(axis=1))
