"""Batched test functions for numpy and torch (one code path), each with its optimum x* and f*.

Every function takes x of shape (n, d) (a batch of rows) or (d,) (one point) and returns shape (n,)
or () in x's backend, dtype and device (lists and integers count as float64 numpy).  On a torch
device the whole batch is evaluated there, with no host round-trip: constants (coefficients,
rotations, subspaces) are copied to the device once and cached; only ``Noisy`` copies its seeded
host noise to the device per call.  Quadratics are
written f(x) = xᵀ H x (so ∇²f = 2H); "condition" is the condition number of H.

Classic functions (``get(name, dim)``; x* = 0 and f* = 0 unless stated):

=====================  ====================================================  ===============
name                   f(x)                                                  x*
=====================  ====================================================  ===============
``sphere``             Σ xᵢ²
``ellipsoid``          Σ c^{(i−1)/(d−1)} xᵢ²   (c = ``condition`` = 1e6)
``rotated_ellipsoid``  ellipsoid(R x), R = ``rotation(dim, seed)``
``cigar``              x₁² + c Σ_{i≥2} xᵢ²     (one long axis)
``discus``             c x₁² + Σ_{i≥2} xᵢ²     (one short axis)
``different_powers``   Σ |xᵢ|^{2 + 4(i−1)/(d−1)}
``rosenbrock``         Σ_{i<d} 100 (xᵢ₊₁ − xᵢ²)² + (1 − xᵢ)²  (d ≥ 2)            1
``rastrigin``          10 d + Σ xᵢ² − 10 cos(2π xᵢ)   (multi-modal)
=====================  ====================================================  ===============

Subspace ill-conditioned problems, for any d, rank r, condition c and seed (P a seeded random
d×r matrix with orthonormal columns, p a unit vector; O(n d r) per batch, no d×d matrix):

=====================  ====================================================  ==================
name                   f(x)                                                  H
=====================  ====================================================  ==================
``stiff_subspace``     ‖x‖² + (c − 1) ‖Pᵀx‖²                                 I + (c − 1) P Pᵀ
``valley``             c ‖x − P Pᵀx‖² + ‖Pᵀx‖²                               c I − (c − 1) P Pᵀ
``rotated_cigar``      (pᵀx)² + c ‖x − p pᵀx‖²     (``valley`` with r = 1)    c I − (c − 1) p pᵀ
``rotated_discus``     ‖x‖² + (c − 1)(pᵀx)²        (``stiff_subspace``, r = 1) I + (c − 1) p pᵀ
=====================  ====================================================  ==================

The stiff subspace has r *large* eigenvalues in random directions (discus-like: the ideal covariance
is I − low rank); the valley has r *small* ones (cigar-like: I + low rank).  The valley is written
as c‖x − PPᵀx‖² + ‖Pᵀx‖², not c‖x‖² − (c − 1)‖Pᵀx‖²: the same function, but the second form
cancels (error ≈ eps·c·‖x‖²), which is noise to a method that differences f values
(``shared/design/algorithms.md`` §3).

Matrix-shaped problems, for the Kronecker structure: x is a d₁×d₂ matrix X flattened row-major
(``shape=(d₁, d₂)``, d = d₁d₂), and f(x) = vec(X)ᵀ (H₁ ⊗ H₂) vec(X) = tr(Xᵀ H₁ X H₂), computed as
‖L₁ᵀ X L₂‖²_F with H_k = L_k L_kᵀ:

==========================  ===============================================================
``kronecker_ellipsoid``     H_k = R_k diag(c_k^{(i−1)/(d_k−1)}) R_kᵀ, R_k seeded rotations, the
                            condition split c₁ c₂ = c with log c_k ∝ d_k − 1
``kronecker_stiff``         H_k = I + (c_k − 1) P_k P_kᵀ, P_k d_k×r_k, c₁ = c₂ = √c
==========================  ===============================================================

Variants of any problem, by keyword or by name prefix (``get("shifted_rotated_rastrigin", 10)``):

* ``shift`` (prefix ``shifted_``): the optimum moves to x* drawn uniformly in [−s, s]^d (s = 4 for
  ``shift=True``, or the given array): f(x) = f₀(x − x* + x₀*) with x₀* the base optimum;
* ``rotate`` (prefix ``rotated_``): f(x) = f₀(R (x − x*) + x₀*), R a seeded random rotation (where
  the prefixed name is itself a registry name, that entry wins: ``rotated_cigar`` is the O(d)
  rank-one valley above, ``get("cigar", d, rotate=True)`` the O(d²) cigar(R x); the same function
  class, another random direction);
* ``fopt``: adds a constant, f* = fopt;
* ``noise`` (prefix ``noisy_``, level 1e-2): additive Gaussian noise, f(x) + noise·ε with ε ~ N(0, 1)
  drawn from a seeded stream (``Problem.f.reset()`` restarts it); x*, f* are those of the
  noiseless function (``Problem.f.clean``).

``names()`` lists the base names (``names(variants=True)`` also the prefixed ones); ``get(name, dim,
seed=0, **params)`` returns a ``Problem`` (callable, with ``xopt``, ``fopt``, ``description``).

    >>> import numpy as np, problems
    >>> p = problems.get("shifted_rotated_rastrigin", 5, seed=3)
    >>> float(p(p.xopt)) == p.fopt, p(np.zeros((4, 5))).shape
    (True, (4,))
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from natgrad_es.backend import namespace

__all__ = ["Problem", "get", "names", "describe", "sphere", "ellipsoid", "cigar", "discus",
           "different_powers", "rosenbrock", "rastrigin", "ellipsoid_coefficients", "rotation",
           "random_subspace", "RotatedEllipsoid", "StiffSubspace", "Valley", "KroneckerQuadratic",
           "Transformed", "Noisy", "PREFIXES"]

PREFIXES = ("shifted_", "rotated_", "noisy_")
DEFAULT_NOISE = 1e-2
DEFAULT_SHIFT = 4.0


# -- backend helpers ----------------------------------------------------------------------------


def _like(x, values: np.ndarray):
    """``values`` (numpy) as an array of x's backend, dtype and device."""
    xp = namespace(x)
    return xp.asarray(values, dtype=x.dtype, device=xp.device_of(x))


