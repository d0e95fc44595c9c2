"""Dense factor: A any invertible d×d matrix (xNES), retracted through the n×n Gram matrix.

The ES natural gradient G = Σᵢ wᵢ (zᵢzᵢᵀ − I) = −(Σw) I + Zᵀ W Z is "scalar + rank n", so the tangent
keeps it in that form (``rows`` Z, ``weights`` w, ``scale`` −Σw) and the retraction never forms a d×d
exponential.  With U = Zᵀ (d×n), V = t W Z (n×d) and K = V U = t W Z Zᵀ (n×n), algorithms.md §2:

    A · expm(t(sI + U V)) = e^{ts} (A + (A U) φ(K) V),     φ(K) = Σ_j K^j / (j+1)!  (backend.phi),

and for the truncated series of order p (matmuls only), with e_m(x) = Σ_{i≤m} x^i/i!:

    A · h_p(t(sI + U V)) = e_p(ts) A + (A U) [Σ_{k=1..p} e_{p−k}(ts) K^{k−1} / k!] V.

Cost n d² + n² d + n³, the order of sampling itself — not d³.
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

__all__ = ["Dense", "DenseTangent"]


@dataclass(frozen=True, eq=False)
class DenseTangent(Tangent):
    """M = scale·I + rowsᵀ diag(weights) rows + matrix; any of the last three parts may be absent."""

    dim: int
    scale: Any
    rows: Any = None
    weights: Any = None
    matrix: Any = None

    @property
    def xp(self) -> B.Backend:
        return B.namespace(self.scale)

    def _low_rank_dense(self):
        return self.rows.mT @ (self.weights[:, None] * self.rows)

    def to_dense(self):
        xp = self.xp
        M = self.scale * xp.eye(self.dim, dtype=self.scale.dtype, device=xp.device_of(self.scale))
        if self.rows is not None:
            M = M + self._low_rank_dense()
        if self.matrix is not None:
            M = M + self.matrix
        return M

    def trace(self):
        tr = self.dim * self.scale
        if self.rows is not None:
            tr = tr + (self.weights * (self.rows * self.rows).sum(-1)).sum()
        if self.matrix is not None:
            tr = tr + self.xp.diagonal(self.matrix).sum()
        return tr

    def norm(self):
        if self.matrix is not None:
            return (self.to_dense() ** 2).sum() ** 0.5
        sq = self.dim * self.scale ** 2
        if self.rows is not None:
            K = self.rows @ self.rows.mT
            wK = self.weights[:, None] * K
            sq = sq + 2 * self.scale * self.xp.diagonal(wK).sum() + (wK * wK.mT).sum()
        return sq ** 0.5

    def add_identity(self, c):
        return DenseTangent(self.dim, self.scale + c, self.rows, self.weights, self.matrix)

    def __mul__(self, c):
        return DenseTangent(self.dim, self.scale * c, self.rows,
                            None if self.weights is None else self.weights * c,
                            None if self.matrix is None else self.matrix * c)

    def __add__(self, other):
        self._check_same(other)
        xp = self.xp
        if self.rows is None or other.rows is None:
            rows = self.rows if other.rows is None else other.rows
            weights = self.weights if other.weights is None else other.weights
        else:
            rows = xp.concat([self.rows, other.rows], axis=0)
            weights = xp.concat([self.weights, other.weights], axis=0)
        if self.matrix is None or other.matrix is None:
            matrix = self.matrix if other.matrix is None else other.matrix
        else:
            matrix = self.matrix + other.matrix
        if rows is not None and (matrix is not None or rows.shape[0] >= self.dim):
            # a sum of many steps (momentum): fold into d×d, memory stays O(d²)
            low_rank = rows.mT @ (weights[:, None] * rows)
            matrix = low_rank if matrix is None else matrix + low_rank
            rows = weights = None
        return DenseTangent(self.dim, self.scale + other.scale, rows, weights, matrix)


@register
class Dense(Factor):
    """A dense invertible factor A (d×d): the full-covariance family of xNES.

    Example:
        >>> import numpy as np
        >>> from natgrad_es.structures import Dense
        >>> A = Dense.identity(3)
        >>> Z = np.random.default_rng(0).standard_normal((5, 3))
        >>> T = A.natural_gradient(Z, np.full(5, 0.2))
        >>> A.retract(T, 0.1).to_dense().shape
        (3, 3)
    """

    name = "full"
    tangent_type = DenseTangent

    def __init__(self, A, *, backend: str | None = None, dtype=None, device=None):
        xp, A = as_array(A, backend, dtype, device, "A")
        if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
            raise ValueError(f"A must be a square 2-D matrix, got shape {tuple(A.shape)}")
        self._xp, self.A = xp, A

    @classmethod
    def identity(cls, dim: int, *, backend: str = "numpy", dtype=None, device=None) -> Dense:
        """A = I_d."""
        xp = B.get_backend(backend)
        return cls(xp.eye(positive_dim(dim), dtype=resolve_dtype(xp, dtype), device=device), backend=backend)

    # description
    dim = property(lambda self: self.A.shape[0])
    num_parameters = property(lambda self: self.dim * self.dim)
    dtype = property(lambda self: self.A.dtype)
    xp = property(lambda self: self._xp)

    def _first_array(self):
        return self.A

    # linear maps
    def apply(self, Z):
        return self._rows(Z) @ self.A.mT

    def apply_transpose(self, Z):
        return self._rows(Z) @ self.A

    def solve(self, X):
        X = self._rows(X, "X")
        flat = X.reshape(-1, self.dim)
        return self.xp.solve(self.A, flat.mT).mT.reshape(X.shape)

    def logdet(self):
        return self.xp.slogdet(self.A)[1]

    def to_dense(self):
        return self.xp.copy(self.A)

    # geometry
    def natural_gradient(self, Z, w) -> DenseTangent:
        Z, w = self._samples_and_weights(Z, w)
        return DenseTangent(self.dim, -w.sum(), rows=Z, weights=w)

    def project(self, G) -> DenseTangent:
        G = self._square(G)
        return DenseTangent(self.dim, G.sum() * 0, matrix=G)

    def _retract(self, T: DenseTangent, step, method, order):
        xp = self.xp
        a = step * T.scale
        gram = T.matrix is None and T.rows is not None and T.rows.shape[0] < self.dim
        if not gram:
            M = T.to_dense() * step
            E = xp.expm(M) if method == "expm" else B.expm_truncated(M, order)
            return self._replace(A=self.A @ E)
        R = T.rows
        V = (step * T.weights)[:, None] * R  # (n, d) = t W Z
        K = V @ R.mT  # (n, n) = t W Z Zᵀ
        if method == "expm":
            s0, Psi = xp.exp(a), B.phi(K)
        else:
            s0 = B.exp_series(a, order)
            eye = xp.eye(K.shape[0], dtype=K.dtype, device=xp.device_of(K))
            Psi, power = 0 * K, eye
            for k in range(1, order + 1):  # Ψ = Σ_k e_{p−k}(a) K^{k−1} / k!
                coef = (1.0 if k == order else B.exp_series(a, order - k)) / math.factorial(k)
                Psi = Psi + coef * power
                power = power @ K
        AU = R @ self.A.mT  # (n, d): rows A zᵢ, i.e. (A U)ᵀ
        if method == "truncated" and xp.name == "torch":  # e_p(a) A + A U Ψ V, no host branch
            A_new = AU.mT @ (Psi @ V)
            A_new.addcmul_(self.A, xp.asarray(s0, dtype=A_new.dtype, device=xp.device_of(A_new)))
            return self._replace(A=A_new)
        if method == "truncated":  # e_p(a) A + A U Ψ V = e_p(a) (A + A U (Ψ/e_p(a)) V) when e_p(a) > 0
            if float(s0) <= 0:  # only for odd p with a ≤ −1: no in-place shortcut
                return self._replace(A=self.A * s0 + AU.mT @ (Psi @ V))
            Psi = Psi / s0
        # A_new is a fresh d×d array: finish it in place (a d×d temporary costs page faults too)
        A_new = AU.mT @ (Psi @ V)
        A_new += self.A
        A_new *= s0
        return self._replace(A=A_new)

    # state
    def state_dict(self):
        return {"structure": self.name, "dtype": dtype_name(self.dtype), "A": self.xp.copy(self.A)}

    @classmethod
    def from_state_dict(cls, state):
        check_state(state, cls.name, ("A",))
        return cls(state["A"], dtype=state.get("dtype"))
