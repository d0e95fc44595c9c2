"""Batched test functions for numpy and torch (one code path), each with its optimum x* and f*.

Every function takes x of shape (n, d) (a batch of rows) or (d,) (one point) and returns shape (n,)
or () in x's backend, dtype and device:

===================  =============================================  ==============  ====
name                 f(x)                                           x*              f*
===================  =============================================  ==============  ====
``sphere``           Σ xᵢ²                                          0               0
``ellipsoid``        Σ c^{(i−1)/(d−1)} xᵢ²   (c = 1e6)              0               0
``rotated_ellipsoid``  ellipsoid(R x), R a seeded random rotation   0               0
``rosenbrock``       Σ 100 (xᵢ₊₁ − xᵢ²)² + (1 − xᵢ)²   (d ≥ 2)      1               0
===================  =============================================  ==============  ====

``get(name, dim, seed=0)`` returns a ``Problem`` (callable, with ``xopt`` and ``fopt``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from natgrad_es.backend import namespace

__all__ = ["Problem", "get", "names", "sphere", "ellipsoid", "rosenbrock", "RotatedEllipsoid",
           "rotation"]


def _like(x, values: np.ndarray):
    """``values`` (numpy) as an array of x's backend, dtype and device."""
    xp = namespace(x)
    return xp.asarray(values, dtype=x.dtype, device=xp.device_of(x))


def _as_array(x):
    xp = namespace(x)
    if xp.name == "numpy":
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
    return x


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
    return (_like(x, ellipsoid_coefficients(x.shape[-1], condition)) * x * x).sum(-1)


def rosenbrock(x):
    """Σᵢ₌₁^{d−1} 100 (xᵢ₊₁ − xᵢ²)² + (1 − xᵢ)²; minimum 0 at x = 1 (d ≥ 2)."""
    x = _as_array(x)
    if x.shape[-1] < 2:
        raise ValueError(f"rosenbrock needs d >= 2, got d = {x.shape[-1]}")
    a, b = x[..., :-1], x[..., 1:]
    return (100 * (b - a * a) ** 2 + (1 - a) ** 2).sum(-1)


def rotation(d: int, seed: int = 0) -> np.ndarray:
    """A random orthogonal d×d matrix (QR of a seeded Gaussian, signs fixed: Haar-distributed)."""
    G = np.random.default_rng(seed).standard_normal((d, d))
    Q, R = np.linalg.qr(G)
    return Q * np.sign(np.diag(R))


class RotatedEllipsoid:
    """x ↦ ellipsoid(R x) for a fixed random rotation R (``rotation(dim, seed)``): not separable."""

    def __init__(self, dim: int, seed: int = 0, condition: float = 1e6):
        self.dim, self.seed, self.condition = int(dim), seed, condition
        self.R = rotation(self.dim, seed)

    def __call__(self, x):
        x = _as_array(x)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have last axis {self.dim}, got shape {tuple(x.shape)}")
        return ellipsoid(x @ _like(x, self.R.T), self.condition)

    def __repr__(self) -> str:
        return f"RotatedEllipsoid(dim={self.dim}, seed={self.seed}, condition={self.condition:g})"


@dataclass(frozen=True)
class Problem:
    """A test function with its dimension, optimum ``xopt`` (numpy) and optimal value ``fopt``."""

    name: str
    dim: int
    f: Callable
    xopt: np.ndarray
    fopt: float

    def __call__(self, x):
        return self.f(x)


_OPTIMA = {"sphere": 0.0, "ellipsoid": 0.0, "rotated_ellipsoid": 0.0, "rosenbrock": 1.0}


def names() -> tuple[str, ...]:
    return tuple(_OPTIMA)


def get(name: str, dim: int, seed: int = 0) -> Problem:
    """The problem ``name`` in dimension ``dim`` (``seed`` picks the rotation where there is one)."""
    if name not in _OPTIMA:
        raise ValueError(f"unknown problem {name!r}; valid names: {', '.join(names())}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if name == "rosenbrock" and dim < 2:
        raise ValueError("rosenbrock needs dim >= 2")
    f = {"sphere": sphere, "ellipsoid": ellipsoid, "rosenbrock": rosenbrock}.get(name)
    if f is None:
        f = RotatedEllipsoid(dim, seed)
    return Problem(name, int(dim), f, np.full(int(dim), _OPTIMA[name]), 0.0)