def _as_array(x):
    """x as a floating array: numpy input (lists, ints) becomes float64 numpy; tensors pass."""
    xp = namespace(x)
    if xp.name == "numpy":
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
    return x


class _Constants:
    """numpy constants converted once per (backend, dtype, device) and cached."""

    def __init__(self, **arrays: np.ndarray):
        self._numpy = arrays
        self._cache: dict[tuple, dict[str, Any]] = {}

    def __call__(self, x) -> dict[str, Any]:
        xp = namespace(x)
        key = (xp.name, str(x.dtype), str(xp.device_of(x)))
        if key not in self._cache:
            self._cache[key] = {k: _like(x, v) for k, v in self._numpy.items()}
        return self._cache[key]

    def __getstate__(self):  # pickles (for process pools) without the converted copies
        return {"_numpy": self._numpy, "_cache": {}}


_DEVICE_TABLES: dict[tuple, Any] = {}


def _table(x, key: tuple, make: Callable[[], np.ndarray]):
    """``make()`` (a numpy vector) in x's backend, dtype and device; cached per device for torch, so
    a run on a GPU copies it there once rather than once per call."""
    if namespace(x).name == "numpy":
        return _like(x, make())
    k = (key, str(x.dtype), str(x.device))
    if k not in _DEVICE_TABLES:
        _DEVICE_TABLES[k] = _like(x, make())
    return _DEVICE_TABLES[k]


def _check_last_axis(x, dim: int) -> None:
    if x.ndim not in (1, 2) or x.shape[-1] != dim:
        raise ValueError(f"x must have shape (n, {dim}) or ({dim},), got shape {tuple(x.shape)}")


# -- classic functions (any dimension) ----------------------------------------------------------


def sphere(x):
    """Σᵢ xᵢ²."""
    x = _as_array(x)
    return (x * x).sum(-1)


def ellipsoid_coefficients(d: int, condition: float = 1e6) -> np.ndarray:
    """cᵢ = condition^{(i−1)/(d−1)}, i = 1..d (all 1 for d = 1)."""
    if d == 1:
        return np.ones(1)
    return condition ** (np.arange(d) / (d - 1))


def ellipsoid(x, condition: float = 1e6):
    """Σᵢ condition^{(i−1)/(d−1)} xᵢ²: separable, axis ratio √condition."""
    x = _as_array(x)
    d = x.shape[-1]
    coef = _table(x, ("ellipsoid", d, float(condition)), lambda: ellipsoid_coefficients(d, condition))
    return (coef * x * x).sum(-1)


