"""Block-triangular ("hierarchical") low-rank factor: A = [[A₁₁, 0], [A₂₁, D]].

A₁₁ is k×k dense (the anchor block: the first k coordinates), A₂₁ is (d−k)×k, D is diagonal.
Sampling x₁ = A₁₁ z₁, x₂ = A₂₁ z₁ + D z₂ gives Cov(x₂) = A₂₁A₂₁ᵀ + D²: low rank plus diagonal on
the last d − k coordinates, coupled to the anchor block (algorithms.md §3; Lin et al. 2021).

Matrices of the pattern [[P₁₁, 0], [P₂₁, diag p₂₂]] form an algebra closed under products, so the
group is kept exactly by expm *and* by the truncated series, and every operation is O(d k²):

    P·Q = [[P₁₁Q₁₁, 0], [P₂₁Q₁₁ + diag(p₂₂) Q₂₁, diag(p₂₂ q₂₂)]].

Natural gradient, in the convention A ← A · expm(η/2 · M) (algorithms.md §3, checked against a
finite-difference Fisher): with G = Σᵢ wᵢ (zᵢzᵢᵀ − I),

    M = [[G₁₁, 0], [2 G₂₁, diag G₂₂]]     (the one-sided block weighs twice).

expm is computed in the group by scaling and squaring a Taylor polynomial of degree ≤ 12; the
truncated retraction is the exact polynomial h_p of the structured matrix.  Both evaluate the
polynomial block by block (``_series``: the powers of the k×k block once, the diagonal's in closed
form; matmuls and elementwise products only).

Not rotation invariant: it fits a low-rank term that lives in the first k coordinates (see
algorithms.md §3 for when that is enough).
"""

from __future__ import annotations

import math
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

__all__ = ["LowRank", "LowRankTangent"]

_TAYLOR_DEGREE = 12  # with ρ ≤ 1/4 after scaling: remainder ≤ 0.25¹²/12! ≈ 1.2e-16


@dataclass(frozen=True, eq=False)
class LowRankTangent(Tangent):
    """M = [[m11, 0], [m21, diag(m22)]]."""

    dim: int
    m11: Any
    m21: Any
    m22: Any

    def to_dense(self):
        xp = B.namespace(self.m11)
        k = self.m11.shape[0]
        top = xp.concat([self.m11, xp.zeros((k, self.dim - k), dtype=self.m11.dtype,
                                            device=xp.device_of(self.m11))], axis=1)
        bottom = xp.concat([self.m21, xp.diag(self.m22)], axis=1)
        return xp.concat([top, bottom], axis=0)

    def trace(self):
        return B.namespace(self.m11).diagonal(self.m11).sum() + self.m22.sum()

    def norm(self):
        return ((self.m11 ** 2).sum() + (self.m21 ** 2).sum() + (self.m22 ** 2).sum()) ** 0.5

    def add_identity(self, c):
        xp = B.namespace(self.m11)
        k = self.m11.shape[0]
        eye = xp.eye(k, dtype=self.m11.dtype, device=xp.device_of(self.m11))
        return LowRankTangent(self.dim, self.m11 + c * eye, self.m21, self.m22 + c)

    def __mul__(self, c):
        return LowRankTangent(self.dim, self.m11 * c, self.m21 * c, self.m22 * c)

    def __add__(self, other):
        self._check_same(other)
        if other.m11.shape != self.m11.shape:
            raise TypeError("cannot add low-rank tangents of different ranks")
        return LowRankTangent(self.dim, self.m11 + other.m11, self.m21 + other.m21,
                              self.m22 + other.m22)


# -- the pattern algebra, as triples (p11, p21, p22) --------------------------------------------


def _mul(P, Q):
    return (P[0] @ Q[0], P[1] @ Q[0] + P[2][:, None] * Q[1], P[2] * Q[2])


def _scale(P, c):
    return (P[0] * c, P[1] * c, P[2] * c)


