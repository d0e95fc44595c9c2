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
fits and accepted only if it predicts held-out pairs (``PairsRoute``).  The search distribution is
then whitened by it, A = (Ĥ/s)^{-1/2} = I + Q diag((1 + γ/s)^{-1/2} − 1) Qᵀ, which is a member of
the ``lowrank-precision`` family (γ ≥ 0: stiff directions) or of the ``lowrank-cov`` family (γ ≤ 0:
valleys); each side keeps only the directions of its own sign.

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
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CurvatureModel", "fit_curvature", "PairBuffer", "PairsRoute", "SIDES"]

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


def _top_eigen(op, d: int, k: int, start: np.ndarray | None, rng: np.random.Generator,
               iterations: int) -> np.ndarray:
    """The k eigenvectors of largest |eigenvalue| of the symmetric operator X ↦ op(X) (subspace
    iteration from ``start`` plus a few random columns, then a Rayleigh–Ritz step)."""
    extra = rng.standard_normal((d, 6))
    X = extra if start is None or start.shape[1] == 0 else np.concatenate([start, extra], axis=1)
    if X.shape[1] < k + 6:
        X = np.concatenate([X, rng.standard_normal((d, k + 6 - X.shape[1]))], axis=1)
    X, _ = np.linalg.qr(X)
    for _ in range(iterations):
        X, _ = np.linalg.qr(op(X))
    T = X.T @ op(X)
    lam, E = np.linalg.eigh((T + T.T) / 2)
    order = np.argsort(-np.abs(lam))[:k]
    return X @ E[:, order]


def _fit_s_and_C(U: np.ndarray, q: np.ndarray, Y: np.ndarray, weights: np.ndarray | None):
    """Least squares for q ≈ s + pᵀ C p, p = Yᵀu, C symmetric (k(k+1)/2 unknowns)."""
    k = Y.shape[1]
    P = U @ Y
    iu = np.triu_indices(k)
    F = np.concatenate([np.ones((len(q), 1)),
                        P[:, iu[0]] * P[:, iu[1]] * np.where(iu[0] == iu[1], 1.0, 2.0)], axis=1)
    rhs = q
    if weights is not None:
        F, rhs = F * weights[:, None], q * weights
    coef = np.linalg.lstsq(F, rhs, rcond=None)[0]
    C = np.zeros((k, k))
    C[iu] = coef[1:]
    C = C + C.T - np.diag(np.diag(C))
    return float(coef[0]), C


def _predict(U: np.ndarray, s: float, Y: np.ndarray, C: np.ndarray) -> np.ndarray:
    P = U @ Y
    return s + np.einsum("ij,jk,ik->i", P, C, P)