def cigar(x, condition: float = 1e6):
    """x₁² + condition · Σ_{i≥2} xᵢ²: one long axis (a valley along e₁)."""
    x = _as_array(x)
    return x[..., 0] ** 2 + condition * (x[..., 1:] ** 2).sum(-1)


def discus(x, condition: float = 1e6):
    """condition · x₁² + Σ_{i≥2} xᵢ²: one short axis (one stiff direction)."""
    x = _as_array(x)
    return condition * x[..., 0] ** 2 + (x[..., 1:] ** 2).sum(-1)


def different_powers(x):
    """Σᵢ |xᵢ|^{2 + 4(i−1)/(d−1)} (exponent 2 for d = 1): the sensitivity differs per coordinate."""
    x = _as_array(x)
    d = x.shape[-1]
    exponents = _table(x, ("different_powers", d), lambda: 2 + 4 * np.arange(d) / (d - 1) if d > 1
                       else np.full(1, 2.0))
    return (namespace(x).abs(x) ** exponents).sum(-1)


def rosenbrock(x):
    """Σᵢ₌₁^{d−1} 100 (xᵢ₊₁ − xᵢ²)² + (1 − xᵢ)²; minimum 0 at x = 1 (d ≥ 2)."""
    x = _as_array(x)
    if x.shape[-1] < 2:
        raise ValueError(f"rosenbrock needs d >= 2, got d = {x.shape[-1]}")
    a, b = x[..., :-1], x[..., 1:]
    return (100 * (b - a * a) ** 2 + (1 - a) ** 2).sum(-1)


def rastrigin(x):
    """10 d + Σᵢ xᵢ² − 10 cos(2π xᵢ): ~10^d local minima on the integer grid, global minimum 0 at 0."""
    x = _as_array(x)
    xp = namespace(x)
    return (x * x - 10 * xp.cos(2 * math.pi * x) + 10).sum(-1)


# -- random matrices ----------------------------------------------------------------------------


def rotation(d: int, seed: int = 0) -> np.ndarray:
    """A random orthogonal d×d matrix (QR of a seeded Gaussian, signs fixed: Haar-distributed)."""
    G = np.random.default_rng(seed).standard_normal((d, d))
    Q, R = np.linalg.qr(G)
    return Q * np.sign(np.diag(R))


def random_subspace(d: int, r: int, seed: int = 0) -> np.ndarray:
    """P, d×r with orthonormal columns spanning a uniformly random r-dim subspace (seeded)."""
    G = np.random.default_rng(seed).standard_normal((d, r))
    Q, R = np.linalg.qr(G)
    return Q * np.sign(np.diag(R))


def _stream(seed: int, purpose: int) -> np.random.Generator:
    """A generator for one purpose (shift, rotation of a variant, noise, …) of one seed."""
    return np.random.default_rng([int(seed), purpose])


_SHIFT, _ROTATE, _NOISE, _FACTOR1, _FACTOR2 = 1, 2, 3, 4, 5


# -- callables with a fixed dimension -----------------------------------------------------------


class RotatedEllipsoid:
    """x ↦ ellipsoid(R x) for a fixed random rotation R (``rotation(dim, seed)``): not separable."""

    def __init__(self, dim: int, seed: int = 0, condition: float = 1e6):
        self.dim, self.seed, self.condition = int(dim), seed, condition
        self.R = rotation(self.dim, seed)
        self._c = _Constants(Rt=self.R.T)

    def __call__(self, x):
        x = _as_array(x)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have last axis {self.dim}, got shape {tuple(x.shape)}")
        return ellipsoid(x @ self._c(x)["Rt"], self.condition)

    def hessian(self) -> np.ndarray:
        """H with f(x) = xᵀ H x (dense d×d; for tests and small d)."""
        return self.R.T @ np.diag(ellipsoid_coefficients(self.dim, self.condition)) @ self.R

    def __repr__(self) -> str:
        return f"RotatedEllipsoid(dim={self.dim}, seed={self.seed}, condition={self.condition:g})"


