"""Rotation-invariant low rank on either side: ``"lowrank-cov"`` and ``"lowrank-precision"``.

One symmetric factor, two sides (algorithms.md §3, "Which low-rank, and on which side"):

    A = D S,   S = I + Q diag(a) Qᵀ,   Q ∈ R^{d×k} orthonormal columns,   D = diag(δ), δ > 0,
    σ² A Aᵀ = σ² D S² D,   S² = I + Q diag((1 + a)² − 1) Qᵀ,   a ∈ (−1, ∞)^k.

* ``"lowrank-cov"`` keeps a ≥ 0: Σ = D (I + V Vᵀ) D with V = Q diag(√((1 + a)² − 1)), which *adds*
  variance along k directions (valleys; VkD-CMA's D(I + VVᵀ)D family);
* ``"lowrank-precision"`` keeps −1 < a ≤ 0: Σ⁻¹ = D⁻¹ (I + V Vᵀ) D⁻¹ with
  V = Q diag(√((1 + a)⁻² − 1)), which *removes* variance along k directions (stiff subspaces;
  SLANG's family).

Why this form: D outside makes the low-rank part scale-free (a separable rescaling x ↦ Λx of the
problem leaves Q and a unchanged and only moves δ); with Q orthonormal every operation is O(d k)
with no Woodbury solve:

    A z = δ ⊙ (z + Q(a ⊙ Qᵀz)),   Aᵀ z = S(δ ⊙ z),   A⁻¹ x = S⁻¹(x / δ),
    S⁻¹ = I + Q diag(1/(1 + a) − 1) Qᵀ,   log |det A| = Σ log δ + Σ log(1 + a).

The singular values have no closed form (A Aᵀ = D² + D Q diag(λ − 1) Qᵀ D is a diagonal plus rank k,
whose full spectrum needs d secular equations): ``singular_values`` falls back to the SVD of
``to_dense()`` (O(d³); the ES skips its condition check above d = 1000 for such factors).

**Local coordinates** (the ``Spectral`` recipe, algorithms.md §6).  The family is not a group; it is
moved by (ν, μ, K, C): δ ← δ e^{tν}, 1 + a ← (1 + a) e^{tμ}, and a rotation of the frame [Q, Q⊥]
with generator K (k×k skew, inside span Q) and coupling C (d×k, C ⊥ Q, towards the complement),
Q ← Q + 2t (Q K + C) + O(t²).  They are the first-order match of the dense step A ← A·expm(tG),
G = Σᵢ wᵢ(zᵢzᵢᵀ − I), which moves C = D⁻¹ΣD⁻¹ = S² by 2t S G S.  With λ = (1 + a)², P = QQᵀ,
G̃ = QᵀGQ (k×k) and B = (I − P) G Q (d×k), all from Z and w in O(n d k):

    gᵢ = diag((I − P) G (I − P))ᵢ / (1 − Pᵢᵢ),   νᵢ = ḡ + ρ (gᵢ − ḡ)   (the complement's diagonal → D)
    μⱼ = G̃ⱼⱼ − qⱼᵀ diag(ν) qⱼ                                     (eigenvalues; minus D's share)
    Kᵢⱼ = G̃ᵢⱼ √(λᵢλⱼ)(λⱼ − λᵢ) / ((λⱼ − λᵢ)² + ε λᵢλⱼ)             (as in Spectral)
    C_{:,j} = B_{:,j} √λⱼ (λⱼ − 1) / ((λⱼ − 1)² + ε λⱼ)              (the same with λᵢ = 1)

The move of δ also scales the Q block (D e^{tN} S² e^{tN} D): the term −qⱼᵀ diag(ν) qⱼ compensates
it on the diagonal.  Where a coordinate lies (nearly) in span Q, 1 − Pᵢᵢ → 0 and the division is
damped continuously, gᵢ(1 − Pᵢᵢ)²/((1 − Pᵢᵢ)² + eps) in place of gᵢ (that coordinate's variance is
then the Q block's).  The division by 1 − Pᵢᵢ (a mean-field solution of the least-squares fit of a
diagonal to the complement block) makes the projection exact on the identity: G = c I gives
ν = c, μ = 0, no rotation, so ``project(G + cI) = project(G) + cI``.  This is the ε-damped,
first-order local step with a block-diagonal Fisher, not the exact Fisher projection onto the
family: it ignores the couplings that ν induces off the diagonal.  With ε = 0, ρ = 1 and G aligned
(B = 0, complement block c(I − P)) it is the exact dense step to first order.

**ρ, the rate of D's shape** (``diagonal_rate``, default 0.05).  The mean ḡ of the diagonal moves at
the full rate, its shape (g − ḡ) at ρ: a metric that weighs the shape of D 1/ρ times more.  Why:
before span Q has turned onto the subspace, its curvature leaks into the complement, and the
diagonal, which sees it at once, "explains" it coordinate-wise (D → the diagonal of the Hessian, as
a separable ES would).  That is a wrong fit the family cannot undo quickly: the over-shrunk
coordinates become indifferent to selection and the mean freezes there.  Measured with the path
rule (d = 60, r = k = 3, c = 1e4, 3 seeds, evaluations to f < 1e-8): ρ = 1 stalled at f ≈ 0.4 (stiff)
and 4e-3 (valley) after 1e5 evaluations with δ ranging over 1e-6 … 2; ρ = 0.2: 2.0e4–8.2e4, one seed
stopped at f = 4e-6; ρ = 0.05: stiff 1.9e4–2.3e4, valley 2.4e4–2.6e4 (5 seeds); ρ = 0 (D fixed):
2.4e4–2.7e4 on both.  ρ leaves the identity exact (the mean is untouched).

The dense matrix of a tangent (``to_dense``) is the symmetric M with Σ ← Σ + 2t A M Aᵀ + O(t²):

    M = ½(S⁻¹ N S + S N S⁻¹) + Q [diag(μ) + K ∘ (λⱼ − λᵢ)/√(λᵢλⱼ)] Qᵀ + Ĉ Qᵀ + Q Ĉᵀ,
    N = diag(ν),  Ĉ = C diag((λ − 1)/√λ),

so tr M = Σν + Σμ (rotations keep det A, and a traceless step keeps |det A| exactly), and
``trace``/``norm`` are computed in O(d k²) from M = N + F Qᵀ + Q Fᵀ + Q Y Qᵀ.

**Retraction** (O(d k²), never d×d).  δ and 1 + a move by their exact exponentials; Q by the
rotation of the frame.  Its ambient generator Ω = Q K Qᵀ + C Qᵀ − Q Cᵀ (C ⊥ Q) maps span [Q C] to
itself (ΩQ = QK + C, ΩC = −Q CᵀC), so

    Q ← [Q C] R[:, :k],   R = expm(2t [[K, −CᵀC], [I, 0]])   (a 2k×2k problem, no QR).

In an orthonormal basis W of the coupling (C = W E) the same matrix is the skew [[K, −Eᵀ], [E, 0]],
so Q stays orthonormal and the rank is exactly k; the round-off of the non-orthonormal basis grows
like eps·(t‖C‖)², so below float64 one Newton–Schulz step polishes Q.  ``"truncated"`` applies the series
h_p of the same generator to Q by matmuls only (in 2^s factors, each with an argument of norm ≤ ¼
and each polished by two Newton–Schulz steps, which keep Q orthonormal).  Then a is clipped to its
side (cov a ≥ 0, precision a ≤ 0)
and to 1 + a ≥ 16 eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import backend as B
from .base import Factor, Tangent, as_array, check_state, dtype_name, positive_dim, register, resolve_dtype
from .diagonal import _descending
from .spectral import newton_schulz

__all__ = ["SymmetricLowRank", "LowRankCov", "LowRankPrecision", "SymmetricLowRankTangent",
           "random_frame"]

DEFAULT_EPS = 1e-2
DEFAULT_DIAGONAL_RATE = 0.05
_SERIES_RADIUS = 0.25  # ‖X‖ at which one truncated factor is still accurate


@dataclass(frozen=True, eq=False)
class SymmetricLowRankTangent(Tangent):
    """Local coordinates (ν, μ, K, C) at the point (Q, a); see the module docstring.

    ``nu`` (d,) moves log δ, ``mu`` (k,) moves log(1 + a), ``K`` (k×k skew) rotates inside span Q,
    ``C`` (d×k, C ⊥ Q) rotates Q towards its complement.  Tied to its point (Q, a): checkpoints
    take Q and a from the factor, and ``Factor.transport`` to another point is not implemented.
    """

    _point_fields: ClassVar[tuple[str, ...]] = ("Q", "a")

    dim: int
    nu: Any
    mu: Any
    K: Any
    C: Any
    Q: Any
    a: Any

    def _parts(self):
        """(F, Y) with M = diag(ν) + F Qᵀ + Q Fᵀ + Q Y Qᵀ, and H = Qᵀ diag(ν) Q."""
        xp = B.namespace(self.Q)
        s = 1 + self.a
        lam = s * s
        alpha, beta = self.a, 1 / s - 1
        gamma = 0.5 * (alpha + beta)
        NQ = self.nu[:, None] * self.Q
        H = self.Q.mT @ NQ
        F = NQ * gamma + self.C * ((lam - 1) / s)
        Y = (0.5 * H * (beta[:, None] * alpha[None, :] + alpha[:, None] * beta[None, :])
             + xp.diag(self.mu) + self.K * (lam[None, :] - lam[:, None]) / (s[:, None] * s[None, :]))
        return F, Y, H

    def to_dense(self):
        xp = B.namespace(self.Q)
        F, Y, _ = self._parts()
        FQ = F @ self.Q.mT
        return xp.diag(self.nu) + FQ + FQ.mT + self.Q @ Y @ self.Q.mT

    def trace(self):
        return self.nu.sum() + self.mu.sum()

    def norm(self):
        F, Y, H = self._parts()
        QF = self.Q.mT @ F
        sq = ((self.nu * self.nu).sum() + 4 * (self.nu * (F * self.Q).sum(-1)).sum()
              + 2 * (Y * H).sum() + 2 * (QF * QF.mT).sum() + 2 * (F * F).sum()
              + 4 * (QF * Y).sum() + (Y * Y).sum())
        return B.namespace(self.Q).clip(sq, 0, None) ** 0.5

    def add_identity(self, c):
        return SymmetricLowRankTangent(self.dim, self.nu + c, self.mu, self.K, self.C, self.Q, self.a)

    def __mul__(self, c):
        return SymmetricLowRankTangent(self.dim, self.nu * c, self.mu * c, self.K * c, self.C * c,
                                       self.Q, self.a)

    def __add__(self, other):
        self._check_same(other)
        if other.Q is not self.Q or other.a is not self.a:
            raise TypeError("cannot add symmetric low-rank tangents taken at different points (Q, a)")
        return SymmetricLowRankTangent(self.dim, self.nu + other.nu, self.mu + other.mu,
                                       self.K + other.K, self.C + other.C, self.Q, self.a)


_FRAME_STREAM = 0x4C52  # a stream of its own: seed s must not give the subspace a test problem draws with s


def random_frame(dim: int, rank: int, seed: int = 0) -> np.ndarray:
    """The first k columns of a seeded random orthogonal d×d matrix (numpy float64, deterministic).

    Drawn from the stream ``default_rng([seed, 0x4C52])``, not ``default_rng(seed)``: the test
    problems (``problems.functions.random_subspace``) draw their planted subspace from the latter,
    and an initial Q equal to the answer would hide whether the structure can find it.
    """
    G = np.random.default_rng([int(seed), _FRAME_STREAM]).standard_normal((dim, rank))
    Q, R = np.linalg.qr(G)
    return Q * np.where(np.diag(R) < 0, -1.0, 1.0)


def _check_rank(dim: int, rank) -> int:
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= int(rank) < dim:
        raise ValueError(f"rank must be an integer with 1 <= rank < dim={dim}, got {rank!r}")
    return int(rank)


class SymmetricLowRank(Factor):
    """A = diag(δ)(I + Q diag(a) Qᵀ); the subclasses fix the side of a (module docstring)."""

    #: +1: a ≥ 0 (covariance side), −1: a ≤ 0 (precision side)
    side: ClassVar[int]
    tangent_type = SymmetricLowRankTangent
    retract_methods = ("expm", "truncated")

    def __init__(self, delta, Q, a, *, eps: float = DEFAULT_EPS,
                 diagonal_rate: float = DEFAULT_DIAGONAL_RATE, backend: str | None = None, dtype=None,
                 device=None):
        xp, Q = as_array(Q, backend, dtype, device, "Q")
        dev = xp.device_of(Q)
        _, delta = as_array(delta, xp, Q.dtype, dev, "delta")
        _, a = as_array(a, xp, Q.dtype, dev, "a")
        if delta.ndim != 1 or delta.shape[0] < 2:
            raise ValueError(f"delta must be a 1-D vector of length d >= 2, got shape {tuple(delta.shape)}")
        d = delta.shape[0]
        if Q.ndim != 2 or Q.shape[0] != d:
            raise ValueError(f"Q must have shape ({d}, k), got {tuple(Q.shape)}")
        k = _check_rank(d, Q.shape[1])
        if tuple(a.shape) != (k,):
            raise ValueError(f"a must have shape ({k},), got {tuple(a.shape)}")
        if not bool((delta > 0).all()):
            raise ValueError("delta must be positive (the diagonal D)")
        err = float(xp.to_numpy(abs(Q.mT @ Q - xp.eye(k, dtype=Q.dtype, device=dev)).max()))
        if err > 10 * d * xp.eps(Q.dtype) ** 0.5:
            raise ValueError(f"Q must have orthonormal columns: max |QᵀQ − I| = {err:.2e}")
        if self.side > 0 and not bool((a >= 0).all()):
            raise ValueError(f"{self.name!r} needs a >= 0 (it adds variance), got min(a) = "
                             f"{float(xp.to_numpy(a.min())):.3g}")
        if self.side < 0 and not bool(((a <= 0) & (a > -1)).all()):
            raise ValueError(f"{self.name!r} needs -1 < a <= 0 (it removes variance), got a in "
                             f"[{float(xp.to_numpy(a.min())):.3g}, {float(xp.to_numpy(a.max())):.3g}]")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if not 0 <= diagonal_rate <= 1:
            raise ValueError(f"diagonal_rate must be in [0, 1], got {diagonal_rate!r}")
        self._xp, self.delta, self.Q, self.a = xp, delta, Q, a
        self.eps, self.diagonal_rate = float(eps), float(diagonal_rate)
        # constants of the rank, dtype and device, carried across ``retract``: 1 gives the row sums
        # of d×k arrays as X @ 1 (numpy's ``sum(-1)`` and ``einsum`` over a last axis of length
        # k ≈ 10 are 3–4× slower)
        self._ones, self._eye = xp.ones(k, dtype=Q.dtype, device=dev), xp.eye(k, dtype=Q.dtype, device=dev)

    @classmethod
    def identity(cls, dim: int, rank: int, *, seed: int = 0, eps: float = DEFAULT_EPS,
                 diagonal_rate: float = DEFAULT_DIAGONAL_RATE, backend: str = "numpy", dtype=None,
                 device=None) -> SymmetricLowRank:
        """A = I: δ = 1, a = 0, Q = ``random_frame(dim, rank, seed)``."""
        d = positive_dim(dim)
        k = _check_rank(d, rank)
        xp = B.get_backend(backend)
        dt = resolve_dtype(xp, dtype)
        return cls(xp.ones(d, dtype=dt, device=device), xp.asarray(random_frame(d, k, seed), dtype=dt,
                                                                      device=device),
                   xp.zeros(k, dtype=dt, device=device), eps=eps, diagonal_rate=diagonal_rate,
                   backend=backend)

    rank = property(lambda self: self.Q.shape[1])
    dim = property(lambda self: self.Q.shape[0])
    dtype = property(lambda self: self.Q.dtype)
    xp = property(lambda self: self._xp)

    @property
    def num_parameters(self) -> int:
        """d + k + (dk − k(k+1)/2): δ, a, and Q on the Stiefel manifold (k orthonormal columns)."""
        d, k = self.dim, self.rank
        return d + k + d * k - k * (k + 1) // 2

    def _first_array(self):
        return self.Q

    def __repr__(self):
        return (f"{type(self).__name__}(dim={self.dim}, rank={self.rank}, dtype={dtype_name(self.dtype)}, "
                f"backend={self.xp.name})")

    # -- linear maps ------------------------------------------------------------------------
    def _lowrank(self, Z, coef):
        """Rows of Z (I + Q diag(coef) Qᵀ), as a new array (in place: no further temporaries)."""
        out = ((Z @ self.Q) * coef) @ self.Q.mT
        out += Z
        return out

    def apply(self, Z):
        out = self._lowrank(self._rows(Z), self.a)
        out *= self.delta
        return out

    def apply_transpose(self, Z):
        return self._lowrank(self._rows(Z) * self.delta, self.a)

    def solve(self, X):
        return self._lowrank(self._rows(X, "X") / self.delta, -self.a / (1 + self.a))

    def logdet(self):
        xp = self.xp
        return xp.log(self.delta).sum() + xp.log(1 + self.a).sum()

    def is_finite(self) -> bool:
        xp = self.xp
        return xp.all_finite(self.a) and xp.all_finite(self.delta) and xp.all_finite(self.Q)

    def to_dense(self):
        xp = self.xp
        S = xp.eye(self.dim, dtype=self.dtype, device=self.device) + (self.Q * self.a) @ self.Q.mT
        return self.delta[:, None] * S

    @property
    def scalar_diagonal(self) -> bool:
        """D = δ I (as the pairs route keeps it): then the singular values have a closed form."""
        lo, hi = float(self.delta.min()), float(self.delta.max())
        return hi - lo <= 1e-12 * hi

    def singular_values(self):
        """Descending; closed form δ·{1 + aⱼ, 1 (d − k times)} when D = δ I, else the SVD of
        ``to_dense()`` (O(d³))."""
        if not self.scalar_diagonal:
            return super().singular_values()
        xp = self.xp
        ones = xp.ones(self.dim - self.rank, dtype=self.dtype, device=self.device)
        values = xp.concat([1 + self.a, ones]) * self.delta[0]
        return _descending(xp, values)

    # -- local coordinates ------------------------------------------------------------------
    def _local(self, Gt, B_, gc, QQ, den) -> SymmetricLowRankTangent:
        """(ν, μ, K, C) from G̃ = QᵀGQ, B = (I − P)GQ, gc = diag((I − P)G(I − P)), QQ = Q ∘ Q and
        den = 1 − Pᵢᵢ (= 1 − rowsum(Q ∘ Q)).  B is scaled in place into C (the callers' own
        temporary)."""
        xp = self.xp
        s = 1 + self.a
        lam = s * s
        tau2 = xp.eps(self.dtype)  # τ² with τ = √eps: gc/den, continuously damped where den → 0
        nu = gc * den / (den * den + tau2)
        if self.diagonal_rate != 1:  # ḡ + ρ (g − ḡ), in place
            mean = nu.sum() / self.dim
            nu *= self.diagonal_rate
            nu += (1 - self.diagonal_rate) * mean
        mu = Gt.diagonal() - nu @ QQ
        # the gains in scale-free form, g/(g² + ε) with g = (λⱼ − λᵢ)/√(λᵢλⱼ) (and (λ − 1)/√λ):
        # the denominator is ≥ ε, where ε λᵢλⱼ could round to 0 (float16 at small 1 + a)
        g = (lam[None, :] - lam[:, None]) / (s[:, None] * s[None, :])
        h = (lam - 1) / s
        K = Gt * _damped(xp, g, g * g + self.eps, self.eps > 0)
        c = _damped(xp, h, h * h + self.eps, self.eps > 0)
        B_ *= c
        return SymmetricLowRankTangent(self.dim, nu, mu, 0.5 * (K - K.mT), B_, self.Q, self.a)

    def natural_gradient(self, Z, w) -> SymmetricLowRankTangent:
        Z, w = self._samples_and_weights(Z, w)
        Q, ones, total = self.Q, self._ones, w.sum()
        Y = Z @ Q  # rows Qᵀzᵢ
        WY = w[:, None] * Y
        YWY = Y.mT @ WY
        ZWY = Z.mT @ WY
        B_ = ZWY - Q @ YWY  # (I − P) Zᵀ W Y
        Gt = YWY - total * self._eye
        # gc = Σᵢ wᵢ ((I − P) zᵢ)² − total (1 − Pⱼⱼ), expanded so that no (n, d) array but Z∘Z is
        # formed: Σᵢ wᵢ zᵢ² − rowsum(Q ∘ (2 ZᵀWY − Q YᵀWY)) − total (1 − rowsum(Q ∘ Q))
        QQ = Q * Q
        den = 1 - QQ @ ones
        ZWY += B_
        ZWY *= Q
        gc = w @ (Z * Z) - ZWY @ ones - total * den
        return self._local(Gt, B_, gc, QQ, den)

    def project(self, G) -> SymmetricLowRankTangent:
        G, Q, ones = self._square(G), self.Q, self._ones
        GQ = G @ Q
        Gt = Q.mT @ GQ
        B_ = GQ - Q @ Gt
        gc = self.xp.diagonal(G) - (Q * (GQ + B_)) @ ones
        QQ = Q * Q
        return self._local(0.5 * (Gt + Gt.mT), B_, gc, QQ, 1 - QQ @ ones)

    # -- retraction -------------------------------------------------------------------------
    def _retract(self, T: SymmetricLowRankTangent, step, method, order):
        xp = self.xp
        if tuple(T.C.shape) != tuple(self.Q.shape):
            raise TypeError(f"tangent rank {T.C.shape[1]} does not match the factor's {self.rank}")
        t = float(step)
        delta = self.delta * xp.exp(t * T.nu)
        s = (1 + self.a) * xp.exp(t * T.mu)
        if method == "expm":
            Q = self._rotate_expm(T, t)
        else:
            Q = self._rotate_truncated(T, t, order)
        return self._replace(delta=delta, Q=Q, a=self._clip(s - 1))

    def _rotate_expm(self, T, t):
        """[Q C] expm(2t [[K, −CᵀC], [I, 0]])[:, :k]: the rotation exp(2tΩ)Q, no orthonormalisation.

        Ω = Q K Qᵀ + C Qᵀ − Q Cᵀ (C ⊥ Q) maps span [Q C] to itself, ΩQ = QK + C and ΩC = −Q CᵀC,
        so its exponential acts on Q through the 2k×2k matrix of Ω in the (not orthonormal) basis
        [Q C]; it is similar to the skew generator [[K, −Eᵀ], [E, 0]] of the frame [Q W], C = W E.
        """
        xp, Q, k = self.xp, self.Q, self.rank
        C = T.C - Q @ (Q.mT @ T.C)  # C ⊥ Q (clean round-off)
        X = xp.zeros((2 * k, 2 * k), dtype=self.dtype, device=self.device)
        X[:k, :k] = (2 * t) * T.K
        X[:k, k:] = (-2 * t) * (C.mT @ C)
        X[k:, :k] = xp.eye(k, dtype=self.dtype, device=self.device) * (2 * t)
        R = xp.expm(X)
        Q = Q @ R[:k, :k] + C @ R[k:, :k]
        # the basis is not orthonormal: round-off in Q's columns grows like eps (t‖C‖)², which
        # float64 never sees at the ES's steps (t‖C‖ < 1) but float32 and below do; one
        # Newton–Schulz step squares the error away
        return Q if xp.eps(self.dtype) < 1e-10 else newton_schulz(Q)

    def _rotate_truncated(self, T, t, order):
        """h_p(X/2^s) applied 2^s times to Q, X = 2t Ω, each time polished by two Newton–Schulz steps.

        Ω V = Q(K QᵀV) + C QᵀV − Q(CᵀV) is the ambient skew generator; s makes ‖X/2^s‖ ≤ ¼.
        """
        xp, Q = self.xp, self.Q
        C = T.C - Q @ (Q.mT @ T.C)
        K = T.K
        norm = float(xp.to_numpy(2 * t * (((K * K).sum() + 2 * (C * C).sum()) ** 0.5)))
        s = max(0, math.ceil(math.log2(norm / _SERIES_RADIUS))) if norm > _SERIES_RADIUS else 0
        h = 2 * t / 2**s

        def omega(V):
            QV = Q.mT @ V
            return h * (Q @ (K @ QV) + C @ QV - Q @ (C.mT @ V))

        V = Q
        for _ in range(2**s):
            R = V + omega(V) / order
            for j in range(order - 1, 0, -1):
                R = V + omega(R) / j
            V = newton_schulz(newton_schulz(R))
        return V

    def _clip(self, a):
        if self.side > 0:
            return a.clip(0, None)
        return a.clip(-1 + 16 * self.xp.eps(self.dtype), 0)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self):
        xp = self.xp
        return {"structure": self.name, "dtype": dtype_name(self.dtype), "delta": xp.copy(self.delta),
                "Q": xp.copy(self.Q), "a": xp.copy(self.a), "eps": self.eps,
                "diagonal_rate": self.diagonal_rate}

    @classmethod
    def from_state_dict(cls, state):
        check_state(state, cls.name, ("delta", "Q", "a"))
        return cls(state["delta"], state["Q"], state["a"], eps=state.get("eps", DEFAULT_EPS),
                   diagonal_rate=state.get("diagonal_rate", DEFAULT_DIAGONAL_RATE), dtype=state.get("dtype"))


def _damped(xp, num, den, positive: bool = False):
    """num/den where den > 0, else 0 (``positive``: den > 0 is known)."""
    if positive:
        return num / den
    pos = den > 0
    return xp.where(pos, num / xp.where(pos, den, xp.ones_like(den)), xp.zeros_like(num))


@register
class LowRankCov(SymmetricLowRank):
    """Σ = D(I + VVᵀ)D: ``A = diag(δ)(I + Q diag(a) Qᵀ)`` with a ≥ 0 (adds variance; valleys)."""

    name = "lowrank-cov"
    side = 1


@register
class LowRankPrecision(SymmetricLowRank):
    """Σ⁻¹ = D⁻¹(I + VVᵀ)D⁻¹: ``A = diag(δ)(I + Q diag(a) Qᵀ)`` with −1 < a ≤ 0 (stiff subspaces)."""

    name = "lowrank-precision"
    side = -1
