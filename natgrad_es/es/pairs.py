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
import os
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

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
#: random columns beyond k in the subspace iterations (the gap they give the top k)
_OVERSAMPLE = 6
#: subspace iterations of the spectral start, and of each SVP step (warm-started from Y)
_SPECTRAL_ITERATIONS, _SVP_ITERATIONS = 8, 2
#: SVP steps of < 1% progress after which the fit has stalled
_STALL = 5
#: a fit is hopeless once, after this many steps, its best residual falling at its rate over the
#: last _HOPELESS_WINDOW steps would stay above _ACCEPT_RESIDUAL until max_iter
_HOPELESS_AFTER, _HOPELESS_WINDOW = 20, 10


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
    RMS((q̂ − q)/q), the SVP iterations, the passes over the N×d directions, and why it stopped
    (``"tol"``, ``"stall"``, ``"hopeless"``, ``"step"``, ``"max_iter"`` or ``"not finite"``)."""

    model: CurvatureModel | None
    train: float
    iterations: int
    passes: int
    stop: str


class _Rows:
    """U = diag(scale) V, rows uᵢ = vᵢ/‖vᵢ‖ with V stored in any float dtype (float32 in the buffer).

    Every product is computed in float64: a pass converts blocks of rows to float64 (a few MiB, so
    that they stay in cache) and multiplies them, so one pass reads V from memory once, and a float32
    V costs half the memory traffic of a float64 one.  ``passes`` counts the passes."""

    def __init__(self, V: np.ndarray, scale: np.ndarray | None):
        self.V = V
        self.scale = np.ones(len(V)) if scale is None else scale
        self.rows = max(1, _BLOCK_BYTES // (8 * V.shape[1]))
        self.passes = 0

    def apply(self, X: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """One pass: P = U X and, given w (N,), G = Uᵀ diag(w) U X = Vᵀ (scale² w ⊙ (V X)) (else None)."""
        self.passes += 1
        N, d = self.V.shape
        P = np.empty((N, X.shape[1]))
        G = None if w is None else np.zeros((d, X.shape[1]))
        block = np.empty((min(self.rows, N), d))
        for i in range(0, N, self.rows):
            j = min(i + self.rows, N)
            B = block[:j - i]
            np.copyto(B, self.V[i:j])  # float32 → float64 exactly
            VX = B @ X
            if G is not None:
                G += B.T @ ((self.scale[i:j] ** 2 * w[i:j])[:, None] * VX)
            P[i:j] = self.scale[i:j, None] * VX
        return P, G


def _subspace(op, X: np.ndarray, k: int, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """The k eigenvectors of largest |eigenvalue| of the symmetric X ↦ op(X) = (W, P = U X):
    ``iterations`` subspace steps from the orthonormal X, then a Rayleigh–Ritz step on the last
    basis, which reuses that basis' pass.  Returns (Y, U Y)."""
    for _ in range(iterations):
        X, _ = np.linalg.qr(op(X)[0])
    W, P = op(X)
    lam, E = np.linalg.eigh((X.T @ W + W.T @ X) / 2)
    top = np.argsort(-np.abs(lam))[:k]
    return X @ E[:, top], P @ E[:, top]


def _start(d: int, Y: np.ndarray | None, k: int, rng: np.random.Generator) -> np.ndarray:
    """An orthonormal basis of span(Y) plus random columns: k + _OVERSAMPLE columns at least."""
    extra = max(_OVERSAMPLE, k + _OVERSAMPLE - (0 if Y is None else Y.shape[1]))
    X = rng.standard_normal((d, extra))
    return np.linalg.qr(X if Y is None or Y.shape[1] == 0 else np.concatenate([Y, X], axis=1))[0]


def _fit_s_and_C(P: np.ndarray, q: np.ndarray, weights: np.ndarray | None):
    """Least squares for q ≈ s + pᵀ C p, rows p of P = U Y, C symmetric (k(k+1)/2 unknowns)."""
    k = P.shape[1]
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


def _predict(P: np.ndarray, s: float, C: np.ndarray) -> np.ndarray:
    """s + pᵀ C p for the rows p of P = U Y (unit rows u)."""
    return s + np.einsum("ij,jk,ik->i", P, C, P)