class StiffSubspace:
    """f(x) = ‖x‖² + (c − 1)‖Pᵀx‖² = xᵀ (I + (c − 1) P Pᵀ) x: r large eigenvalues c in span(P).

    Args:
        dim: d.
        rank: r, the dimension of the stiff subspace (1 ≤ r ≤ d).
        condition: c ≥ 1, the condition number of H.
        seed: picks P (``random_subspace(d, r, seed)``).

    Cost O(n d r) per batch of n points; nothing d×d is formed.
    """

    def __init__(self, dim: int, rank: int = 1, condition: float = 1e6, seed: int = 0):
        self.dim, self.rank, self.condition, self.seed = int(dim), int(rank), float(condition), seed
        _check_rank(self.rank, self.dim)
        _check_condition(self.condition)
        self.P = random_subspace(self.dim, self.rank, seed)
        self._c = _Constants(P=self.P, Pt=self.P.T.copy())

    def __call__(self, x):
        x = _as_array(x)
        _check_last_axis(x, self.dim)
        y = x @ self._c(x)["P"]  # shape (n, r): Pᵀx per row
        return (x * x).sum(-1) + (self.condition - 1) * (y * y).sum(-1)

    def hessian(self) -> np.ndarray:
        """H with f(x) = xᵀ H x (dense d×d; for tests and small d)."""
        return np.eye(self.dim) + (self.condition - 1) * self.P @ self.P.T

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(dim={self.dim}, rank={self.rank}, "
                f"condition={self.condition:g}, seed={self.seed})")


class Valley(StiffSubspace):
    """f(x) = c‖x − P Pᵀx‖² + ‖Pᵀx‖² = xᵀ (c I − (c − 1) P Pᵀ) x: r small eigenvalues 1 in span(P).

    The value is computed in this form, which has no cancellation: c‖x‖² − (c − 1)‖Pᵀx‖² is the
    same function but loses about eps·c·‖x‖² to rounding.  Arguments as ``StiffSubspace``.
    """

    def __call__(self, x):
        x = _as_array(x)
        _check_last_axis(x, self.dim)
        c = self._c(x)
        y = x @ c["P"]  # (n, r): Pᵀx per row
        residual = x - y @ c["Pt"]  # x − P Pᵀx
        return self.condition * (residual * residual).sum(-1) + (y * y).sum(-1)

    def hessian(self) -> np.ndarray:
        return self.condition * np.eye(self.dim) - (self.condition - 1) * self.P @ self.P.T


class KroneckerQuadratic:
    """f(x) = vec(X)ᵀ (H₁ ⊗ H₂) vec(X) = ‖L₁ᵀ X L₂‖²_F for X = x reshaped row-major to (d₁, d₂).

    H_k = L_k L_kᵀ.  Row-major flattening is what makes the Kronecker order H₁ ⊗ H₂ (rows of X go
    with H₁): (A ⊗ B) vec(X) = vec(A X Bᵀ).

    Args:
        L1: d₁×d₁ factor of H₁ (numpy).
        L2: d₂×d₂ factor of H₂ (numpy).
    """

    def __init__(self, L1: np.ndarray, L2: np.ndarray):
        self.L1, self.L2 = np.asarray(L1, float), np.asarray(L2, float)
        self.shape = (self.L1.shape[0], self.L2.shape[0])
        self.dim = self.shape[0] * self.shape[1]
        self._c = _Constants(L1t=self.L1.T.copy(), L2=self.L2)

    def __call__(self, x):
        x = _as_array(x)
        _check_last_axis(x, self.dim)
        c = self._c(x)
        X = x.reshape(tuple(x.shape[:-1]) + self.shape)
        Y = c["L1t"] @ X @ c["L2"]  # (n, d₁, d₂)
        return (Y * Y).sum(-1).sum(-1)

    @property
    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        """(H₁, H₂)."""
        return self.L1 @ self.L1.T, self.L2 @ self.L2.T

    def hessian(self) -> np.ndarray:
        """H₁ ⊗ H₂ (dense d×d; for tests and small d)."""
        H1, H2 = self.factors
        return np.kron(H1, H2)

    def __repr__(self) -> str:
        return f"KroneckerQuadratic(shape={self.shape})"