def _series(M, degree: int):
    """Σ_{j≤p} M^j/j! (p = ``degree`` ≥ 1) block by block, with one product by M₂₁.

    Block 21 of M^j is Σ_{a+b=j−1} diag(m₂₂)^a M₂₁ M₁₁^b, so with Φ_a = Σ_{b≤p−1−a} M₁₁^b/(a+b+1)!
    (k×k) and Horner's rule in diag(m₂₂):

        E₁₁ = Σ_{b≤p} M₁₁^b/b!,   E₂₁ = Σ_{a<p} diag(m₂₂)^a M₂₁ Φ_a,   e₂₂ = Σ_{a≤p} m₂₂^a/a!,

    the same polynomial as Horner's rule in the algebra, in O(d k p) with few array operations.
    """
    xp = B.namespace(M[0])
    M11, M21, m = M
    k = M11.shape[0]
    powers = [xp.eye(k, dtype=M11.dtype, device=xp.device_of(M11))]
    for _ in range(degree):
        powers.append(powers[-1] @ M11)
    E11 = sum(P * (1.0 / math.factorial(b)) for b, P in enumerate(powers))
    phi = [sum(powers[b] * (1.0 / math.factorial(a + b + 1)) for b in range(degree - a))
           for a in range(degree)]
    Y = M21 @ xp.concat(phi, axis=1)
    column = m[:, None]
    E21 = Y[:, (degree - 1) * k:]
    e22 = m * (1.0 / math.factorial(degree)) + 1.0 / math.factorial(degree - 1)
    for a in range(degree - 2, -1, -1):
        E21 = Y[:, a * k:(a + 1) * k] + column * E21
        e22 = m * e22 + 1.0 / math.factorial(a)
    return E11, E21, e22


def _expm(M):
    """expm(M) in the group: scaling and squaring of a Taylor polynomial of degree ≤ 12.

    Block 21 of the remainder after degree p is at most ‖M₂₁‖ ρ^p/p!, ρ = max(‖M₁₁‖_F, max |m₂₂|),
    and blocks 11 and 22 at most ρ^{p+1}/(p + 1)!: E₂₁ is linear in M₂₁, so ρ alone sets the
    relative accuracy.  After scaling ρ ≤ ¼; the degree is the least p with ρ^p/p! below the
    dtype's unit roundoff, so a small step, the ES's usual one, needs few terms.
    """
    xp = B.namespace(M[0])
    rho = float(xp.to_numpy(xp.maximum((M[0] ** 2).sum() ** 0.5, xp.abs(M[2]).max())))
    squarings = max(0, math.ceil(math.log2(rho / 0.25))) if rho > 0.25 else 0
    scaled = rho * 2.0 ** -squarings
    degree, term, roundoff = 1, scaled, 0.5 * xp.eps(M[0].dtype)
    while degree < _TAYLOR_DEGREE and term > roundoff:
        degree += 1
        term *= scaled / degree
    R = _series(_scale(M, 2.0 ** -squarings), degree)
    for _ in range(squarings):
        R = _mul(R, R)
    return R