def fit_curvature(V: np.ndarray, q: np.ndarray, rank: int, side: str = "both", *,
                  inv_norm: np.ndarray | None = None, rng: np.random.Generator | None = None,
                  start: np.ndarray | None = None, max_iter: int = 150, tol: float = 1e-7) -> Fit:
    """Fit Ĥ = s I + Q diag(γ) Qᵀ of rank ≤ ``rank`` to curvatures qᵢ ≈ uᵢᵀĤuᵢ, uᵢ = vᵢ · inv_normᵢ
    (unit rows; ``inv_norm`` None: V's rows are unit already).  V may be float32 (the buffer's
    storage); every product is taken in float64, a block of rows at a time.

    1. Subspace Y (d×k): the spectral estimate from E[q uuᵀ] = (tr H I + 2H)/(d(d + 2)) for isotropic
       u (or ``start``), then singular-value-projection steps Y ← top_k(YCYᵀ − η Σᵢ rᵢ uᵢuᵢᵀ) with
       η = ½ d(d + 2)/N (halved when the residual grows), each followed by the exact least squares
       for (s, C) given Y, until the residual (relative to the spread of q) is below ``tol``, stalls
       (5 steps of < 1% progress), or is hopeless: above the acceptance level 1e-3 after 20 steps,
       and falling at its geometric rate of the last 10 steps it would not reach that level within
       ``max_iter`` (the held-out check would reject it anyway).  Low-rank matrix sensing: from
       isotropic u it recovers a rank-r H from a few r·d pairs (tol = 1e-7 leaves a whitened
       condition of about 1 + 1e-3 at d = 300, c = 1e6).
       Each step is two subspace iterations warm-started from Y and a Rayleigh–Ritz step: three
       passes over the N×d directions (each pass gives U X and Uᵀ diag(r) U X together), the last
       one's U X also giving the least squares and the residual.
    2. (s, C) again with relative weights 1/qᵢ (every direction's curvature to the same relative
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
    N, d = V.shape
    k = int(rank)
    eta0 = d * (d + 2) / (2.0 * N)
    if start is None or start.shape[1] == 0:
        qc = q - q.mean()
        shift = eta0 * qc.sum() / d

        def moment(X):
            P, G = U.apply(X, qc)
            return eta0 * G - shift * X, P

        Y, P = _subspace(moment, _start(d, None, k, rng), k, _SPECTRAL_ITERATIONS)
    else:
        Y = start[:, :k]
        P = U.apply(Y)[0]
    s, C = _fit_s_and_C(P, q, None)
    spread = float(np.linalg.norm(q - q.mean())) or 1.0
    best, history = None, []
    step, stall, stop, iterations = 0.7, 0, "max_iter", 0
    while True:
        r = _predict(P, s, C) - q
        res = float(np.linalg.norm(r)) / spread
        if not math.isfinite(res):
            stop = "not finite"
            break
        if best is None or res < best[0]:
            stall = stall + 1 if best is not None and res > 0.99 * best[0] else 0
            best = (res, s, Y, C, r, P)
            if res < tol:
                stop = "tol"
                break
            if stall >= _STALL:
                stop = "stall"
                break
        else:
            step *= 0.5
            if step < 0.05:
                stop = "step"
                break
        history.append(best[0])
        if _hopeless(history, max_iter):
            stop = "hopeless"
            break
        if iterations == max_iter:
            break
        iterations += 1
        _, s, Y, C, r, P = best
        rc = r - r.mean()
        eta = step * eta0
        shift = (np.trace(C) - eta * rc.sum()) / d

        def svp(X, Y=Y, C=C, rc=rc, eta=eta, shift=shift):
            P, G = U.apply(X, rc)
            return Y @ (C @ (Y.T @ X)) - eta * G - shift * X, P

        Y, P = _subspace(svp, _start(d, Y, k, rng), k, _SVP_ITERATIONS)
        s, C = _fit_s_and_C(P, q, None)
    if best is None:
        return Fit(None, math.inf, iterations, U.passes, stop)
    _, _, Y, _, _, P = best
    weights = 1.0 / np.maximum(np.abs(q), 1e-300)
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


def _hopeless(history: list[float], max_iter: int) -> bool:
    """Whether the best residuals so far, falling at their rate over the last _HOPELESS_WINDOW
    steps, stay above _ACCEPT_RESIDUAL for the remaining steps (checked from _HOPELESS_AFTER on)."""
    t = len(history) - 1
    if t < _HOPELESS_AFTER or history[-1] <= _ACCEPT_RESIDUAL:
        return False
    rate = math.log(history[-1] / history[-1 - _HOPELESS_WINDOW]) / _HOPELESS_WINDOW
    return rate >= 0 or math.log(_ACCEPT_RESIDUAL / history[-1]) / rate > max_iter - t


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
    """A ring buffer of pairs: directions v (float32, (capacity, d)), 1/‖v‖ and q (float64)."""

    def __init__(self, dim: int, capacity: int):
        self.capacity, self.count = int(capacity), 0
        # reserved, not touched: pages are used as pairs arrive
        self.V = np.empty((self.capacity, dim), dtype=np.float32)
        self.inv_norm, self.q = np.empty(self.capacity), np.empty(self.capacity)

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def add(self, V: np.ndarray, inv_norm: np.ndarray, q: np.ndarray) -> None:
        idx = (self.count + np.arange(len(q))) % self.capacity
        self.V[idx], self.inv_norm[idx], self.q[idx] = V, inv_norm, q
        self.count += len(q)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views (no copy) of the filled rows: V, 1/‖v‖, q."""
        n = len(self)
        return self.V[:n], self.inv_norm[:n], self.q[:n]

    def state_dict(self) -> dict[str, Any]:
        V, inv_norm, q = self.arrays()
        return {"count": self.count, "V": V.copy(), "inv_norm": inv_norm.copy(), "q": q.copy()}

    def load(self, state: dict[str, Any]) -> None:
        n = len(state["q"])
        self.V[:n], self.inv_norm[:n], self.q[:n] = state["V"], state["inv_norm"], state["q"]
        self.count = int(state["count"])


class PairBuffer:
    """The pairs (vᵢ, qᵢ) of the route, split at insertion into a train and a held-out fold.

    Pair number t (counting every pair ever added) goes to the held-out fold when
    t mod 5 = 4, so a fifth of the buffer is held out and the fit reads the train fold as a
    contiguous view, never a copy.  Each fold is a ring buffer (capacity // 5 held-out pairs, the
    rest train): together they hold the latest ``capacity`` pairs.  Directions are stored in
    float32 (4·d bytes a pair) with 1/‖v‖ computed from the float64 v handed in, and q in float64:
    exact when v is representable in float32 (the strategy rounds its directions before it
    evaluates them); otherwise the stored direction is v rounded, a relative change ≤ 6e-8.
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
        total = self.buffer.total
        if self.model is None:
            due = total >= self.next_fit
        else:
            due = self.model_error > _REFIT_ERROR and total - self.last_fit >= self.rank * self.dim
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