class Transformed:
    """f(x) = f₀(R (x − x*) + x₀*) + f*: the base f₀ with its optimum x₀* moved to x*, rotated, lifted.

    Args:
        base: the batched base function f₀.
        dim: d.
        xopt_base: x₀*, the base optimum (numpy, shape (d,)).
        xopt: x*, the new optimum (numpy, shape (d,)).
        R: a d×d rotation or None (no rotation).
        fopt: f*, added to every value.
    """

    def __init__(self, base: Callable, dim: int, xopt_base: np.ndarray, xopt: np.ndarray,
                 R: np.ndarray | None = None, fopt: float = 0.0):
        self.base, self.dim, self.R, self.fopt = base, int(dim), R, float(fopt)
        self.xopt_base, self.xopt = np.asarray(xopt_base, float), np.asarray(xopt, float)
        consts = {"xopt": self.xopt, "xopt_base": self.xopt_base}
        if R is not None:
            consts["Rt"] = np.asarray(R, float).T.copy()
        self._c = _Constants(**consts)
        self._shifted = not np.array_equal(self.xopt, self.xopt_base)

    def __call__(self, x):
        x = _as_array(x)
        _check_last_axis(x, self.dim)
        c = self._c(x)
        if self.R is not None:
            z = (x - c["xopt"]) @ c["Rt"] + c["xopt_base"]
        elif self._shifted:
            z = x - c["xopt"] + c["xopt_base"]
        else:
            z = x
        value = self.base(z)
        return value + self.fopt if self.fopt != 0 else value

    def __repr__(self) -> str:
        return (f"Transformed({self.base!r}, dim={self.dim}, rotated={self.R is not None}, "
                f"shifted={self._shifted}, fopt={self.fopt:g})")


class Noisy:
    """f(x) + σ ε, ε ~ N(0, 1) independently per point, from a seeded stream.

    The stream advances with every call, so the same x gives different values; ``reset()`` restarts
    it (two ``Noisy`` with the same seed give the same sequence of values for the same inputs).

    Args:
        clean: the noiseless batched function (``self.clean``).
        noise: σ ≥ 0.
        seed: seed of the noise stream.
    """

    def __init__(self, clean: Callable, noise: float, seed: int = 0):
        if not (noise >= 0 and math.isfinite(noise)):
            raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
        self.clean, self.noise, self.seed = clean, float(noise), seed
        self.reset()

    def reset(self) -> None:
        """Restart the noise stream."""
        self._rng = _stream(self.seed, _NOISE)

    def __call__(self, x):
        value = self.clean(x)
        eps = self._rng.standard_normal(tuple(value.shape))
        return value + self.noise * _like(value, eps)

    def __repr__(self) -> str:
        return f"Noisy({self.clean!r}, noise={self.noise:g}, seed={self.seed})"


def _check_rank(rank: int, dim: int) -> None:
    if not 1 <= rank <= dim:
        raise ValueError(f"rank must be an integer in [1, dim] = [1, {dim}], got {rank!r}")


def _check_condition(condition: float) -> None:
    if not (condition >= 1 and math.isfinite(condition)):
        raise ValueError(f"condition must be a finite number >= 1, got {condition!r}")


