"""The pairs route: a value-based curvature model for the symmetric low-rank structures.

Each generation evaluates the mean and n_p mirrored pairs x± = m ± vᵢ, vᵢ = σ A zᵢ (zᵢ ~ N(0, I)):

    gᵢ = (f(m + vᵢ) − f(m − vᵢ))/2 = vᵢᵀ∇f(m) + O(‖v‖³)
    hᵢ = f(m + vᵢ) + f(m − vᵢ) − 2 f(m) = vᵢᵀ∇²f vᵢ + O(‖v‖⁴)

both exact on a quadratic.  qᵢ = hᵢ/‖vᵢ‖² is the curvature along the unit direction uᵢ = vᵢ/‖vᵢ‖;
(uᵢ, qᵢ) does not depend on m, σ or A, so the pairs of every generation go into one buffer.  A
low-rank model of the Hessian (algorithms.md §3, "the values route"; §4, the zeroth-order estimator
Aᵀ E[∇²ℓ] A = E[(zzᵀ − I) ℓ] with mirrored pairs),

    Ĥ = s I + Q diag(γ) Qᵀ,     Q ∈ R^{d×k} orthonormal,

is fitted to the buffer by least squares (``fit_curvature``), gated on enough pairs for the rank it
fits and accepted only if it predicts held-out pairs (``PairsRoute``); a rejected fit is retried
after k·d new pairs, at a spacing that doubles up to a quarter of the buffer (``_maybe_fit``).
The search distribution is then whitened by it, A = (Ĥ/s)^{-1/2} = I + Q diag((1 + γ/s)^{-1/2} − 1) Qᵀ,
which is a member of the ``lowrank-precision`` family (γ ≥ 0: stiff directions) or of the
``lowrank-cov`` family (γ ≤ 0: valleys); each side keeps only the directions of its own sign.

The mean moves by a Newton step inside the span of the generation's directions V = [v₁ … v_{n_p}]:

    α = −(VᵀĤV)⁻¹ g,   with the diagonal of VᵀĤV replaced by the measured hᵢ,    m ← m + κ V α,

shortened to a whitened length ‖A⁻¹Δm‖ ≤ 10 σ√d.  κ ∈ (0, 1] halves when the next generation's
f(m) is worse than the last accepted one (the step is then undone) and grows back by 1.5 on
success.  σ, the probe length, follows the whitened length of the accepted steps:
σ ← σ^{0.8} (‖A⁻¹Δm‖/√n_p)^{0.2}.  Pairs whose h is not resolved above rounding
(|h| ≤ 1e-8 max |f|) stay out of the buffer (the step still uses them), and when most pairs of a
generation are unresolved σ doubles.

Not invariant to monotone transformations of f (ranks are; values are not): the route uses f's
values, so on g ∘ f with a non-affine increasing g the model sees g's curvature too.  Non-finite
values never enter the fit or the step.  On a non-quadratic f the held-out check may never accept a
model; the route then keeps A and steps with Ĥ = median(q) I.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg

__all__ = ["CurvatureModel", "default_capacity", "Fit", "fit_curvature", "held_out_residual",
           "PairBuffer", "PairsRoute", "SIDES"]

SIDES = ("precision", "covariance", "both")

#: a fitted direction is kept when its curvature differs from the background s by this factor
_KEEP_RATIO = 2.0
#: the held-out residual (relative to the spread of q) a model must reach to be accepted
_ACCEPT_RESIDUAL = 1e-3
#: log-ratio error (RMS of log(q/q̂) on fresh pairs, averaged) above which a model is refitted
_REFIT_ERROR = 0.05
#: a pair enters the buffer only if |h| > this · max(|f₊|, |f₋|, |f(m)|) (rounding of h ≈ eps·|f|)
_RESOLVED = 1e-8
#: the Newton step's whitened length is at most this many probe lengths σ√d
_TRUST = 10.0
#: every this-many-th pair goes to the held-out fold (a fifth of the buffer)
_HELD_OUT_EVERY = 5
#: a pass over the directions converts this many bytes of rows to float64 at a time (cache-sized)
_BLOCK_BYTES = 2**21
#: random columns beyond k in a block of the spectral start (the gap they give the top k)
_OVERSAMPLE = 6
#: passes (blocks A^j X) of the block Krylov space of the spectral start
_KRYLOV_BLOCKS = 16
#: a Gauss–Newton step that leaves the residual above this fraction of the last one makes little
#: progress; _STALL such steps in a row and the fit has stalled
_STALL_RATIO, _STALL = 0.9, 3
#: a fit whose residual is still above _HOPELESS_LEVEL after _HOPELESS_AFTER steps is hopeless: in
#: its basin the residual converges quadratically, after a slow start when the pairs are few (from
#: 2·k·d isotropic pairs at d = 1000: 0.15 after 5 steps, 3e-3 after 8, 7e-9 after 11)
_HOPELESS_AFTER, _HOPELESS_LEVEL = 12, 1e-2
#: past the first fits, the spacing of fit attempts doubles after each rejection up to this
#: fraction of the buffer's capacity (``PairsRoute._maybe_fit``)
_RETRY_LIMIT = 0.25
#: conjugate-gradient iterations per Gauss–Newton step at most, and the largest relative tolerance
#: they solve the step's normal equations to
_CG_MAX, _CG_FORCING = 40, 0.1


@dataclass(frozen=True)
class CurvatureModel:
    """Ĥ = s I + Q diag(γ) Qᵀ (numpy float64): s > 0, Q (d, k) orthonormal, γ (k,) with s + γ > 0."""

    s: float
    Q: np.ndarray
    gamma: np.ndarray

    def curvature(self, U: np.ndarray) -> np.ndarray:
        """uᵀĤu for the rows u of U (n, d)."""
        P = U @ self.Q
        return self.s * (U * U).sum(-1) + (P * P) @ self.gamma

    def apply(self, V: np.ndarray) -> np.ndarray:
        """Rows Ĥv for the rows v of V (n, d)."""
        return self.s * V + ((V @ self.Q) * self.gamma) @ self.Q.T

    def whitening(self) -> np.ndarray:
        """a with (Ĥ/s)^{-1/2} = I + Q diag(a) Qᵀ."""
        return (1.0 + self.gamma / self.s) ** -0.5 - 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"s": self.s, "Q": self.Q.copy(), "gamma": self.gamma.copy()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CurvatureModel:
        return cls(float(state["s"]), np.array(state["Q"], dtype=np.float64),
                   np.array(state["gamma"], dtype=np.float64))


# -- the least-squares fit -------------------------------------------------------------------------


class Fit(NamedTuple):
    """What ``fit_curvature`` returns: the model (None if not positive definite), its train residual
    RMS((q̂ − q)/q), the Gauss–Newton steps, the passes over the N×d directions, and why it stopped
    (``"tol"``, ``"stall"``, ``"hopeless"``, ``"step"``, ``"max_iter"`` or ``"not finite"``)."""

    model: CurvatureModel | None
    train: float
    iterations: int
    passes: int
    stop: str


class _Rows:
    """U = diag(scale) V, rows uᵢ = vᵢ/‖vᵢ‖ with V stored in any float dtype (float32 in the buffer).

    ``apply`` and ``adjoint`` compute in float64: a pass converts blocks of rows to float64 (a few
    MiB, so that they stay in cache) and multiplies them, so one pass reads V from memory once, and
    a float32 V costs half the memory traffic of a float64 one; ``tangent`` (the CG passes) reads
    the blocks in place, in V's dtype.  ``passes`` counts the passes."""

    def __init__(self, V: np.ndarray, scale: np.ndarray | None):
        self.V = V
        self.scale = np.ones(len(V)) if scale is None else scale
        self.rows = max(1, _BLOCK_BYTES // (8 * V.shape[1]))
        self.passes = 0

    def _blocks(self, convert: bool = True):
        """One pass: (i, j, B) for consecutive blocks B = V[i:j], converted to float64 in one reused
        buffer (else views of V, in V's dtype)."""
        self.passes += 1
        N, d = self.V.shape
        rows = self.rows if convert else max(1, _BLOCK_BYTES // (self.V.itemsize * d))
        block = np.empty((min(rows, N), d)) if convert else None
        for i in range(0, N, rows):
            j = min(i + rows, N)
            if convert:
                B = block[:j - i]
                np.copyto(B, self.V[i:j])  # float32 → float64 exactly
            else:
                B = self.V[i:j]
            yield i, j, B

    def apply(self, X: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """One pass: P = U X and, given w (N,), G = Uᵀ diag(w) U X = Vᵀ (scale² w ⊙ (V X)) (else None)."""
        N, d = self.V.shape
        P = np.empty((N, X.shape[1]))
        G = None if w is None else np.zeros((d, X.shape[1]))
        for i, j, B in self._blocks():
            VX = B @ X
            if G is not None:
                G += B.T @ ((self.scale[i:j] ** 2 * w[i:j])[:, None] * VX)
            P[i:j] = self.scale[i:j, None] * VX
        return P, G

    def adjoint(self, W: np.ndarray) -> np.ndarray:
        """One pass: Uᵀ W for W (N, m)."""
        G = np.zeros((self.V.shape[1], W.shape[1]))
        for i, j, B in self._blocks():
            G += B.T @ (self.scale[i:j, None] * W[i:j])
        return G

    def tangent(self, P: np.ndarray, Z: np.ndarray, a0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One pass: aᵢ = a0ᵢ + 2 pᵢᵀ Zᵀuᵢ (pᵢ the rows of P) and G = 2 Uᵀ diag(a) P: the
        Jacobian J of the curvatures along a tangent direction, and Jᵀ of the result, fused.

        The products are taken in V's dtype (float32 in the buffer: half the time of float64 at
        a relative error ~1e-7, which the CG iterations that use this pass tolerate), the sums of
        G over blocks in float64."""
        a = np.empty(len(P))
        G = np.zeros((self.V.shape[1], P.shape[1]))
        Zc, Pc = Z.astype(self.V.dtype, copy=False), P.astype(self.V.dtype, copy=False)
        for i, j, B in self._blocks(convert=False):
            UZ = self.scale[i:j, None] * (B @ Zc)
            a[i:j] = a0[i:j] + 2.0 * np.einsum("ij,ij->i", P[i:j], UZ)
            W = (2.0 * self.scale[i:j] * a[i:j])[:, None] * Pc[i:j]
            G += B.T @ W.astype(self.V.dtype, copy=False)
        return a, G


def _block_krylov(op, X: np.ndarray, k: int, blocks: int) -> np.ndarray:
    """The k Ritz vectors of largest |eigenvalue| of the symmetric X ↦ op(X) in the block Krylov
    space span[X, A X, …, A^(b−1) X] (b = ``blocks`` passes, fewer if the space closes early).

    Against subspace iteration with the same passes, its error falls with the square root of the
    eigengap (Musco & Musco 2015): at d = 3000 from 2·k·d isotropic pairs, 12 passes reach the
    converged estimate that subspace iteration needs 30 for.  Each new block is orthogonalised
    against the basis by classical Gram–Schmidt twice and a pivoted QR, which keeps the columns
    whose pivot exceeds 1e-8 of the largest image column so far (≤ ‖A‖; none left: the space has
    closed); the kept block is projected once more, so that its round-off (eps ‖A‖/pivot ≤ 1e-8)
    does not grow in later blocks.
    """
    basis, images, scale = [X], [], 0.0
    for j in range(blocks):
        W = op(basis[-1])
        images.append(W)
        if j == blocks - 1:
            break
        scale = max(scale, float(np.sqrt((W * W).sum(0).max())))
        K = np.concatenate(basis, axis=1)
        R = W - K @ (K.T @ W)
        R -= K @ (K.T @ R)
        Xn, T, _ = scipy.linalg.qr(R, mode="economic", pivoting=True)
        rank = int(np.count_nonzero(np.abs(np.diag(T)) > 1e-8 * scale))  # pivots non-increasing
        if rank == 0:
            break
        Xn = Xn[:, :rank]
        basis.append(np.linalg.qr(Xn - K @ (K.T @ Xn))[0])
    K, AK = np.concatenate(basis, axis=1), np.concatenate(images, axis=1)
    T = K.T @ AK
    lam, E = np.linalg.eigh((T + T.T) / 2)
    return K @ E[:, np.argsort(-np.abs(lam))[:k]]


def _start(d: int, Y: np.ndarray | None, k: int, rng: np.random.Generator) -> np.ndarray:
    """An orthonormal basis of span(Y) plus random columns: k + _OVERSAMPLE columns at least."""
    extra = max(_OVERSAMPLE, k + _OVERSAMPLE - (0 if Y is None else Y.shape[1]))
    X = rng.standard_normal((d, extra))
    return np.linalg.qr(X if Y is None or Y.shape[1] == 0 else np.concatenate([Y, X], axis=1))[0]


def _features(P: np.ndarray) -> np.ndarray:
    """F (N, 1 + k(k+1)/2) with q̂ = F θ = s + pᵀ C p for θ = (s, the upper triangle of C)."""
    iu = np.triu_indices(P.shape[1])
    return np.concatenate([np.ones((len(P), 1)),
                           P[:, iu[0]] * P[:, iu[1]] * np.where(iu[0] == iu[1], 1.0, 2.0)], axis=1)


def _unpack(theta: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """(s, C) from θ = (s, the upper triangle of C)."""
    iu = np.triu_indices(k)
    C = np.zeros((k, k))
    C[iu] = theta[1:]
    return float(theta[0]), C + C.T - np.diag(np.diag(C))


def _fit_s_and_C(P: np.ndarray, q: np.ndarray, weights: np.ndarray | None):
    """Least squares for q ≈ s + pᵀ C p, rows p of P = U Y, C symmetric (k(k+1)/2 unknowns)."""
    F, rhs = _features(P), q
    if weights is not None:
        F, rhs = F * weights[:, None], q * weights
    return _unpack(np.linalg.lstsq(F, rhs, rcond=None)[0], P.shape[1])


def _predict(P: np.ndarray, s: float, C: np.ndarray) -> np.ndarray:
    """s + pᵀ C p for the rows p of P = U Y (unit rows u)."""
    return s + np.einsum("ij,jk,ik->i", P, C, P)


class _Point(NamedTuple):
    """A point of the fit: Y (d, k) orthonormal, P = U Y, F = features(P), θ = (s, C) the least
    squares given Y, r = F θ − q and the relative residual ‖r‖/spread(q)."""

    Y: np.ndarray
    P: np.ndarray
    F: np.ndarray
    theta: np.ndarray
    r: np.ndarray
    res: float


def _point(U: _Rows, Y: np.ndarray, q: np.ndarray, spread: float, P: np.ndarray | None = None) -> _Point:
    """The fit's point at Y (one pass for P = U Y unless P is given)."""
    P = U.apply(Y)[0] if P is None else P
    F = _features(P)
    theta = np.linalg.lstsq(F, q, rcond=None)[0]
    r = F @ theta - q
    return _Point(Y, P, F, theta, r, float(np.linalg.norm(r)) / spread)


def _preconditioner(x: _Point, d: int) -> tuple[np.ndarray, np.ndarray]:
    """CG's preconditioner at x, block-diagonal: (FᵀF)⁻¹ on δθ and, on Z, Z ↦ Z · d/4 (PᵀP)⁻¹, the
    inverse of E[Jᵀ J] Z = (4/d) Z PᵀP for isotropic unit u.  Returns the two matrices."""
    return (np.linalg.pinv(x.F.T @ x.F, hermitian=True),
            (d / 4.0) * np.linalg.pinv(x.P.T @ x.P, hermitian=True))


def _gauss_newton_direction(U: _Rows, x: _Point, forcing: float) -> tuple[np.ndarray, np.ndarray]:
    """The Gauss–Newton step (δθ, Z) at x, by preconditioned conjugate gradients.

    The tangent space of {s I + Y C Yᵀ} at x is δĤ = δs I + Y δC Yᵀ + Z Yᵀ + Y Zᵀ with YᵀZ = 0, so
    the curvatures move by J(δθ, Z)ᵢ = Fᵢ δθ + 2 pᵢᵀ Zᵀuᵢ, linear in (δθ, Z).  CG solves the normal
    equations Jᵀ J (δθ, Z) = −Jᵀ r to the relative tolerance ``forcing``, at most _CG_MAX
    iterations, each one fused pass (``_Rows.tangent``), preconditioned by ``_preconditioner``.
    """
    Y, P, F = x.Y, x.P, x.F
    G = U.adjoint(2.0 * x.r[:, None] * P)
    G -= Y @ (Y.T @ G)  # YᵀG = 2Pᵀ diag(r) P is 0 already (Fᵀr = 0), up to rounding
    theta_scale, z_scale = _preconditioner(x, U.V.shape[1])

    def normal(t: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, GZ = U.tangent(P, Z, F @ t)
        return F.T @ a, GZ - Y @ (Y.T @ GZ)

    def dot(u: tuple, v: tuple) -> float:
        return float(u[0] @ v[0] + np.vdot(u[1], v[1]))

    b = (-(F.T @ x.r), -G)  # Fᵀr = 0 up to rounding: θ is the least squares at Y
    sol = (np.zeros_like(b[0]), np.zeros_like(G))
    res = (b[0].copy(), b[1].copy())
    z = (theta_scale @ res[0], res[1] @ z_scale)
    p = z
    rz, target = dot(res, z), forcing * math.sqrt(dot(b, b))
    for _ in range(_CG_MAX):
        Ap = normal(*p)
        curvature = dot(p, Ap)
        if not (rz > 0 and curvature > 0):  # a zero gradient, or J p = 0 to rounding
            break
        alpha = rz / curvature
        sol = (sol[0] + alpha * p[0], sol[1] + alpha * p[1])
        res = (res[0] - alpha * Ap[0], res[1] - alpha * Ap[1])
        if math.sqrt(dot(res, res)) <= target:
            break
        z = (theta_scale @ res[0], res[1] @ z_scale)
        rz, rz_old = dot(res, z), rz
        p = (z[0] + rz / rz_old * p[0], z[1] + rz / rz_old * p[1])
    return sol


def _retract(x: _Point, delta: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """The k-dim dominant subspace of L = Y (C + δC) Yᵀ + Z Yᵀ + Y Zᵀ = W [[C + δC, I], [I, 0]] Wᵀ,
    W = [Y Z]: with B an orthonormal basis of span W (thin SVD of [Y, Z − YYᵀZ], which drops the
    directions of a rank-deficient Z) and M = Bᵀ W, the top-|λ| eigenvectors of the (≤ 2k)-square
    M [[C + δC, I], [I, 0]] Mᵀ, mapped back by B; nothing d×d."""
    Y = x.Y
    k = Y.shape[1]
    _, C = _unpack(x.theta + delta, k)
    B, sv, _ = np.linalg.svd(np.concatenate([Y, Z - Y @ (Y.T @ Z)], axis=1), full_matrices=False)
    B = B[:, sv > 1e-12 * sv[0]]  # span W ⊇ span Y: at least k columns
    M = B.T @ np.concatenate([Y, Z], axis=1)
    eye = np.eye(k)
    lam, E = np.linalg.eigh(M @ np.block([[C, eye], [eye, np.zeros((k, k))]]) @ M.T)
    return B @ E[:, np.argsort(-np.abs(lam))[:k]]


def _spectral(U: _Rows, q: np.ndarray, k: int, spread: float, rng: np.random.Generator) -> _Point:
    """The start from the spectral estimate E[q uuᵀ] = (tr H I + 2H)/(d(d + 2)) for isotropic u:
    the top-k eigenvectors of its centred sample version, from a block Krylov space
    (``_block_krylov``, at most _KRYLOV_BLOCKS passes, and one for U Y)."""
    N, d = U.V.shape
    eta = d * (d + 2) / (2.0 * N)
    qc = q - q.mean()
    shift = eta * qc.sum() / d

    def moment(X):
        return eta * U.apply(X, qc)[1] - shift * X

    return _point(U, _block_krylov(moment, _start(d, None, k, rng), k, _KRYLOV_BLOCKS), q, spread)


#: the step fractions tried, largest first, until one lowers the residual
_STEP_FRACTIONS = (1.0, 0.5, 0.25, 0.125, 0.0625)


def _gauss_newton(U: _Rows, x: _Point, q: np.ndarray, spread: float, max_iter: int,
                  tol: float) -> tuple[_Point, int, str]:
    """Gauss–Newton steps from x (``fit_curvature``, step 2): the last point, the steps, and why
    it stopped."""
    iterations, slow = 0, 0
    if not math.isfinite(x.res):
        return x, 0, "not finite"
    while x.res >= tol:
        if iterations >= max_iter:
            return x, iterations, "max_iter"
        iterations += 1
        forcing = min(_CG_FORCING, max(math.sqrt(x.res), tol / (2 * x.res)))
        delta, Z = _gauss_newton_direction(U, x, forcing)
        if not (np.any(delta) or np.any(Z)):
            return x, iterations, "step"
        for t in _STEP_FRACTIONS:
            new = _point(U, _retract(x, t * delta, t * Z), q, spread)
            if new.res < x.res:  # NaN compares false: the next fraction
                break
        else:
            return x, iterations, "step"
        slow = slow + 1 if new.res > _STALL_RATIO * x.res else 0
        x = new
        if slow >= _STALL:
            return x, iterations, "stall"
        if iterations >= _HOPELESS_AFTER and x.res > _HOPELESS_LEVEL:
            return x, iterations, "hopeless"
    return x, iterations, "tol"


def fit_curvature(V: np.ndarray, q: np.ndarray, rank: int, side: str = "both", *,
                  inv_norm: np.ndarray | None = None, rng: np.random.Generator | None = None,
                  start: np.ndarray | None = None, max_iter: int = 30, tol: float = 1e-7) -> Fit:
    """Fit Ĥ = s I + Q diag(γ) Qᵀ of rank ≤ ``rank`` to curvatures qᵢ ≈ uᵢᵀĤuᵢ, uᵢ = vᵢ · inv_normᵢ
    (unit rows; ``inv_norm`` None: V's rows are unit already).  V may be float32 (the buffer's
    storage); the products are taken a block of rows at a time, in float64 except in the CG
    passes (``_Rows.tangent``).

    1. Subspace Y (d×k): the spectral estimate from E[q uuᵀ] = (tr H I + 2H)/(d(d + 2)) for isotropic
       u (Rayleigh–Ritz in a block Krylov space of 16 passes), or ``start`` (completed to k columns);
       a fit from ``start`` that ends short of ``tol`` other than at ``max_iter`` (a stale
       model) is run again from the spectral estimate, and the better of the two kept.
    2. Gauss–Newton on the manifold {s I + Y C Yᵀ}: at each Y, (s, C) is the exact least squares
       (variable projection); the step (δs, δC, Z) solves the linearised least squares by
       preconditioned CG (``_gauss_newton_direction``) to the relative tolerance
       min(0.1, max(√res, tol/(2 res))) (inexact Newton), and Y moves to the dominant k-subspace
       of Y(C + δC)Yᵀ + ZYᵀ + YZᵀ, the step halved until the residual falls.  This is low-rank
       matrix sensing: the curvatures are exact on a quadratic, so the residual converges
       quadratically once Y is in the basin, and from isotropic u a rank-r H is recovered from
       2·r·d pairs (1.6·r·d in the train fold).  The fit stops when the residual (relative to
       the spread of q) is below ``tol`` (1e-7 leaves a whitened condition of about 1 + 1e-3 at
       d = 300, c = 1e6), after 3 steps in a row of < 10% progress ("stall"), when it is still
       above 1e-2 after 12 steps ("hopeless": outside the basin, too few pairs), when no step
       fraction 1, ½, …, 1/16 lowers it ("step"), or at ``max_iter`` steps.  Passes over the
       N×d directions: at most 17 for the spectral start (fewer once 16·(k + 6) ≳ d), 1 for
       ``start``, then per step one for the gradient, one per CG iteration and one (U Y) per
       step fraction tried.
    3. (s, C) again with relative weights 1/qᵢ (every direction's curvature to the same relative
       accuracy: that is what whitening needs), C = E diag(γ) Eᵀ, keep the directions of ``side``
       whose curvature differs from s by a factor ≥ 2 (``"precision"``: γ ≥ s; ``"covariance"``:
       s + γ ≤ s/2; ``"both"``), and refit (s, C) on those.

    Returns a ``Fit``; its model is None (train residual inf) if the fit is not positive definite
    (s ≤ 0 or s + γ ≤ 0).
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    U = _Rows(V, inv_norm)
    d = V.shape[1]
    k = int(rank)
    if not (np.all(np.isfinite(q)) and (start is None or np.all(np.isfinite(start)))):
        return Fit(None, math.inf, 0, 0, "not finite")
    # the residual's scale: the spread of q (its norm if q is constant, so that tol stays relative)
    spread = float(np.linalg.norm(q - q.mean())) or float(np.linalg.norm(q)) or 1.0
    if start is not None and start.shape[1] > 0:
        x = _point(U, _start(d, start[:, :k], k, rng)[:, :k], q, spread)
        x, iterations, stop = _gauss_newton(U, x, q, spread, max_iter, tol)
        if stop not in ("tol", "max_iter"):  # a poor start (a stale model): from the spectral
            # estimate too, and keep the better one
            again = _gauss_newton(U, _spectral(U, q, k, spread, rng), q, spread, max_iter, tol)
            iterations += again[1]
            if again[0].res < x.res:
                x, stop = again[0], again[2]
    else:
        x, iterations, stop = _gauss_newton(U, _spectral(U, q, k, spread, rng), q, spread, max_iter,
                                            tol)
    if not math.isfinite(x.res):
        return Fit(None, math.inf, iterations, U.passes, "not finite")
    weights = 1.0 / np.maximum(np.abs(q), 1e-300)
    Y, P = x.Y, x.P
    s, C = _fit_s_and_C(P, q, weights)
    gamma, E = np.linalg.eigh(C)
    ratio = (s + gamma) / s if s > 0 else np.zeros_like(gamma)
    keep = {"precision": ratio >= _KEEP_RATIO, "covariance": ratio <= 1 / _KEEP_RATIO,
            "both": (ratio >= _KEEP_RATIO) | (ratio <= 1 / _KEEP_RATIO)}[side]
    Y, P = Y @ E[:, keep], P @ E[:, keep]
    s, C = _fit_s_and_C(P, q, weights)
    gamma, E = np.linalg.eigh(C)
    if not (s > 0 and np.all(s + gamma > 0) and np.all(np.isfinite(gamma))):
        return Fit(None, math.inf, iterations, U.passes, stop)
    model = CurvatureModel(s, Y @ E, gamma)
    train = float(np.sqrt(np.mean(((_predict(P @ E, s, np.diag(gamma)) - q) * weights) ** 2)))
    return Fit(model, train, iterations, U.passes, stop)


def held_out_residual(model: CurvatureModel, V: np.ndarray, inv_norm: np.ndarray,
                      q: np.ndarray) -> float:
    """‖q̂ − q‖/‖q − mean q‖ on pairs the fit did not see (one pass over V, float64 products)."""
    if len(q) == 0:
        return math.inf
    P = _Rows(V, inv_norm).apply(model.Q)[0]
    pred = _predict(P, model.s, np.diag(model.gamma))
    return float(np.linalg.norm(pred - q) / max(np.linalg.norm(q - q.mean()), 1e-300))


# -- the buffer ------------------------------------------------------------------------------------


class _Ring:
    """A ring buffer of pairs: directions v (float32, (capacity, d)), 1/‖v‖ and q (float64).

    ``limit`` (≤ capacity) is the number of slots in use: new pairs replace the oldest once that
    many are stored.  It starts at the capacity; ``hold`` lowers it to the current fill.
    """

    def __init__(self, dim: int, capacity: int):
        self.capacity, self.count = int(capacity), 0
        self.limit = self.capacity
        # reserved, not touched: pages are used as pairs arrive
        self.V = np.empty((self.capacity, dim), dtype=np.float32)
        self.inv_norm, self.q = np.empty(self.capacity), np.empty(self.capacity)

    def __len__(self) -> int:
        return min(self.count, self.limit)

    def hold(self) -> None:
        """Use no more slots than are filled now (at least one)."""
        self.limit = max(1, len(self))

    def add(self, V: np.ndarray, inv_norm: np.ndarray, q: np.ndarray) -> None:
        idx = (self.count + np.arange(len(q))) % self.limit
        self.V[idx], self.inv_norm[idx], self.q[idx] = V, inv_norm, q
        self.count += len(q)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views (no copy) of the filled rows: V, 1/‖v‖, q."""
        n = len(self)
        return self.V[:n], self.inv_norm[:n], self.q[:n]

    def state_dict(self) -> dict[str, Any]:
        V, inv_norm, q = self.arrays()
        return {"count": self.count, "limit": self.limit, "V": V.copy(), "inv_norm": inv_norm.copy(),
                "q": q.copy()}

    def load(self, state: dict[str, Any]) -> None:
        n = len(state["q"])
        self.V[:n], self.inv_norm[:n], self.q[:n] = state["V"], state["inv_norm"], state["q"]
        self.count = int(state["count"])
        self.limit = int(state.get("limit", self.capacity))  # before ``hold``: the capacity


class PairBuffer:
    """The pairs (vᵢ, qᵢ) of the route, split at insertion into a train and a held-out fold.

    Pair number t (counting every pair ever added) goes to the held-out fold when
    t mod 5 = 4, so a fifth of the buffer is held out and the fit reads the train fold as a
    contiguous view, never a copy.  Each fold is a ring buffer (capacity // 5 held-out pairs, the
    rest train): together they hold the latest ``capacity`` pairs or, after ``hold`` (the route
    calls it when it accepts a model), the latest as many as were stored then.  Directions are
    stored in float32 (4·d bytes a pair) with 1/‖v‖ computed from the float64 v handed in, and q
    in float64: exact when v is representable in float32 (the strategy rounds its directions
    before it evaluates them); otherwise the stored direction is v rounded, a relative change
    ≤ 6e-8.
    """

    def __init__(self, dim: int, capacity: int):
        self.dim, self.capacity = int(dim), int(capacity)
        if self.capacity < 2:
            raise ValueError(f"the pair buffer needs a capacity ≥ 2 (a train and a held-out pair), "
                             f"got {capacity}")
        held = max(1, self.capacity // _HELD_OUT_EVERY)
        try:
            self.train, self.held_out = _Ring(self.dim, self.capacity - held), _Ring(self.dim, held)
        except MemoryError as e:
            raise MemoryError(
                f"the pair buffer needs {(4 * self.dim + 16) * self.capacity / 2**30:.1f} GiB "
                f"({self.capacity} pairs × d = {self.dim} float32); pass a smaller pairs_capacity= "
                f"(the first fit is tried at 2·rank·d pairs)") from e
        self.total = 0

    def __len__(self) -> int:
        return len(self.train) + len(self.held_out)

    def hold(self) -> None:
        """Stop growing: from now on new pairs replace the oldest of those stored now."""
        self.train.hold()
        self.held_out.hold()

    def add(self, V: np.ndarray, q: np.ndarray) -> None:
        """Add directions V (n, d; any norm, float64) with curvatures q = h/‖v‖² (n,)."""
        inv_norm = 1.0 / np.sqrt((V * V).sum(-1))
        held = (self.total + np.arange(len(q))) % _HELD_OUT_EVERY == _HELD_OUT_EVERY - 1
        self.train.add(V[~held], inv_norm[~held], q[~held])
        self.held_out.add(V[held], inv_norm[held], q[held])
        self.total += len(q)

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "total": self.total, "train": self.train.state_dict(),
                "held_out": self.held_out.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], dim: int) -> PairBuffer:
        if "train" not in state:
            raise ValueError("this checkpoint's pair buffer has the float64 format of natgrad-es "
                             "before float32 directions and a held-out fold chosen at insertion; "
                             "resume it with the version that wrote it")
        buf = cls(dim, state["capacity"])
        buf.train.load(state["train"])
        buf.held_out.load(state["held_out"])
        buf.total = int(state["total"])
        return buf


# -- the route -------------------------------------------------------------------------------------

#: the default buffer fills at most this fraction of the physical memory
_MEMORY_FRACTION = 0.75


def default_capacity(rank: int, dim: int) -> int:
    """8·k·d pairs, or as many as fill ¾ of the physical memory if fewer (at d = 10000, k = 10 the
    8·k·d pairs would need 30 GiB; the fits are tried at 2·k·d and 4·k·d pairs first).

    Only where 8·k·d pairs do not fit does the capacity, and so a long run, depend on the machine;
    it reads the physical memory, not a container's limit: pass ``pairs_capacity`` to fix it."""
    want = 8 * rank * dim
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): the plain default
        return want
    return max(2, min(want, int(_MEMORY_FRACTION * memory) // (4 * dim + 16)))



@dataclass
class Step:
    """What ``PairsRoute.update`` decided for one generation."""

    mean: np.ndarray
    sigma: float
    model: CurvatureModel | None
    refitted: bool


class PairsRoute:
    """State and update of the pairs route (numpy float64; the strategy converts at its edges).

    Args:
        dim: d.
        rank: k, the rank of the fitted model (the structure's rank).
        side: ``"precision"`` (keeps stiff directions, γ > 0) or ``"covariance"`` (valleys, γ < 0).
        pairs: n_p, mirrored pairs per generation (a generation evaluates 1 + 2 n_p points).
        capacity: buffer size in pairs (default ``default_capacity``: 8·k·d, the fit is exact
            from isotropic pairs well before that, at most ¾ of the physical memory; memory
            (4·d + 16)·capacity bytes: directions in float32, ``PairBuffer``).
        seed: seeds the fit's random subspace starts (an int, a
            ``numpy.random.SeedSequence`` or None; a stream of its own, not the sampler's).
    """

    def __init__(self, dim: int, rank: int, side: str, pairs: int, capacity: int | None = None,
                 seed: int | np.random.SeedSequence | None = 0):
        if side not in ("precision", "covariance"):
            raise ValueError(f"side must be 'precision' or 'covariance', got {side!r}")
        if pairs < 1:
            raise ValueError(f"pairs must be ≥ 1, got {pairs}")
        self.dim, self.rank, self.side, self.pairs = int(dim), int(rank), side, int(pairs)
        self.capacity = int(capacity) if capacity is not None else default_capacity(self.rank,
                                                                                    self.dim)
        if self.capacity < 4 * self.pairs:
            raise ValueError(f"capacity {self.capacity} is too small for {pairs} pairs a generation")
        self.buffer = PairBuffer(self.dim, self.capacity)
        self.model: CurvatureModel | None = None
        self.kappa = 1.0
        self.model_error = 0.0
        self.next_fit = min(2 * self.rank * self.dim, self.capacity)
        self.last_fit = 0
        self.retry = self.rank * self.dim  # pairs between fits once the gate is passed (``_maybe_fit``)
        self.f_mean = math.inf  # f at the last accepted mean
        self.accepted_mean: np.ndarray | None = None
        self.fits: list[dict[str, Any]] = []  # one record per fit attempt
        if not isinstance(seed, np.random.SeedSequence):
            seed = np.random.SeedSequence(seed)
        self._rng = np.random.default_rng(np.random.SeedSequence(seed.entropy,
                                                                 spawn_key=(*seed.spawn_key, 12)))

    # the generation's points: row 0 the mean, then m + v₁…, then m − v₁…
    def layout(self) -> int:
        return 1 + 2 * self.pairs

    def update(self, mean: np.ndarray, sigma: float, V: np.ndarray, f: np.ndarray, whiten) -> Step:
        """One generation: f = [f(m), f(m + vᵢ)…, f(m − vᵢ)…] (non-finite allowed), V (n_p, d) the
        directions vᵢ = σ A zᵢ, ``whiten(X)`` = rows A⁻¹x for the current A.  Returns the next mean
        and σ, and the new model when one was fitted and accepted this generation.  The buffer
        stores V in float32: pass directions representable in float32 (rounded before f was
        evaluated at m ± vᵢ), else the stored ones differ from the evaluated ones by that rounding."""
        n = self.pairs
        f0, fp, fm = f[0], f[1:1 + n], f[1 + n:1 + 2 * n]
        ok = np.isfinite(fp) & np.isfinite(fm) & bool(math.isfinite(f0))
        norm2 = (V * V).sum(-1)
        g, h = (fp - fm) / 2, fp + fm - 2 * f0
        # h loses about eps·|f| to rounding: keep only pairs whose h is resolved to 1e-8
        scale = np.maximum(np.maximum(np.abs(fp), np.abs(fm)), abs(f0)) if ok.any() else 0.0
        finite = ok & (norm2 > 0)
        ok = finite & (np.abs(h) > _RESOLVED * scale)
        unresolved = int(finite.sum()) > 0 and 2 * int(ok.sum()) < int(finite.sum())
        q = h[ok] / norm2[ok]
        refitted = False
        if ok.any():  # the curvatures are valid wherever the pairs were centred
            if self.model is not None:
                U = V[ok] / np.sqrt(norm2[ok])[:, None]
                err = np.log(np.maximum(np.abs(q / self.model.curvature(U)), 1e-300))
                self.model_error = 0.9 * self.model_error + 0.1 * float(np.sqrt(np.mean(err ** 2)))
            self.buffer.add(V[ok], q)
            refitted = self._maybe_fit()
        model = self.model if refitted else None
        if self.accepted_mean is not None and not f0 <= self.f_mean:
            # the last step made f worse (or non-finite): undo it and shorten the next one
            self.kappa *= 0.5
            return Step(self.accepted_mean.copy(), sigma, model, refitted)
        if self.accepted_mean is not None:
            dm = mean - self.accepted_mean
            length = float(np.linalg.norm(whiten(dm[None])[0])) / math.sqrt(n)
            if length > 0:
                sigma = math.exp(0.8 * math.log(sigma) + 0.2 * math.log(length))
            self.kappa = min(1.0, 1.5 * self.kappa)
        if unresolved:  # probes too short for f's rounding: lengthen them
            sigma *= 2.0
        if math.isfinite(f0):
            self.f_mean, self.accepted_mean = float(f0), mean.copy()
        if finite.any() and math.isfinite(f0):  # the step may use pairs the fit is too strict for
            step = self._newton_step(V[finite], g[finite], h[finite], h[finite] / norm2[finite])
            length = float(np.linalg.norm(whiten(step[None])[0]))
            limit = _TRUST * sigma * math.sqrt(self.dim)
            mean = mean + (step * (limit / length) if length > limit else step)
        return Step(mean, sigma, model, refitted)

    def _newton_step(self, V: np.ndarray, g: np.ndarray, h: np.ndarray, q: np.ndarray) -> np.ndarray:
        if self.model is not None:
            M = V @ self.model.apply(V).T
        else:
            M = float(np.median(np.abs(q))) * (V @ V.T)
        M = (M + M.T) / 2
        M[np.diag_indices_from(M)] = h
        lam, E = np.linalg.eigh(M)
        top = float(np.max(np.abs(lam))) if lam.size else 0.0
        if not (math.isfinite(top) and top > 0):
            return np.zeros(self.dim)
        lam = np.maximum(lam, 1e-12 * top)  # negative curvature: a bounded step along it
        alpha = -(E @ ((E.T @ g) / lam))
        return self.kappa * (alpha @ V)

    def _maybe_fit(self) -> bool:
        """Fit when due; True if a model was accepted.

        The schedule: first fits at 2·k·d, 4·k·d, … pairs up to the capacity (the gate), then
        every ``retry`` pairs, and a refit of an accepted model whose error on fresh pairs exceeds
        _REFIT_ERROR also after ``retry`` pairs.  ``retry`` starts at k·d and doubles after each
        rejected fit past the gate, up to _RETRY_LIMIT of the capacity (2·k·d by default); an
        accepted fit resets it.  Where no model fits (a non-quadratic f), a fit every k·d pairs
        took most of the CPU of a run (88% on the d = 1000 ellipsoid and rosenbrock, 43 fits in
        1e6 evaluations).  Where a model fits only once the buffer has turned over, the limit
        bounds how much later than every k·d the accepting fit comes: with half the capacity that
        cost up to 13% more evaluations, with a quarter up to 4.5% (``benchmarks/pairs_schedule.py``,
        RESULTS.md).
        """
        total = self.buffer.total
        if self.model is None:
            due = total >= self.next_fit
        else:
            due = self.model_error > _REFIT_ERROR and total - self.last_fit >= self.retry
        if not due:
            return False
        self.last_fit = total
        V, inv_norm, q = self.buffer.train.arrays()
        start = None if self.model is None else self.model.Q
        t0 = time.process_time()
        fit = fit_curvature(V, q, self.rank, self.side, inv_norm=inv_norm, rng=self._rng, start=start)
        model = fit.model
        held_out = math.inf if model is None else held_out_residual(model, *self.buffer.held_out.arrays())
        accepted = model is not None and held_out < _ACCEPT_RESIDUAL
        self.fits.append({"pairs": int(total), "train": fit.train, "held_out": held_out,
                          "accepted": accepted, "rank": 0 if model is None else model.Q.shape[1],
                          "seconds": time.process_time() - t0, "iterations": fit.iterations,
                          "passes": fit.passes, "stop": fit.stop})
        if accepted:
            self.retry = self.rank * self.dim
        elif self.model is None and self.next_fit < self.capacity:  # the gate
            self.next_fit = min(2 * self.next_fit, self.capacity)
        else:  # past the gate: back off
            self.next_fit = total + self.retry
            self.retry = max(self.retry, min(2 * self.retry, int(_RETRY_LIMIT * self.capacity)))
        if accepted:
            self.model, self.model_error = model, 0.0
            # a refit reads the newest pairs, as many as this fit had (enough for its gate): the
            # buffer need not grow to its capacity (with a first fit accepted at 2·k·d of 4·k·d
            # pairs, half the memory)
            self.buffer.hold()
        return accepted

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim, "rank": self.rank, "side": self.side, "pairs": self.pairs,
            "capacity": self.capacity, "buffer": self.buffer.state_dict(),
            "model": None if self.model is None else self.model.state_dict(),
            "kappa": self.kappa, "model_error": self.model_error, "next_fit": self.next_fit,
            "last_fit": self.last_fit, "retry": self.retry, "f_mean": self.f_mean,
            "accepted_mean": None if self.accepted_mean is None else self.accepted_mean.copy(),
            "fits": [dict(r) for r in self.fits], "rng": self._rng.bit_generator.state,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PairsRoute:
        route = cls(state["dim"], state["rank"], state["side"], state["pairs"], state["capacity"])
        route.buffer = PairBuffer.from_state_dict(state["buffer"], route.dim)
        route.model = None if state["model"] is None else CurvatureModel.from_state_dict(state["model"])
        route.kappa, route.model_error = float(state["kappa"]), float(state["model_error"])
        route.next_fit, route.last_fit = int(state["next_fit"]), int(state["last_fit"])
        route.retry = int(state.get("retry", route.rank * route.dim))  # checkpoints before the back-off
        route.f_mean = float(state["f_mean"])
        am = state["accepted_mean"]
        route.accepted_mean = None if am is None else np.array(am, dtype=np.float64)
        route.fits = [dict(r) for r in state["fits"]]
        route._rng.bit_generator.state = state["rng"]
        return route


def whitening_factor(model: CurvatureModel, factor):
    """The factor A = (Ĥ/s)^{-1/2} = I + Q diag(a) Qᵀ of ``factor``'s class (a symmetric low-rank
    structure of rank k ≥ the model's rank; unused columns get a = 0), backend, dtype and device."""
    xp = factor.xp
    d, k = factor.dim, factor.rank
    Q, a = model.Q, model.whitening()
    if Q.shape[1] > k:
        raise ValueError(f"the model has rank {Q.shape[1]} > the structure's rank {k}")
    if Q.shape[1] < k:  # complete the frame with directions orthogonal to Q
        rng = np.random.default_rng(0)
        X = rng.standard_normal((d, k - Q.shape[1]))
        X -= Q @ (Q.T @ X)
        X, _ = np.linalg.qr(X)
        X -= Q @ (Q.T @ X)
        X, _ = np.linalg.qr(X)
        Q = np.concatenate([Q, X], axis=1)
        a = np.concatenate([a, np.zeros(k - model.Q.shape[1])])
    if factor.side > 0:
        a = np.maximum(a, 0.0)
    else:
        a = np.clip(a, -1 + 1e-15, 0.0)

    def arr(x):
        return xp.asarray(x, dtype=factor.dtype, device=factor.device)

    return type(factor)(arr(np.ones(d)), arr(Q), arr(a), eps=factor.eps,
                        diagonal_rate=factor.diagonal_rate)
