"""Spectral factor: S = Q diag(λ) Qᵀ kept as its eigen-factorization, A = S^{1/2} (seed 001).

State: Q orthogonal (d×d) and λ > 0.  The factor is the symmetric root A = Q diag(λ^{1/2}) Qᵀ, so
any power S^p = Q diag(λ^p) Qᵀ costs two matmuls (``power``) and no eigendecomposition is ever
computed: the state *is* the eigendecomposition, moved by local steps (algorithms.md §6,
algorithms-sources.md §6)

    λ ← λ ⊙ exp(2t μ),       Q ← Q R(2t K),   K = −Kᵀ,   R = expm | cayley | truncated,

with local coordinates (μ, K) computed from G̃ = Qᵀ G Q, G = Σᵢ wᵢ(zᵢzᵢᵀ − I) the dense natural
gradient (the ES's, or AᵀĤA − I of VI):

    μᵢ = G̃ᵢᵢ,     Kᵢⱼ = G̃ᵢⱼ √(λᵢλⱼ) (λⱼ − λᵢ) / ((λⱼ − λᵢ)² + ε λᵢλⱼ).

With ε = 0 this is the exact first-order match of the dense step A ← A·expm(tG): both give
S ← S + 2t A G A + O(t²) (the metric of a rotation, (λᵢ − λⱼ)²/(λᵢλⱼ), vanishes for equal
eigenvalues, where rotating does not change S).  ε > 0 damps rotations between near-equal
eigenvalues: at S = I nothing rotates and only λ moves, until the spectrum separates.

The dense matrix of a tangent (``to_dense``) is the symmetric M with S ← S + 2t A M A + O(t²):
M = Q [diag(μ) + N] Qᵀ, Nᵢⱼ = Kᵢⱼ (λⱼ − λᵢ)/√(λᵢλⱼ); its trace Σμ is what ``split_trace`` gives σ.

Retractions of Q: ``"expm"`` (exactly orthogonal), ``"cayley"`` (I − X/2)⁻¹(I + X/2) (exactly
orthogonal, one solve), ``"truncated"`` h_p(X) polished by Newton–Schulz steps
Q ← Q(3I − QᵀQ)/2 (matmuls only; each squares the orthogonality error, so Q does not drift), with
scaling and squaring for steps too large for the series (``_rotation_truncated``).
λ always moves by its exact scalar exponential.  Every retraction costs O(d³) (Q·R).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import backend as B
from .base import Factor, Tangent, as_array, check_state, dtype_name, positive_dim, register, resolve_dtype
from .diagonal import _descending

__all__ = ["Spectral", "SpectralTangent"]

DEFAULT_EPS = 1e-2


@dataclass(frozen=True, eq=False)
class SpectralTangent(Tangent):
    """Local coordinates (μ, K) at the point (Q, λ): μ moves log λ, skew K rotates Q."""

    dim: int
    mu: Any
    K: Any
    Q: Any
    lam: Any
    _point_fields: ClassVar[tuple[str, ...]] = ("Q", "lam")

    def _offdiag(self):
        """N with Nᵢⱼ = Kᵢⱼ (λⱼ − λᵢ)/√(λᵢλⱼ): the dense off-diagonal part in the Q basis."""
        lam = self.lam
        return self.K * (lam[None, :] - lam[:, None]) / (lam[:, None] * lam[None, :]) ** 0.5

    def to_dense(self):
        xp = B.namespace(self.K)
        return self.Q @ (xp.diag(self.mu) + self._offdiag()) @ self.Q.mT

    def trace(self):
        return self.mu.sum()

    def norm(self):
        return ((self.mu * self.mu).sum() + (self._offdiag() ** 2).sum()) ** 0.5

    def add_identity(self, c):
        return SpectralTangent(self.dim, self.mu + c, self.K, self.Q, self.lam)

    def __mul__(self, c):
        return SpectralTangent(self.dim, self.mu * c, self.K * c, self.Q, self.lam)

    def __add__(self, other):
        self._check_same(other)
        if other.Q is not self.Q or other.lam is not self.lam:
            raise TypeError("cannot add spectral tangents taken at different points (Q, λ)")
        return SpectralTangent(self.dim, self.mu + other.mu, self.K + other.K, self.Q, self.lam)


@register
class Spectral(Factor):
    """A = Q diag(λ)^{1/2} Qᵀ with Q orthogonal and λ > 0; ``eps`` damps near-degenerate rotations."""

    name = "spectral"
    tangent_type = SpectralTangent
    retract_methods = ("expm", "cayley", "truncated")

    def __init__(self, Q, lam, *, eps: float = DEFAULT_EPS, backend: str | None = None, dtype=None,
                 device=None):
        xp, Q = as_array(Q, backend, dtype, device, "Q")
        _, lam = as_array(lam, xp, Q.dtype, xp.device_of(Q), "lam")
        if Q.ndim != 2 or Q.shape[0] != Q.shape[1] or Q.shape[0] < 1:
            raise ValueError(f"Q must be a square 2-D matrix, got shape {tuple(Q.shape)}")
        if tuple(lam.shape) != (Q.shape[0],):
            raise ValueError(f"lam must have shape ({Q.shape[0]},), got {tuple(lam.shape)}")
        if not bool((lam > 0).all()):
            raise ValueError("lam must be positive (the eigenvalues of S)")
        d = Q.shape[0]
        err = float(xp.to_numpy(abs(Q.mT @ Q - xp.eye(d, dtype=Q.dtype, device=xp.device_of(Q))).max()))
        if err > 10 * d * xp.eps(Q.dtype) ** 0.5:
            raise ValueError(f"Q must be orthogonal: max |QᵀQ − I| = {err:.2e}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self._xp, self.Q, self.lam, self.eps = xp, Q, lam, float(eps)

    @classmethod
    def identity(cls, dim: int, *, eps: float = DEFAULT_EPS, backend: str = "numpy", dtype=None,
                 device=None) -> Spectral:
        xp = B.get_backend(backend)
        dt = resolve_dtype(xp, dtype)
        d = positive_dim(dim)
        return cls(xp.eye(d, dtype=dt, device=device), xp.ones(d, dtype=dt, device=device), eps=eps,
                   backend=backend)

    dim = property(lambda self: self.Q.shape[0])
    num_parameters = property(lambda self: self.dim * (self.dim + 1) // 2)
    dtype = property(lambda self: self.Q.dtype)
    xp = property(lambda self: self._xp)

    def _first_array(self):
        return self.Q

    def power(self, p: float, X=None):
        """S^p = Q diag(λ^p) Qᵀ applied to rows of X (X S^p), or as a dense matrix when X is None."""
        if X is None:
            return (self.Q * self.lam ** p) @ self.Q.mT
        return ((self._rows(X, "X") @ self.Q) * self.lam ** p) @ self.Q.mT

    def apply(self, Z):
        return self.power(0.5, Z)

    def apply_transpose(self, Z):
        return self.power(0.5, Z)

    def solve(self, X):
        return self.power(-0.5, X)

    def logdet(self):
        return 0.5 * self.xp.log(self.lam).sum()

    def to_dense(self):
        return self.power(0.5)

    def singular_values(self):
        return _descending(self.xp, self.lam ** 0.5)

    def _local(self, Gt) -> SpectralTangent:
        """(μ, K) from G̃ = QᵀGQ (see the module docstring)."""
        xp, lam = self.xp, self.lam
        gap = lam[None, :] - lam[:, None]  # λⱼ − λᵢ
        prod = lam[:, None] * lam[None, :]
        denom = gap * gap + self.eps * prod
        safe = xp.where(denom > 0, denom, xp.ones_like(denom))
        K = xp.where(denom > 0, Gt * prod ** 0.5 * gap / safe, xp.zeros_like(Gt))
        return SpectralTangent(self.dim, xp.diagonal(Gt), 0.5 * (K - K.mT), self.Q, self.lam)

    def natural_gradient(self, Z, w) -> SpectralTangent:
        Z, w = self._samples_and_weights(Z, w)
        Y = Z @ self.Q  # rows Qᵀ zᵢ
        Gt = Y.mT @ (w[:, None] * Y) - w.sum() * self.xp.eye(self.dim, dtype=self.dtype,
                                                               device=self.device)
        return self._local(Gt)

    def project(self, G) -> SpectralTangent:
        G = self._square(G)
        return self._local(self.Q.mT @ G @ self.Q)

    def _retract(self, T: SpectralTangent, step, method, order):
        xp = self.xp
        X = (2 * step) * T.K
        if method == "expm":
            R = xp.expm(X)
            Q = self.Q @ R
        elif method == "cayley":
            eye = xp.eye(self.dim, dtype=self.dtype, device=self.device)
            Q = self.Q @ xp.solve(eye - 0.5 * X, eye + 0.5 * X)
        else:
            Q = newton_schulz(self.Q @ _rotation_truncated(X, order))
        lam = self.lam * xp.exp((2 * step) * T.mu)
        return self._replace(Q=Q, lam=lam)

    def transport(self, tangent: SpectralTangent, new_factor: Spectral) -> SpectralTangent:
        """Re-express (μ, K) at the new point (Q', λ'), keeping the dense matrix M = ``to_dense()``.

        In the old eigenbasis M is D = diag(μ) + N; in the new one it is D' = Rᵀ D R with R = QᵀQ'
        (matmuls only).  Then μ' = diag D' and K'ᵢⱼ = D'ᵢⱼ √(λ'ᵢλ'ⱼ)/(λ'ⱼ − λ'ᵢ), the exact inverse of
        the map K ↦ N, so ``to_dense()`` is unchanged — except within eigenspaces of λ' (relative gap
        below √eps), where rotations do not change S and that part of M is dropped (K' = 0 there).
        Transport to the same point is the identity.
        """
        self._check_tangent(tangent)
        if not isinstance(new_factor, Spectral) or new_factor.dim != self.dim:
            raise TypeError(f"cannot transport a SpectralTangent to {type(new_factor).__name__}"
                            f"(dim={getattr(new_factor, 'dim', '?')})")
        if tangent.Q is not self.Q or tangent.lam is not self.lam:
            raise TypeError("the tangent was not taken at this factor's point (Q, λ)")
        if new_factor.Q is self.Q and new_factor.lam is self.lam:
            return tangent
        xp = self.xp
        R = self.Q.mT @ new_factor.Q
        D = R.mT @ (xp.diag(tangent.mu) + tangent._offdiag()) @ R
        lam = new_factor.lam
        gap = lam[None, :] - lam[:, None]  # λ'ⱼ − λ'ᵢ
        root = (lam[:, None] * lam[None, :]) ** 0.5
        keep = abs(gap) > xp.eps(self.dtype) ** 0.5 * root
        K = xp.where(keep, D * root / xp.where(keep, gap, xp.ones_like(gap)), xp.zeros_like(D))
        return SpectralTangent(self.dim, xp.diagonal(D), 0.5 * (K - K.mT), new_factor.Q, new_factor.lam)

    def state_dict(self):
        return {"structure": self.name, "dtype": dtype_name(self.dtype), "Q": self.xp.copy(self.Q),
                "lam": self.xp.copy(self.lam), "eps": self.eps}

    @classmethod
    def from_state_dict(cls, state):
        check_state(state, cls.name, ("Q", "lam"))
        return cls(state["Q"], state["lam"], eps=state.get("eps", DEFAULT_EPS), dtype=state.get("dtype"))


_SERIES_RADIUS = 0.25  # ‖X‖_F at which a truncated series is still accurate


def _rotation_truncated(X, order: int):
    """An orthogonal approximation of expm(X) for skew X from matmuls only.

    h_p(X / 2^s), polished by two Newton–Schulz steps, then squared s times, with s the smallest
    such that ‖X / 2^s‖_F ≤ 1/4 (s = 0 for the small steps an optimizer takes, where this is h_p(X)
    polished).
    """
    xp = B.namespace(X)
    norm = float(xp.to_numpy((X * X).sum() ** 0.5))
    s = max(0, math.ceil(math.log2(norm / _SERIES_RADIUS))) if norm > _SERIES_RADIUS else 0
    R = newton_schulz(newton_schulz(B.expm_truncated(X / 2**s, order)))
    for _ in range(s):
        R = R @ R
    return R


def newton_schulz(Q):
    """One Newton–Schulz step towards the orthogonal polar factor: Q(3I − QᵀQ)/2 (matmuls only).

    If QᵀQ = I + E, the result has QᵀQ = I + O(E²).
    """
    xp = B.namespace(Q)
    eye = xp.eye(Q.shape[-1], dtype=Q.dtype, device=xp.device_of(Q))
    return Q @ (1.5 * eye - 0.5 * (Q.mT @ Q))