# -- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A test function with its dimension, optimum ``xopt`` (numpy) and optimal value ``fopt``.

    Attributes:
        name: the registry name (with its variant prefixes).
        dim: d.
        f: the batched function (x of shape (n, d) or (d,), numpy or torch).
        xopt: x*, shape (d,), numpy float64.
        fopt: f* = f(x*) (of the noiseless function for noisy variants).
        description: one line: the formula and the parameters.
        params: the parameters the problem was built with (seed, condition, rank, shape, …).
    """

    name: str
    dim: int
    f: Callable
    xopt: np.ndarray
    fopt: float
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, x):
        return self.f(x)


@dataclass(frozen=True)
class _Entry:
    """One registry entry: ``build(dim, seed, **params)`` returns (f, x₀*, description)."""

    name: str
    summary: str
    build: Callable[..., tuple[Callable, np.ndarray, str]]
    defaults: Mapping[str, Any]
    min_dim: int = 1
    rotatable: bool = True  # False where a rotation changes nothing or breaks the structure


def _default_rank(dim: int) -> int:
    """r = min(10, max(1, ⌊d/10⌋)): 1 up to d = 19, 10 from d = 100 (algorithms.md §3's cases)."""
    return min(10, max(1, dim // 10))


def _default_shape(dim: int) -> tuple[int, int]:
    """(d₁, d₂) with d₁ the largest divisor of d that is ≤ √d."""
    d1 = max(k for k in range(1, math.isqrt(dim) + 1) if dim % k == 0)
    return d1, dim // d1


def _zeros(dim: int) -> np.ndarray:
    return np.zeros(dim)


def _build_classic(fn: Callable, formula: str, conditioned: bool = False):
    def build(dim, seed, condition=None):
        if conditioned:
            _check_condition(condition)
            return (lambda x: fn(x, condition)), _zeros(dim), f"{formula}, condition {condition:g}"
        return fn, _zeros(dim), formula
    return build


def _build_rotated_ellipsoid(dim, seed, condition):
    _check_condition(condition)
    f = RotatedEllipsoid(dim, seed, condition)
    return f, _zeros(dim), f"ellipsoid(R x), R a random rotation (seed {seed}), condition {condition:g}"


def _build_rosenbrock(dim, seed):
    return rosenbrock, np.ones(dim), "Σ 100 (x_{i+1} − x_i²)² + (1 − x_i)², x* = 1"


def _build_subspace(cls, rank_one: bool, formula: str):
    def build(dim, seed, condition, rank=None):
        if rank_one:
            rank = 1
        rank = _default_rank(dim) if rank is None else rank
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
            raise ValueError(f"rank must be an integer in [1, dim] = [1, {dim}], got {rank!r}")
        f = cls(dim, int(rank), condition, seed)
        return f, _zeros(dim), f"{formula}, rank {rank}, condition {condition:g}, seed {seed}"
    return build


def _check_shape(shape, dim: int) -> tuple[int, int]:
    if shape is None:
        return _default_shape(dim)
    try:
        d1, d2 = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (d1, d2) with d1·d2 = dim, got {shape!r}") from None
    if d1 < 1 or d2 < 1 or d1 * d2 != dim:
        raise ValueError(f"shape must be a pair (d1, d2) of positive integers with d1·d2 = dim = {dim}, "
                         f"got {shape!r}")
    return d1, d2


def _build_kronecker_ellipsoid(dim, seed, condition, shape=None):
    _check_condition(condition)
    d1, d2 = _check_shape(shape, dim)
    spread = (d1 - 1) + (d2 - 1)
    conds = [condition ** ((k - 1) / spread) if spread else 1.0 for k in (d1, d2)]
    factors = []
    for k, c, purpose in ((d1, conds[0], _FACTOR1), (d2, conds[1], _FACTOR2)):
        R = rotation(k, int(_stream(seed, purpose).integers(2**31)))
        factors.append(R.T * np.sqrt(ellipsoid_coefficients(k, c)))  # L = Rᵀ diag(√λ): H = Rᵀ Λ R
    f = KroneckerQuadratic(*factors)
    return f, _zeros(dim), (f"vec(X)ᵀ (H₁ ⊗ H₂) vec(X), X {d1}×{d2} row-major, H_k rotated ellipsoids, "
                            f"condition {conds[0]:.3g} ⊗ {conds[1]:.3g} = {condition:g}, seed {seed}")


def _build_kronecker_stiff(dim, seed, condition, shape=None, rank=None):
    _check_condition(condition)
    d1, d2 = _check_shape(shape, dim)
    if rank is None:
        ranks = (max(1, d1 // 4), max(1, d2 // 4))
    elif isinstance(rank, (int, np.integer)) and not isinstance(rank, bool):
        ranks = (int(rank), int(rank))
    else:
        ranks = tuple(int(r) for r in rank)
    c = math.sqrt(condition)
    factors = []
    for k, r, purpose in ((d1, ranks[0], _FACTOR1), (d2, ranks[1], _FACTOR2)):
        _check_rank(r, k)
        P = random_subspace(k, r, int(_stream(seed, purpose).integers(2**31)))
        # L = I + (√c − 1) P Pᵀ is symmetric with L² = I + (c − 1) P Pᵀ
        factors.append(np.eye(k) + (math.sqrt(c) - 1) * P @ P.T)
    f = KroneckerQuadratic(*factors)
    return f, _zeros(dim), (f"vec(X)ᵀ (H₁ ⊗ H₂) vec(X), X {d1}×{d2} row-major, H_k = I + (√c − 1)"
                            f" P_k P_kᵀ with ranks {ranks}, condition {condition:g}, seed {seed}")


_C = {"condition": 1e6}
_REGISTRY: dict[str, _Entry] = {e.name: e for e in (
    _Entry("sphere", "Σ x_i²", _build_classic(sphere, "Σ x_i²"), {}, rotatable=False),
    _Entry("ellipsoid", "Σ c^{(i−1)/(d−1)} x_i², separable",
           _build_classic(ellipsoid, "Σ c^{(i−1)/(d−1)} x_i²", True), _C),
    _Entry("rotated_ellipsoid", "ellipsoid(R x), R a seeded random rotation",
           _build_rotated_ellipsoid, _C, rotatable=False),
    _Entry("cigar", "x_1² + c Σ_{i≥2} x_i²: one long axis",
           _build_classic(cigar, "x_1² + c Σ_{i≥2} x_i²", True), _C, min_dim=2),
    _Entry("discus", "c x_1² + Σ_{i≥2} x_i²: one short axis",
           _build_classic(discus, "c x_1² + Σ_{i≥2} x_i²", True), _C, min_dim=2),
    _Entry("different_powers", "Σ |x_i|^{2 + 4(i−1)/(d−1)}",
           _build_classic(different_powers, "Σ |x_i|^{2 + 4(i−1)/(d−1)}"), {}),
    _Entry("rosenbrock", "Σ 100 (x_{i+1} − x_i²)² + (1 − x_i)², x* = 1", _build_rosenbrock, {},
           min_dim=2),
    _Entry("rastrigin", "10 d + Σ x_i² − 10 cos(2π x_i): multi-modal",
           _build_classic(rastrigin, "10 d + Σ x_i² − 10 cos(2π x_i)"), {}),
    _Entry("stiff_subspace", "‖x‖² + (c − 1)‖Pᵀx‖²: r large eigenvalues in a random subspace",
           _build_subspace(StiffSubspace, False, "‖x‖² + (c − 1)‖Pᵀx‖²"),
           {"condition": 1e6, "rank": None}, rotatable=False),
    _Entry("valley", "c‖x − PPᵀx‖² + ‖Pᵀx‖²: r small eigenvalues in a random subspace",
           _build_subspace(Valley, False, "c‖x − PPᵀx‖² + ‖Pᵀx‖²"),
           {"condition": 1e6, "rank": None}, rotatable=False),
    _Entry("rotated_cigar", "(pᵀx)² + c‖x − ppᵀx‖²: one long axis in a random direction",
           _build_subspace(Valley, True, "(pᵀx)² + c‖x − ppᵀx‖²"), _C, min_dim=2, rotatable=False),
    _Entry("rotated_discus", "‖x‖² + (c − 1)(pᵀx)²: one short axis in a random direction",
           _build_subspace(StiffSubspace, True, "‖x‖² + (c − 1)(pᵀx)²"), _C, min_dim=2,
           rotatable=False),
    _Entry("kronecker_ellipsoid", "vec(X)ᵀ(H₁ ⊗ H₂)vec(X), H_k rotated ellipsoids",
           _build_kronecker_ellipsoid, {"condition": 1e6, "shape": None}, rotatable=False),
    _Entry("kronecker_stiff", "vec(X)ᵀ(H₁ ⊗ H₂)vec(X), H_k = I + (√c − 1) P_k P_kᵀ",
           _build_kronecker_stiff, {"condition": 1e6, "shape": None, "rank": None},
           rotatable=False),
)}


def names(variants: bool = False) -> tuple[str, ...]:
    """The registry's base names; with ``variants=True`` also every prefixed name ``get`` accepts
    in canonical order (``shifted_``, ``rotated_`` where a rotation changes the problem, ``noisy_``).
    """
    if not variants:
        return tuple(_REGISTRY)
    out = []
    for name, entry in _REGISTRY.items():
        for shifted, rotated, noisy in itertools.product((False, True), repeat=3):
            if rotated and (not entry.rotatable or "rotated_" + name in _REGISTRY):
                continue
            out.append("shifted_" * shifted + "rotated_" * rotated + "noisy_" * noisy + name)
    return tuple(out)


def describe(name: str) -> str:
    """A one-line description of the base problem ``name`` (without building it)."""
    base, _ = _parse(name)
    return _REGISTRY[base].summary


def _parse(name: str) -> tuple[str, dict[str, bool]]:
    """Strip variant prefixes until an exact registry name remains."""
    flags = {"shifted_": False, "rotated_": False, "noisy_": False}
    rest = name
    while rest not in _REGISTRY:
        for prefix in PREFIXES:
            if rest.startswith(prefix) and not flags[prefix]:
                flags[prefix] = True
                rest = rest[len(prefix):]
                break
        else:
            raise ValueError(f"unknown problem {name!r}; valid names: {', '.join(names())} "
                             f"(with optional prefixes {', '.join(PREFIXES)})")
    return rest, flags


def get(name: str, dim: int, seed: int = 0, *, shift: bool | float | np.ndarray | None = None,
        rotate: bool = False, noise: float | None = None, fopt: float = 0.0, **params) -> Problem:
    """The problem ``name`` in dimension ``dim``.

    Args:
        name: a base name from ``names()``, optionally with prefixes ``shifted_``, ``rotated_``,
            ``noisy_`` (the same as ``shift=True``, ``rotate=True``, ``noise=1e-2``).
        dim: d ≥ 1 (≥ 2 for rosenbrock, cigar, discus, rotated cigar/discus).
        seed: picks every random object of the problem (rotations, subspaces, shift, noise stream).
        shift: move the optimum: True (x* uniform in [−4, 4]^d), a number s (uniform in [−s, s]^d) or
            an array (x* itself).
        rotate: compose with a random rotation about x* (d×d: O(n d²) per batch).
        noise: σ of additive Gaussian noise (seeded stream).
        fopt: f*, added to every value.
        **params: the base problem's parameters: ``condition`` (ellipsoids, cigar, discus, subspace
            and Kronecker problems), ``rank`` (subspace problems; a pair for ``kronecker_stiff``),
            ``shape`` (Kronecker problems: (d₁, d₂) with d₁d₂ = d).

    Returns:
        a ``Problem``.
    """
    base, flags = _parse(name)
    entry = _REGISTRY[base]
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    dim = int(dim)
    if dim < entry.min_dim:
        raise ValueError(f"{base} needs dim >= {entry.min_dim}, got dim = {dim}")
    unknown = set(params) - set(entry.defaults)
    if unknown:
        allowed = ", ".join(entry.defaults) or "none"
        raise ValueError(f"unknown parameter(s) {', '.join(sorted(unknown))} for {base}; "
                         f"its parameters: {allowed}")
    kwargs = {**entry.defaults, **params}
    f, xopt_base, description = entry.build(dim, seed, **kwargs)

    if flags["shifted_"] and shift is None:
        shift = True
    rotate = bool(rotate or flags["rotated_"])
    if flags["noisy_"] and noise is None:
        noise = DEFAULT_NOISE

    xopt = xopt_base
    if shift is not None and shift is not False:
        if isinstance(shift, bool) or np.ndim(shift) == 0:
            s = DEFAULT_SHIFT if isinstance(shift, bool) else float(shift)
            if not (s >= 0 and math.isfinite(s)):
                raise ValueError(f"shift must be True, a finite number >= 0 or an array, got {shift!r}")
            xopt = _stream(seed, _SHIFT).uniform(-s, s, dim)
            description += f"; optimum shifted to x* ~ U[−{s:g}, {s:g}]^d"
        else:
            xopt = np.asarray(shift, dtype=float)
            if xopt.shape != (dim,) or not np.all(np.isfinite(xopt)):
                raise ValueError(f"a shift array must be finite with shape ({dim},), got {xopt.shape}")
            description += "; optimum shifted to the given x*"
    R = None
    if rotate:
        R = rotation(dim, int(_stream(seed, _ROTATE).integers(2**31)))
        description += "; rotated about x* by a random R"
    if R is not None or not np.array_equal(xopt, xopt_base) or fopt != 0:
        f = Transformed(f, dim, xopt_base, xopt, R, fopt)
    if fopt != 0:
        description += f"; f* = {fopt:g}"
    if noise:
        f = Noisy(f, noise, seed)
        description += f"; additive noise N(0, {noise:g}²)"
    used = {"seed": seed, **{k: v for k, v in kwargs.items() if v is not None}}
    if shift is not None and shift is not False:
        used["shift"] = shift
    if rotate:
        used["rotate"] = True
    if noise:
        used["noise"] = noise
    if fopt:
        used["fopt"] = fopt
    if "shape" in entry.defaults:
        used["shape"] = _check_shape(kwargs["shape"], dim)
    return Problem(name, dim, f, np.array(xopt, dtype=float), float(fopt), description, used)