def fit_curvature(U: np.ndarray, q: np.ndarray, rank: int, side: str = "both", *,
                  rng: np.random.Generator | None = None, start: np.ndarray | None = None,
                  max_iter: int = 150, tol: float = 1e-7) -> tuple[CurvatureModel | None, float]:
    """Fit Ĥ = s I + Q diag(γ) Qᵀ of rank ≤ ``rank`` to curvatures qᵢ ≈ uᵢᵀĤuᵢ (uᵢ unit rows of U).

    1. Subspace Y (d×k): the spectral estimate from E[q uuᵀ] = (tr H I + 2H)/(d(d + 2)) for isotropic
       u (or ``start``), then singular-value-projection steps Y ← top_k(YCYᵀ − η Σᵢ rᵢ uᵢuᵢᵀ) with
       η = ½ d(d + 2)/N (halved when the residual grows), each followed by the exact least squares
       for (s, C) given Y, until the residual (relative to the spread of q) is below ``tol`` or
       stalls.  Low-rank matrix sensing: from isotropic u it recovers a rank-r H from a few r·d
       pairs (tol = 1e-7 leaves a whitened condition of about 1 + 1e-3 at d = 300, c = 1e6).
    2. (s, C) again with relative weights 1/qᵢ (every direction's curvature to the same relative
       accuracy: that is what whitening needs), C = E diag(γ) Eᵀ, keep the directions of ``side``
       whose curvature differs from s by a factor ≥ 2 (``"precision"``: γ ≥ s; ``"covariance"``:
       s + γ ≤ s/2; ``"both"``), and refit (s, C) on those.

    Returns (model, train residual) — the RMS of (q̂ − q)/q — or (None, inf) if the fit is not a
    positive definite model (s ≤ 0 or s + γ ≤ 0).
    """
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    N, d = U.shape
    k = int(rank)
    eta0 = d * (d + 2) / (2.0 * N)
    if start is None or start.shape[1] == 0:
        qc = q - q.mean()
        shift = eta0 * qc.sum() / d

        def moment(X):
            return eta0 * (U.T @ (qc[:, None] * (U @ X))) - shift * X

        Y = _top_eigen(moment, d, k, None, rng, 8)
    else:
        Y = start[:, :k]
    s, C = _fit_s_and_C(U, q, Y, None)
    spread = float(np.linalg.norm(q - q.mean())) or 1.0
    best = None
    step, stall = 0.7, 0
    for _ in range(max_iter):
        r = _predict(U, s, Y, C) - q
        res = float(np.linalg.norm(r)) / spread
        if not math.isfinite(res):
            break
        if best is None or res < best[0]:
            stall = stall + 1 if best is not None and res > 0.99 * best[0] else 0
            best = (res, s, Y, C, r)
            if stall >= 5 or res < tol:
                break
        else:
            step *= 0.5
            if step < 0.05:
                break
        _, s, Y, C, r = best
        rc = r - r.mean()
        eta = step * eta0
        shift = (np.trace(C) - eta * rc.sum()) / d

        def svp(X, Y=Y, C=C, rc=rc, eta=eta, shift=shift):
            return Y @ (C @ (Y.T @ X)) - eta * (U.T @ (rc[:, None] * (U @ X))) - shift * X

        Y = _top_eigen(svp, d, k, Y, rng, 2)
        s, C = _fit_s_and_C(U, q, Y, None)
    if best is None:
        return None, math.inf
    Y = best[2]
    weights = 1.0 / np.maximum(np.abs(q), 1e-300)
    s, C = _fit_s_and_C(U, q, Y, weights)
    gamma, E = np.linalg.eigh(C)
    ratio = (s + gamma) / s if s > 0 else np.zeros_like(gamma)
    keep = {"precision": ratio >= _KEEP_RATIO, "covariance": ratio <= 1 / _KEEP_RATIO,
            "both": (ratio >= _KEEP_RATIO) | (ratio <= 1 / _KEEP_RATIO)}[side]
    Y = Y @ E[:, keep]
    s, C = _fit_s_and_C(U, q, Y, weights)
    gamma, E = np.linalg.eigh(C)
    if not (s > 0 and np.all(s + gamma > 0) and np.all(np.isfinite(gamma))):
        return None, math.inf
    model = CurvatureModel(s, Y @ E, gamma)
    train = float(np.sqrt(np.mean(((model.curvature(U) - q) / np.maximum(np.abs(q), 1e-300)) ** 2)))
    return model, train


# -- the buffer ------------------------------------------------------------------------------------


class PairBuffer:
    """A ring buffer of (uᵢ, qᵢ): unit directions (float64, (capacity, d)) and their curvatures."""

    def __init__(self, dim: int, capacity: int):
        self.dim, self.capacity = int(dim), int(capacity)
        try:  # reserved, not touched: pages are used as pairs arrive
            self.U = np.empty((self.capacity, self.dim))
        except MemoryError as e:
            raise MemoryError(
                f"the pair buffer needs {8 * self.capacity * self.dim / 2**30:.1f} GiB "
                f"({self.capacity} pairs × d = {self.dim} float64); pass a smaller pairs_capacity= "
                f"(the first fit is tried at 2·rank·d pairs)") from e
        self.q = np.empty(self.capacity)
        self.total = 0

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    def add(self, U: np.ndarray, q: np.ndarray) -> None:
        idx = (self.total + np.arange(len(q))) % self.capacity
        self.U[idx], self.q[idx] = U, q
        self.total += len(q)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        return self.U[:n], self.q[:n]

    def state_dict(self) -> dict[str, Any]:
        U, q = self.arrays()
        return {"capacity": self.capacity, "total": self.total, "U": U.copy(), "q": q.copy()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], dim: int) -> PairBuffer:
        buf = cls(dim, state["capacity"])
        n = len(state["q"])
        buf.U[:n], buf.q[:n], buf.total = state["U"], state["q"], int(state["total"])
        return buf


