"""Kronecker factor: A = A₁ ⊗ A₂ for matrix-shaped parameters, d = d₁ d₂.

A vector x ∈ R^d is read as the d₁×d₂ matrix X = x.reshape(d₁, d₂) (row-major), and
(A₁ ⊗ A₂) x = vec(A₁ X A₂ᵀ): the row and column spaces are adapted separately.

Algebra: {s I + M₁ ⊗ I + I ⊗ M₂}.  Projecting the dense G = Σᵢ wᵢ(zᵢzᵢᵀ − I) (Frobenius = Fisher
at 0; the three parts are mutually orthogonal) gives (algorithms.md §3, algorithms-sources.md §3):

    M₁ = Σᵢ wᵢ (Zᵢ Zᵢᵀ / d₂ − I),   M₂ = Σᵢ wᵢ (Zᵢᵀ Zᵢ / d₁ − I),   s = tr G / d,

keeping the *traceless* parts of M₁ and M₂ and the scalar once (the coupling between the factors'
scales is singular: the scalar lives in s only).  Retraction:
expm(t(sI + M₁⊗I + I⊗M₂)) = expm(t(M₁ + s/2 I)) ⊗ expm(t(M₂ + s/2 I)), exactly; the truncated
retraction applies h_p to each factor the same way (a group element, equal to expm to O(t^{p+1})).
Costs: sample and gradient n d (d₁ + d₂), retraction d₁³ + d₂³.
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
from .dense import Dense
from .diagonal import _descending

__all__ = ["Kronecker", "KroneckerTangent"]


@dataclass(frozen=True, eq=False)
class KroneckerTangent(Tangent):
    """M = scale·I + m1 ⊗ I_{d₂} + I_{d₁} ⊗ m2."""

    dim: int
    scale: Any
    m1: Any
    m2: Any

    def to_dense(self):
        xp = B.namespace(self.m1)
        d1, d2 = self.m1.shape[0], self.m2.shape[0]
        e1 = xp.eye(d1, dtype=self.m1.dtype, device=xp.device_of(self.m1))
        e2 = xp.eye(d2, dtype=self.m1.dtype, device=xp.device_of(self.m1))
        return self.scale * xp.kron(e1, e2) + xp.kron(self.m1, e2) + xp.kron(e1, self.m2)

    def _traces(self):
        xp = B.namespace(self.m1)
        return xp.diagonal(self.m1).sum(), xp.diagonal(self.m2).sum()

    def trace(self):
        t1, t2 = self._traces()
        d1, d2 = self.m1.shape[0], self.m2.shape[0]
        return self.dim * self.scale + d2 * t1 + d1 * t2

    def norm(self):
        t1, t2 = self._traces()
        d1, d2 = self.m1.shape[0], self.m2.shape[0]
        s = self.scale
        sq = (self.dim * s * s + d2 * (self.m1 ** 2).sum() + d1 * (self.m2 ** 2).sum()
              + 2 * s * (d2 * t1 + d1 * t2) + 2 * t1 * t2)
        return sq ** 0.5

    def add_identity(self, c):
        return KroneckerTangent(self.dim, self.scale + c, self.m1, self.m2)

    def __mul__(self, c):
        return KroneckerTangent(self.dim, self.scale * c, self.m1 * c, self.m2 * c)

    def __add__(self, other):
        self._check_same(other)
        if other.m1.shape != self.m1.shape:
            raise TypeError("cannot add Kronecker tangents of different shapes")
        return KroneckerTangent(self.dim, self.scale + other.scale, self.m1 + other.m1,
                                self.m2 + other.m2)


def kronecker_shape(dim: int, shape) -> tuple[int, int]:
    """Validate ``shape = (d₁, d₂)`` against ``dim = d₁ d₂``."""
    try:
        d1, d2 = shape
    except (TypeError, ValueError):
        raise ValueError(f"shape must be a pair (d1, d2), got {shape!r}") from None
    d1, d2 = positive_dim(d1, "shape[0]"), positive_dim(d2, "shape[1]")
    if dim is not None and d1 * d2 != dim:
        raise ValueError(f"Kronecker shape {d1}x{d2} = {d1 * d2} does not match dim={dim}")
    return d1, d2


def _traceless(xp: B.Backend, M):
    n = M.shape[0]
    return M - (xp.diagonal(M).sum() / n) * xp.eye(n, dtype=M.dtype, device=xp.device_of(M))


@register
class Kronecker(Factor):
    """A = A₁ ⊗ A₂ (A₁ d₁×d₁ acts on rows, A₂ d₂×d₂ on columns of the d₁×d₂ parameter)."""

    name = "kronecker"
    tangent_type = KroneckerTangent

    def __init__(self, A1, A2, *, backend: str | None = None, dtype=None, device=None):
        xp, A1 = as_array(A1, backend, dtype, device, "A1")
        _, A2 = as_array(A2, xp, A1.dtype, xp.device_of(A1), "A2")
        for name, M in (("A1", A1), ("A2", A2)):
            if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 1:
                raise ValueError(f"{name} must be a square 2-D matrix, got shape {tuple(M.shape)}")
        self._xp, self.A1, self.A2 = xp, A1, A2

    @classmethod
    def identity(cls, dim: int, shape, *, backend: str = "numpy", dtype=None,
                 device=None) -> Kronecker:
        d1, d2 = kronecker_shape(positive_dim(dim), shape)
        xp = B.get_backend(backend)
        dt = resolve_dtype(xp, dtype)
        return cls(xp.eye(d1, dtype=dt, device=device), xp.eye(d2, dtype=dt, device=device),
                   backend=backend)

    shape = property(lambda self: (self.A1.shape[0], self.A2.shape[0]))
    dim = property(lambda self: self.A1.shape[0] * self.A2.shape[0])
    # the scale shared by the two factors is one parameter, not two
    num_parameters = property(lambda self: self.A1.shape[0] ** 2 + self.A2.shape[0] ** 2 - 1)
    dtype = property(lambda self: self.A1.dtype)
    xp = property(lambda self: self._xp)

    def _first_array(self):
        return self.A1

    def __repr__(self):
        return (f"Kronecker(dim={self.dim}, shape={self.shape}, dtype={dtype_name(self.dtype)}, "
                f"backend={self.xp.name})")

    def _matrices(self, Z, name="Z"):
        Z = self._rows(Z, name)
        return Z, Z.reshape(*Z.shape[:-1], *self.shape)

    def apply(self, Z):
        Z, Zm = self._matrices(Z)
        return (self.A1 @ Zm @ self.A2.mT).reshape(Z.shape)

    def apply_transpose(self, Z):
        Z, Zm = self._matrices(Z)
        return (self.A1.mT @ Zm @ self.A2).reshape(Z.shape)

    def solve(self, X):
        X, Xm = self._matrices(X, "X")
        Y = self.xp.solve(self.A1, Xm)  # A₁⁻¹ X
        return self.xp.solve(self.A2, Y.mT).mT.reshape(X.shape)  # A₁⁻¹ X A₂⁻ᵀ

    def logdet(self):
        d1, d2 = self.shape
        return d2 * self.xp.slogdet(self.A1)[1] + d1 * self.xp.slogdet(self.A2)[1]

    def to_dense(self):
        return self.xp.kron(self.A1, self.A2)

    def singular_values(self):
        """σ(A₁ ⊗ A₂) = {σᵢ(A₁) σⱼ(A₂)}: two small SVDs, O(d₁³ + d₂³)."""
        s1 = Dense(self.A1, backend=self.xp.name).singular_values()
        s2 = Dense(self.A2, backend=self.xp.name).singular_values()
        return _descending(self.xp, (s1[:, None] * s2[None, :]).reshape(-1))

    def natural_gradient(self, Z, w) -> KroneckerTangent:
        Z, w = self._samples_and_weights(Z, w)
        xp = self.xp
        d1, d2 = self.shape
        Zm = Z.reshape(-1, d1, d2)
        WZ = w[:, None, None] * Zm
        # one GEMM each: Σ wᵢ Zᵢ Zᵢᵀ = [WZ₁ … WZₙ][Z₁ … Zₙ]ᵀ and Σ wᵢ Zᵢᵀ Zᵢ = [WZ₁; …]ᵀ[Z₁; …]
        n = Zm.shape[0]
        S1 = WZ.swapaxes(0, 1).reshape(d1, n * d2) @ Zm.swapaxes(0, 1).reshape(d1, n * d2).mT
        S2 = WZ.reshape(n * d1, d2).mT @ Zm.reshape(n * d1, d2)
        scale = xp.diagonal(S1).sum() / self.dim - w.sum()  # tr G / d
        return KroneckerTangent(self.dim, scale, _traceless(xp, S1 / d2), _traceless(xp, S2 / d1))

    def project(self, G) -> KroneckerTangent:
        G = self._square(G)
        xp = self.xp
        d1, d2 = self.shape
        G4 = G.reshape(d1, d2, d1, d2)
        P1 = xp.einsum("ajbj->ab", G4) / d2  # partial trace over the column index
        P2 = xp.einsum("iaib->ab", G4) / d1
        scale = xp.diagonal(G).sum() / self.dim
        return KroneckerTangent(self.dim, scale, _traceless(xp, P1), _traceless(xp, P2))

    def _retract(self, T: KroneckerTangent, step, method, order):
        if T.m1.shape[0] != self.shape[0]:
            raise TypeError(f"tangent shape does not match the factor's {self.shape}")
        xp = self.xp
        half = 0.5 * T.scale
        d1, d2 = self.shape
        M1 = step * (T.m1 + half * xp.eye(d1, dtype=self.dtype, device=self.device))
        M2 = step * (T.m2 + half * xp.eye(d2, dtype=self.dtype, device=self.device))
        h = xp.expm if method == "expm" else (lambda M: B.expm_truncated(M, order))
        return self._replace(A1=self.A1 @ h(M1), A2=self.A2 @ h(M2))

    def state_dict(self):
        return {"structure": self.name, "dtype": dtype_name(self.dtype),
                "A1": self.xp.copy(self.A1), "A2": self.xp.copy(self.A2)}

    @classmethod
    def from_state_dict(cls, state):
        check_state(state, cls.name, ("A1", "A2"))
        return cls(state["A1"], state["A2"], dtype=state.get("dtype"))
