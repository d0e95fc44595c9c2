"""Options of ``NaturalES``: one frozen dataclass, validated once, ``None`` meaning "the default".

Every learning rate and tolerance left at ``None`` is computed by ``defaults`` from the dimension,
the population size and the structure's number of parameters; give a number to override it.
Unknown option names raise ``TypeError`` listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Options", "METHODS", "NAN_POLICIES", "TRANSPORTS", "RETRACTIONS", "STEP_SIZES", "CURVATURES"]

METHODS = ("path", "xnes")
NAN_POLICIES = ("worst", "raise")
TRANSPORTS = ("none", "pc", "both")
RETRACTIONS = ("expm", "truncated")
STEP_SIZES = ("csa", "tpa")
CURVATURES = ("ranks", "pairs")


@dataclass(frozen=True)
class Options:
    """Everything that configures a ``NaturalES`` run besides x0, σ0, the structure and the seed.

    Update rule:
        method: ``"path"`` (default) — the path-based rule of algorithms.md §2b: cumulative step-size
            adaptation (CSA), a rank-one evolution path, active (negative) weights, all in local
            coordinates z = A⁻¹(x − m)/σ and projected on the structure by ``natural_gradient``;
            ``"xnes"`` — the textbook xNES / SNES rule (algorithms.md §2, Glasmachers et al. 2010).
        constants: ``"pycma"`` (default) or ``"tutorial"``: which CMA constant set the path rule
            uses (``defaults`` lists both; algorithms.md §2b).
        popsize: n, the number of samples per generation (default 4 + ⌊3 ln d⌋).
        mirrored: sample z and −z in pairs.  Halves the sampling noise of the mean for the
            xNES rule; with the path rule's positive-only mean weights a mirrored pair in the μ best
            cancels, which biases σ downwards (off by default).
        active: use negative weights for the worst half (path rule).
        hsig: stall the rank-one path while ‖p_σ‖ is large (pycma's h_σ; path rule).
        step_size: the path rule's σ update, ``"csa"`` (cumulative step-size adaptation, the
            default) or ``"tpa"`` (two-point adaptation; ``rules``, ``defaults.step_size_rule``).
        transport: carry the z-space paths along when A moves, p ← A_new⁻¹ A_old p:
            ``"none"`` (default, as measured in algorithms.md §2b), ``"pc"`` or ``"both"``.
            Costs a solve with A per generation.
        rate_multiplier: multiplies the default c₁ and c_μ (path rule; default 1.5, 2 for the
            diagonal structure, see ``defaults.rate_multiplier``; 1 gives CMA-ES's rates exactly).
        c_m, c_sigma, d_sigma, c_c, c_1, c_mu, alpha_minus: path-rule constants (``defaults``).
        eta_m, eta_sigma, eta_A: xNES learning rates (``defaults``).
        momentum: α in [0, 1): the shape update steps along V_t = α T(V_{t−1}) + (1 − α) M_t, an
            average of the generations' shape tangents M_t kept in local coordinates and carried to
            the new A by ``Factor.transport`` (``rules``; seed 000).  Both rules; the mean and σ keep
            their own updates.  0 (default) is the rule without momentum.  Needs a structure whose
            ``transport`` exists (not the symmetric low-rank ones) and ``curvature="ranks"``.
        retraction, order: the map of A ← A·h(½M): ``"expm"`` (exact) or ``"truncated"`` of the
            given order (matmuls only).  Default ``"expm"``, and ``"truncated"`` for a bfloat16 /
            float16 factor (inverse-free; an even order keeps A invertible: e_p(x) > 0 for every
            real x, and the natural gradient of the symmetric structures is symmetric).
    Curvature route (the symmetric low-rank structures ``"lowrank-precision"`` / ``"lowrank-cov"``):
        curvature: ``"ranks"`` — the rank-based rule above on the structure; ``"pairs"`` — the
            value-based route of ``pairs``: mirrored pairs around the mean, a least-squares
            low-rank model of the Hessian fitted to their second differences, whitening by it, a
            Newton step in the pairs' span.  Not invariant to monotone transformations of f.
            Default (None): ``"pairs"`` for the symmetric low-rank structures (measured:
            benchmarks/RESULTS.md, "High dimension"), ``"ranks"`` for every other structure (the
            only route they have).  The pairs route is numpy-only and takes no bounds.
        pairs: n_p, mirrored pairs per generation with ``curvature="pairs"`` (a generation asks for
            1 + 2 n_p points: the mean first; default ⌊popsize/2⌋ ≥ 2).
        pairs_capacity: the pair buffer's size (default 8·rank·d pairs, at most ¾ of the
            physical memory; (4·d + 16)·capacity bytes: directions are stored in float32).  Once
            a model is accepted the buffer stops growing: new pairs replace the oldest.
    Speed:
        sampling_threads: t, with the numpy backend: draws of the generation's normal numbers are
            split by rows over t generators filled concurrently (``backend.RandomStream``), so t
            cores share the sampling, the largest cost of a cheap generation at large d.  A seed
            gives the same run for the same t; t = 1 (default) is the single-stream run.
        draw_ahead: with the numpy backend, ``ask`` starts drawing the next generation's normal
            numbers in a background thread, so that the draw overlaps the evaluation of f and
            ``tell`` on a second core (``RandomStream.prefetch``).  Changes no number: the run is
            the one without it, checkpoints included.  It pays when successive ``ask`` calls take
            the same n (a block of another size is thrown away and drawn again), and all streams
            of a process share one drawing thread.  Default False.
    Robustness:
        nan_policy: ``"worst"`` (default: NaN and ±inf f values rank last, with one warning) or
            ``"raise"`` (ValueError).
    Termination (``termination`` for the meaning; math.inf or 0 switches one off):
        maxfevals, maxiter, ftarget, tolfun, tolx, tolstagnation, tolcondition.
        check_every: k, with the torch backend: the bookkeeping that needs the host (the
            termination criteria other than maxfevals/maxiter, the finiteness check of the new
            state, ``result`` values between reads) runs every k generations, so the k − 1
            generations between need no device-to-host round-trip; the best-so-far solution is
            tracked on the device meanwhile.  k = 1 (default) checks every generation.  With
            k > 1 a criterion fires up to k − 1 generations late, and a non-finite update goes
            back to the last checked state.  numpy runs do their bookkeeping every generation.
    Structure keywords, passed to ``structures.make``:
        rank, blocks, shape.
    Arrays:
        backend (``"numpy"`` / ``"torch"``), dtype, device: default from x0.
    """

    method: str = "path"
    constants: str = "pycma"
    popsize: int | None = None
    mirrored: bool = False
    active: bool = True
    hsig: bool = True
    step_size: str | None = None
    transport: str = "none"
    rate_multiplier: float | None = None
    c_m: float | None = None
    c_sigma: float | None = None
    d_sigma: float | None = None
    c_c: float | None = None
    c_1: float | None = None
    c_mu: float | None = None
    alpha_minus: float | None = None
    eta_m: float | None = None
    eta_sigma: float | None = None
    eta_A: float | None = None
    momentum: float = 0.0
    retraction: str = "expm"
    order: int = 2
    nan_policy: str = "worst"
    maxfevals: float | None = None
    maxiter: float | None = None
    ftarget: float | None = None
    tolfun: float | None = None
    tolx: float | None = None
    tolstagnation: int | None = None
    tolcondition: float | None = None
    check_every: int = 1
    sampling_threads: int = 1
    draw_ahead: bool = False
    curvature: str | None = None
    pairs: int | None = None
    pairs_capacity: int | None = None
    rank: int | None = None
    blocks: Any = None
    shape: Any = None
    backend: str | None = None
    dtype: Any = None
    device: Any = None

    @classmethod
    def from_kwargs(cls, **kwargs) -> Options:
        """``Options(**kwargs)`` with a TypeError naming unknown options and the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; valid options: {', '.join(sorted(names))}")
        return cls(**kwargs)

    def replace(self, **kwargs) -> Options:
        return dataclasses.replace(self, **kwargs)

    def structure_keywords(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("rank", "blocks", "shape")
                if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        """Plain values (dtype and device as strings) for ``state_dict``."""
        out = dataclasses.asdict(self)
        for k in ("dtype", "device"):
            if out[k] is not None:
                out[k] = str(out[k]).removeprefix("torch.")
        return out

    def __post_init__(self):
        _choice("method", self.method, METHODS)
        _choice("constants", self.constants, ("pycma", "tutorial"))
        _choice("nan_policy", self.nan_policy, NAN_POLICIES)
        _choice("transport", self.transport, TRANSPORTS)
        if self.step_size is not None:
            _choice("step_size", self.step_size, STEP_SIZES)
        _choice("retraction", self.retraction, RETRACTIONS)
        if self.popsize is not None:
            _integer("popsize", self.popsize, minimum=2)
        if self.order not in (1, 2, 3, 4):
            raise ValueError(f"order must be one of 1, 2, 3, 4, got {self.order!r}")
        for name in ("mirrored", "active", "hsig", "draw_ahead"):
            if not isinstance(getattr(self, name), (bool, int)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("rate_multiplier", "c_m", "c_sigma", "d_sigma", "eta_m", "eta_sigma", "eta_A"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        for name in ("c_c", "c_1", "c_mu", "alpha_minus"):
            value = getattr(self, name)
            if value is not None and not (_is_real(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not (_is_real(self.momentum) and 0 <= float(self.momentum) < 1):
            raise ValueError(f"momentum must be a number in [0, 1), got {self.momentum!r}")
        if self.c_sigma is not None and self.c_sigma >= 1:
            raise ValueError(f"c_sigma must be in (0, 1), got {self.c_sigma!r}")
        if self.c_c is not None and self.c_c > 1:
            raise ValueError(f"c_c must be in [0, 1], got {self.c_c!r}")
        for name in ("maxfevals", "maxiter", "tolfun", "tolx", "tolcondition"):
            value = getattr(self, name)
            if value is not None and not (_is_real(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0 (or None for the default), "
                                 f"got {value!r}")
        if self.tolstagnation is not None:
            _integer("tolstagnation", self.tolstagnation, minimum=0)
        _integer("check_every", self.check_every, minimum=1)
        _integer("sampling_threads", self.sampling_threads, minimum=1)
        if self.curvature is not None:
            _choice("curvature", self.curvature, CURVATURES)
        if self.pairs is not None:
            _integer("pairs", self.pairs, minimum=1)
        if self.pairs_capacity is not None:
            _integer("pairs_capacity", self.pairs_capacity, minimum=1)
        if self.ftarget is not None and not (_is_real(self.ftarget) and not math.isnan(
                self.ftarget)):
            raise ValueError(f"ftarget must be a number, got {self.ftarget!r}")
        if self.backend is not None:
            _choice("backend", self.backend, ("numpy", "torch"))


def _is_real(x) -> bool:
    """A real scalar (Python, numpy or 0-d array), not a bool or a string."""
    if isinstance(x, (bool, str, bytes)) or getattr(x, "ndim", 0) != 0:
        return False
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _positive(name: str, value) -> None:
    if not (_is_real(value) and math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _integer(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
