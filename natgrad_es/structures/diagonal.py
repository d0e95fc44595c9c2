"""Diagonal factor: A = diag(a), the separable family of SNES.

Algebra: diagonal matrices, stored as a vector v.  Natural gradient (algorithms.md §3):
vⱼ = Σᵢ wᵢ (zᵢⱼ² − 1).  Retraction: a ← a ⊙ exp(t v)  (or ⊙ e_p(t v) truncated).  All O(n d).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import backend as B
from .base import (
    Factor,
    Tangent,
    as_array,
    check_state,
    dtype_name,
    positive_dim,
    register,
    resolve_dtype,
)

__all__ = ["Diagonal", "DiagonalTangent"]


@dataclass(frozen=True, eq=False)
class DiagonalTangent(Tangent):
    """M = diag(v)."""

    dim: int
    v: Any

    def to_dense(self):
        return B.namespace(self.v).diag(self.v)

    def trace(self):
        return self.v.sum()

    def norm(self):
        return (self.v * self.v).sum() ** 0.5

    def add_identity(self, c):
        return DiagonalTangent(self.dim, self.v + c)

    def __mul__(self, c):
        return DiagonalTangent(self.dim, self.v * c)

    def __add__(self, other):
        self._check_same(other)
        return DiagonalTangent(self.dim, self.v + other.v)


@register
class Diagonal(Factor):
    """A = diag(a) with aⱼ ≠ 0: per-coordinate scales (SNES, sep-CMA's family)."""

    name = "diagonal"
    tangent_type = DiagonalTangent

    def __init__(self, a, *, backend: str | None = None, dtype=None, device=None):
        xp, a = as_array(a, backend, dtype, device, "a")
        if a.ndim != 1 or a.shape[0] < 1:
            raise ValueError(f"a must be a non-empty 1-D vector, got shape {tuple(a.shape)}")
        if bool((a == 0).any()):
            raise ValueError("a has a zero entry: the factor would be singular")
        self._xp, self.a = xp, a

    @classmethod
    def identity(cls, dim: int, *, backend: str = "numpy", dtype=None, device=None) -> Diagonal:
        xp = B.get_backend(backend)
        return cls(xp.ones(positive_dim(dim), dtype=resolve_dtype(xp, dtype), device=device),
                   backend=backend)

    dim = property(lambda self: self.a.shape[0])
    num_parameters = property(lambda self: self.dim)
    dtype = property(lambda self: self.a.dtype)
    xp = property(lambda self: self._xp)

    def _first_array(self):
        return self.a

    def apply(self, Z):
        return self._rows(Z) * self.a

    def apply_transpose(self, Z):
        return self._rows(Z) * self.a

    def solve(self, X):
        return self._rows(X, "X") / self.a

    def logdet(self):
        return self.xp.log(self.xp.abs(self.a)).sum()

    def to_dense(self):
        return self.xp.diag(self.a)

    def singular_values(self):
        return _descending(self.xp, self.xp.abs(self.a))

    def natural_gradient(self, Z, w) -> DiagonalTangent:
        Z, w = self._samples_and_weights(Z, w)
        return DiagonalTangent(self.dim, w @ (Z * Z) - w.sum())

    def project(self, G) -> DiagonalTangent:
        return DiagonalTangent(self.dim, self.xp.diagonal(self._square(G)))

    def _retract(self, T: DiagonalTangent, step, method, order):
        tv = step * T.v
        factor = self.xp.exp(tv) if method == "expm" else B.exp_series(tv, order)
        return self._replace(a=self.a * factor)

    def state_dict(self):
        return {"structure": self.name, "dtype": dtype_name(self.dtype), "a": self.xp.copy(self.a)}

    @classmethod
    def from_state_dict(cls, state):
        check_state(state, cls.name, ("a",))
        return cls(state["a"], dtype=state.get("dtype"))


def _descending(xp, v):
    """v sorted in descending order (numpy or torch)."""
    if xp.name == "torch":
        return xp.sort(v, descending=True).values
    return xp.sort(v)[::-1]