# -- the route -------------------------------------------------------------------------------------


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
        capacity: buffer size in pairs (default 8·k·d: the fit is exact from isotropic pairs well
            before that; memory 8·capacity·d bytes).
        seed: seeds the fit's random subspace starts and the held-out split (an int, a
            ``numpy.random.SeedSequence`` or None; a stream of its own, not the sampler's).
    """

    def __init__(self, dim: int, rank: int, side: str, pairs: int, capacity: int | None = None,
                 seed: int | np.random.SeedSequence | None = 0):
        if side not in ("precision", "covariance"):
            raise ValueError(f"side must be 'precision' or 'covariance', got {side!r}")
        if pairs < 1:
            raise ValueError(f"pairs must be ≥ 1, got {pairs}")
        self.dim, self.rank, self.side, self.pairs = int(dim), int(rank), side, int(pairs)
        self.capacity = int(capacity) if capacity is not None else 8 * self.rank * self.dim
        if self.capacity < 4 * self.pairs:
            raise ValueError(f"capacity {self.capacity} is too small for {pairs} pairs a generation")
        self.buffer = PairBuffer(self.dim, self.capacity)
        self.model: CurvatureModel | None = None
        self.kappa = 1.0
        self.model_error = 0.0
        self.next_fit = min(2 * self.rank * self.dim, self.capacity)
        self.last_fit = 0
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
        and σ, and the new model when one was fitted and accepted this generation."""
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
        U = V[ok] / np.sqrt(norm2[ok])[:, None]
        q = h[ok] / norm2[ok]
        refitted = False
        if ok.any():  # the curvatures are valid wherever the pairs were centred
            if self.model is not None:
                err = np.log(np.maximum(np.abs(q / self.model.curvature(U)), 1e-300))
                self.model_error = 0.9 * self.model_error + 0.1 * float(np.sqrt(np.mean(err ** 2)))
            self.buffer.add(U, q)
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
        total = self.buffer.total
        if self.model is None:
            due = total >= self.next_fit
        else:
            due = self.model_error > _REFIT_ERROR and total - self.last_fit >= self.rank * self.dim
        if not due:
            return False
        self.last_fit = total
        U, q = self.buffer.arrays()
        perm = self._rng.permutation(len(q))
        cut = int(0.8 * len(q))
        train, test = perm[:cut], perm[cut:]
        start = None if self.model is None else self.model.Q
        t0 = time.process_time()
        model, train_res = fit_curvature(U[train], q[train], self.rank, self.side, rng=self._rng,
                                         start=start)
        held_out = math.inf
        if model is not None:
            qt = q[test]
            held_out = float(np.linalg.norm(model.curvature(U[test]) - qt)
                             / max(np.linalg.norm(qt - qt.mean()), 1e-300))
        accepted = model is not None and held_out < _ACCEPT_RESIDUAL
        self.fits.append({"pairs": int(total), "train": train_res, "held_out": held_out,
                          "accepted": accepted, "rank": 0 if model is None else model.Q.shape[1],
                          "seconds": time.process_time() - t0})
        if self.model is None and not accepted:
            self.next_fit = min(2 * self.next_fit, self.capacity) if self.next_fit < self.capacity \
                else self.next_fit + self.rank * self.dim
        if accepted:
            self.model, self.model_error = model, 0.0
        return accepted

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim, "rank": self.rank, "side": self.side, "pairs": self.pairs,
            "capacity": self.capacity, "buffer": self.buffer.state_dict(),
            "model": None if self.model is None else self.model.state_dict(),
            "kappa": self.kappa, "model_error": self.model_error, "next_fit": self.next_fit,
            "last_fit": self.last_fit, "f_mean": self.f_mean,
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