@register
class LowRank(Factor):
    """A = [[A₁₁, 0], [A₂₁, D]] with A₁₁ k×k, A₂₁ (d−k)×k, D = diag(dvec), 1 ≤ k < d."""

    name = "lowrank"
    tangent_type = LowRankTangent

    def __init__(self, A11, A21, D, *, backend: str | None = None, dtype=None, device=None):
        xp, A11 = as_array(A11, backend, dtype, device, "A11")
        dev = xp.device_of(A11)
        _, A21 = as_array(A21, xp, A11.dtype, dev, "A21")
        _, D = as_array(D, xp, A11.dtype, dev, "D")
        if A11.ndim != 2 or A11.shape[0] != A11.shape[1] or A11.shape[0] < 1:
            raise ValueError(f"A11 must be a square k×k matrix with k >= 1, got {tuple(A11.shape)}")
        if D.ndim != 1 or D.shape[0] < 1:
            raise ValueError(f"D must be a non-empty 1-D vector (rank < dim), got {tuple(D.shape)}")
        k, m = A11.shape[0], D.shape[0]
        if tuple(A21.shape) != (m, k):
            raise ValueError(f"A21 must have shape ({m}, {k}), got {tuple(A21.shape)}")
        if bool((D == 0).any()):
            raise ValueError("D has a zero entry: the factor would be singular")
        self._xp, self.A11, self.A21, self.D = xp, A11, A21, D

    @classmethod
    def identity(cls, dim: int, rank: int, *, backend: str = "numpy", dtype=None,
                 device=None) -> LowRank:
        dim = positive_dim(dim)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank < dim:
            raise ValueError(f"rank must be an integer with 1 <= rank < dim={dim}, got {rank!r}")
        xp = B.get_backend(backend)
        dt = resolve_dtype(xp, dtype)
        return cls(xp.eye(rank, dtype=dt, device=device),
                   xp.zeros((dim - rank, rank), dtype=dt, device=device),
                   xp.ones(dim - rank, dtype=dt, device=device), backend=backend)

    rank = property(lambda self: self.A11.shape[0])
    dim = property(lambda self: self.A11.shape[0] + self.D.shape[0])
    num_parameters = property(lambda self: self.rank * self.rank + (self.dim - self.rank)
                              * (self.rank + 1))
    dtype = property(lambda self: self.A11.dtype)
    xp = property(lambda self: self._xp)

    def _first_array(self):
        return self.A11

    def __repr__(self):
        return (f"LowRank(dim={self.dim}, rank={self.rank}, dtype={dtype_name(self.dtype)}, "
                f"backend={self.xp.name})")

    def _split(self, Z, name="Z"):
        Z = self._rows(Z, name)
        return Z[..., :self.rank], Z[..., self.rank:]

    def apply(self, Z):
        """[Z₁ A₁₁ᵀ, Z₂ D + Z₁ A₂₁ᵀ], written into one output: no concatenation, which copied
        the whole (n, d) result; on torch the big block is one ``addmm_`` into the output."""
        Z = self._rows(Z)
        Z1 = Z[..., :self.rank]
        xp = self.xp
        scale = xp.concat([xp.ones(self.rank, dtype=self.dtype, device=self.device), self.D])
        Y = Z * scale  # [Z₁, Z₂ D]: one pass; the first block is then overwritten
        Y1, Y2 = Y[..., :self.rank], Y[..., self.rank:]
        Y1[...] = Z1 @ self.A11.mT
        if xp.name == "torch" and Y.ndim == 2:
            Y2.addmm_(Z1, self.A21.mT)
        else:
            Y2 += Z1 @ self.A21.mT
        return Y

    def apply_transpose(self, Z):
        Z1, Z2 = self._split(Z)
        return self.xp.concat([Z1 @ self.A11 + Z2 @ self.A21, Z2 * self.D], axis=-1)

    def solve(self, X):
        X1, X2 = self._split(X, "X")
        flat = X1.reshape(-1, self.rank)
        Z1 = self.xp.solve(self.A11, flat.mT).mT.reshape(X1.shape)
        return self.xp.concat([Z1, (X2 - Z1 @ self.A21.mT) / self.D], axis=-1)

    def logdet(self):
        return self.xp.slogdet(self.A11)[1] + self.xp.log(self.xp.abs(self.D)).sum()

    def to_dense(self):
        return LowRankTangent(self.dim, self.A11, self.A21, self.D).to_dense()

    def natural_gradient(self, Z, w) -> LowRankTangent:
        Z, w = self._samples_and_weights(Z, w)
        xp, k = self.xp, self.rank
        Z1, Z2 = Z[:, :k], Z[:, k:]
        WZ1 = w[:, None] * Z1
        total = w.sum()
        G11 = Z1.mT @ WZ1 - total * xp.eye(k, dtype=self.dtype, device=self.device)
        G21 = Z2.mT @ WZ1
        g22 = w @ (Z2 * Z2) - total
        return LowRankTangent(self.dim, G11, 2 * G21, g22)

    def project(self, G) -> LowRankTangent:
        G, k = self._square(G), self.rank
        return LowRankTangent(self.dim, G[:k, :k], 2 * G[k:, :k], self.xp.diagonal(G)[k:])

    def _retract(self, T: LowRankTangent, step, method, order):
        if T.m11.shape[0] != self.rank:
            raise TypeError(f"tangent rank {T.m11.shape[0]} does not match the factor's {self.rank}")
        M = (step * T.m11, step * T.m21, step * T.m22)
        E = _expm(M) if method == "expm" else _series(M, order)
        A11, A21, D = _mul((self.A11, self.A21, self.D), E)
        return self._replace(A11=A11, A21=A21, D=D)

    def state_dict(self):
        xp = self.xp
        return {"structure": self.name, "dtype": dtype_name(self.dtype), "A11": xp.copy(self.A11),
                "A21": xp.copy(self.A21), "D": xp.copy(self.D)}

    @classmethod
    def from_state_dict(cls, state):
        check_state(state, cls.name, ("A11", "A21", "D"))
        return cls(state["A11"], state["A21"], state["D"], dtype=state.get("dtype"))
