"""``GaussianVI``: natural-gradient Gaussian variational inference (the Bayesian learning rule).

Minimise L(q) = E_q[ℓ(x)] − H[q] over q = N(m, A Aᵀ) with ℓ = −log p(x, data) and A a structured
factor (``natgrad_es.structures``: full, diagonal, block-diagonal, Kronecker, block-triangular low
rank).  S = A⁻ᵀA⁻¹ is the precision.  Each step estimates, in the local coordinates of A
(``estimators``),

    X = κ(Aᵀ Ĥ A − I),    u = Aᵀ ĝ,        Ĥ ≈ E_q[∇²ℓ],  ĝ ≈ E_q[∇ℓ],

and moves (m, A) by one of the two rules of algorithms.md §4:

* ``update="multiplicative"`` (every structure; inverse-free, Lin et al. 2021/2023):

      A ← A · h(−β/2 · X)              h = expm or a truncated series (``retraction``, ``order``)
      m ← m − β A_new A_newᵀ ĝ          (= m − β A h hᵀ u: still no inverse)

  The new precision in local coordinates is e^{βX} for h = expm: per eigenvalue x of X (x > −1), a
  step with β = 1 leaves (1 + x)e^{−x} − 1 ≈ −x²/2 (quadratic convergence near the answer) but
  overshoots wildly for large x (informative data make x ~ 10²–10³).  The step is therefore capped,
  β ← min(β, 2 c / ‖X‖_F) with c = ``max_step`` (‖βX/2‖ ≤ c; the Frobenius norm bounds the spectral
  one, so the cap is conservative).

* ``update="additive"`` (full and diagonal; the variational online Newton rule):

      S ← (1 − β) S + β Ĥ   ⇔   A ← A (I + βX)^{−1/2}       (symmetric root, by eigh)
      m ← m − β S_new⁻¹ ĝ = m − β A (I + βX)⁻¹ u

  With the delta estimator and β = 1 this *is* Newton's method: exact in one step on a quadratic ℓ
  (Bayesian linear regression).  It needs a factorisation (eigh, d³, for ``full``).  For the
  diagonal family the precision lands on the family's optimum diag(P) in one step but the mean moves
  by a Jacobi iteration, which diverges at β = 1 when 2D − P is not positive definite (D = diag P):
  iterate with β < 2/λ_max(D^{−1/2} P D^{−1/2}).  The block-triangular low-rank family has the same
  issue in its one-sided block A₂₁ under either rule (see ``default_lr``).

Momentum (``momentum=α``; seed 000's α₁, the issue's β₁; Lin et al. 2023).  The natural gradient X_t
(a tangent in the local coordinates of A_t) is averaged in the tangent space,

    V₁ = X₁,    V_t = α · T(V_{t−1}) + (1 − α) X_t,       T = ``Factor.transport`` (A_{t−1} → A_t)

and the step uses V_t in place of X_t (A ← A · h(−β/2 · V_t), or (I + βV_t)^{−1/2} for the additive
rule).  T carries the buffer to the new point without inverses: the identity on the local coordinates
for the group structures (seed 000 reuses its buffer unchanged), a re-expression through QᵀQ' for
"spectral".  The mean gets the matching heavy-ball average in its own local coordinates
m = m_t + A_new δ, where the Fisher is I and the natural gradient is g̃_t = A_newᵀĝ (the plain step is
m ← m − β A_new g̃_t = m − β S_new⁻¹ĝ): w₁ = g̃₁, w_t = α w_{t−1} + (1 − α) g̃_t, m ← m − β A_new w_t,
with w carried unchanged like V (an x-space buffer instead would replay steps sized by the wide early
covariance after q has narrowed, and overshoot).  Seed 000 writes b ← α b + X (step β b): the same
recursion with the buffer scaled by 1/(1 − α).  The (1 − α) form is used so that β keeps its
meaning — at a fixed point V = X, so the default ``lr``, the cap ‖βV/2‖ ≤ c and "β = 1 is a Newton
step" hold with and without momentum — and the first step starts from X₁ itself (no
zero-initialised bias).  A capped step (‖βV/2‖ > c: q is still far from the answer) restarts both
buffers, so that the next step starts again from its own X.  Far from the answer ‖X‖ is large and
shrinks by orders of magnitude within a few steps; a buffer that kept it replays those steps after
q has reached the posterior's scale and overshoots (measured without the restart, α = 0.9, β = 0.03,
minibatch Stein: |log det AᵀPA| grew back from 12 to 69 (0 at the posterior) and 4 of 5 runs had not
reached KL < 3 after 1000 steps, where the plain rule reached KL < 1 in about 230).  This is an
adaptive restart in the sense of O'Donoghue & Candès (2015).  On a Gaussian target the natural
gradient makes every direction equally curved, so there is no ill-conditioning for momentum to
undo.  Measured (``benchmarks/vi_momentum.py``, RESULTS.md): α = 0.5 saves 15–33% of the steps at
β = 0.2 (Stein, delta) and loses at the Newton step β = 1 (8 → 23 steps); under minibatch noise it
lowers the noise floor only at a large β (−10% at β = 0.3, α = 0.5; −16% at α = 0.9); α = 0.9 pays
on a restricted family whose mean moves by an ill-conditioned Jacobi-like iteration (diagonal factor,
correlated posterior: −12 to −32% steps) and costs 2–14× the steps on full-family targets.
α = 0 (the default) is exactly the plain rule.

Both rules agree to first order in β.  A step that would make the factor (nearly) singular is refused:
β is halved and a ``VIWarning`` says so (``history[i]["refused"]`` counts the halvings).  For the
additive rule "nearly singular" means I + βX ⋡ ½(1 − β) I — a positive semi-definite Ĥ always keeps
(1 − β)S, so only an indefinite estimate (noisy, or a non-convex ℓ) is refused; for the
multiplicative rule it is a truncated retraction whose log-determinant strays more than one nat from
expm's (expm itself never is).

Estimators (``estimators``): "hessian" and "delta" need Hessian-vector products, "stein" gradients,
"zeroth" values only.  Stein and zeroth order estimate from ℓ + log q, whose noise vanishes at the
exact posterior ("sticking the landing"): on Gaussian targets they converge to machine precision at a
constant β; on restricted families or non-Gaussian posteriors a noise floor remains (use a decaying
``lr``).

Performance note: small problems call torch (autograd) and numpy (BLAS) in turn every step; on few
cores their thread pools can spin against each other and cost 10× (measured: 9 ms instead of 0.6 ms a
step at d = 5 on 2 cores).  ``torch.set_num_threads(1)`` (and ``threadpoolctl.threadpool_limits(1)``)
avoid it.

Minibatches: write ``log_joint`` so that it scales its data term by N/|batch| (``problems.regression``
models do, via ``minibatch_log_joint``); one call per step evaluates every sample on the same batch.

Example:
    >>> import numpy as np
    >>> from natgrad_es.vi import GaussianVI
    >>> P = np.array([[2.0, 0.5], [0.5, 1.0]]); mu = np.array([1.0, -1.0])
    >>> def log_joint(X):
    ...     R = X - mu
    ...     return -0.5 * np.einsum("ni,ij,nj->n", R, P, R)
    >>> vi = GaussianVI(log_joint, 2, estimator="delta", update="additive", lr=1.0,
    ...                 hess=lambda X: np.broadcast_to(-P, (len(X), 2, 2)), grad=lambda X: -(X - mu) @ P)
    >>> _ = vi.step()
    >>> np.allclose(vi.posterior.mean, mu), np.allclose(vi.posterior.covariance(), np.linalg.inv(P))
    (True, True)

References: Khan & Rue, "The Bayesian learning rule", JMLR 2023; Khan et al., "Fast and scalable
Bayesian deep learning by weight-perturbation in Adam" (VON), ICML 2018; Lin, Nielsen, Khan, Schmidt,
"Tractable structured natural-gradient descent using local parameterizations", ICML 2021; Lin et al.,
"Simplifying momentum-based positive-definite submanifold optimization …" (inverse-free), ICML 2023.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import backend as B
from .. import structures
from ..backend import RandomStream
from ..distribution import Gaussian
from ..structures import Dense, Diagonal, Factor, Tangent
from ..structures.base import positive_dim, tangent_from_state_dict
from . import estimators as E
from .fitting import positive, run_steps, step_size, unit_interval
from .oracle import LogJoint, VIWarning

__all__ = ["GaussianVI", "default_lr", "default_mc_samples", "UPDATES"]

UPDATES = ("multiplicative", "additive")
MEAN_STEPS = ("natural", "newton")
_ADDITIVE_STRUCTURES = ("full", "diagonal")
_STATE_VERSION = 1
_LOGDET_TOLERANCE = 1.0  # nats a truncated retraction may deviate from expm's log-determinant


def default_lr(estimator: str, structure: str) -> float:
    """β: 1 (a Newton step) for the deterministic delta estimator on the full family, 0.5 for delta on
    restricted families (their mean step is a Jacobi-like iteration, see the module docstring) and
    for the Hessian estimator (its Monte-Carlo noise is not averaged at all at β = 1, except on a
    quadratic, where it is exact), 0.2 for Stein and 0.05 for the zeroth-order estimator
    (``benchmarks/vi_linear.py``, Bayesian linear regression: at d = 20 the Stein rule with β = 1
    and the zeroth-order one with β = 0.2 did not reach KL < 1e-3 in 400 steps).  On non-Gaussian
    posteriors a constant β leaves a noise floor: pass a decaying schedule to go below it.

    On the block-triangular "lowrank" family β is capped at 0.1: its one-sided block A₂₁ moves by a
    Jacobi-like step that contracts by 1 − βλ, λ the eigenvalues of (AᵀĤA)₂₂ (which the family does
    not fit), and diverges for β > 2/λ_max — ``benchmarks/vi_logistic.py`` shows it on the
    breast-cancer logistic regression (λ_max ≈ 7.5 there)."""
    if estimator == "delta":
        beta = 1.0 if structure == "full" else 0.5
    else:
        beta = {"hessian": 0.5, "stein": 0.2}.get(estimator, 0.05)
    return min(beta, 0.1) if structure == "lowrank" else beta


def default_mc_samples(estimator: str, dim: int) -> int:
    """N: 1 for delta (unused), 4 for hessian (d HVPs each), 16 for Stein, 2(d + 2) for zeroth order
    (a d×d second moment from values needs samples in proportion to d)."""
    return {"delta": 1, "hessian": 4, "stein": 16}.get(estimator, 2 * (dim + 2))


def _check_choice(value, name: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return value


class GaussianVI:
    """Natural-gradient Gaussian VI with a structured factor (see the module docstring for the maths).

    Args:
        log_joint: X (n, d) → n values of log p(x, data).  Written with torch operations, autograd
            supplies gradients and Hessian-vector products; numpy users pass ``grad=`` and ``hvp=`` /
            ``hess=`` (derivatives of log_joint), or use ``estimator="zeroth"`` (values only).
        dim: d, the number of parameters.
        structure: "full", "diagonal", "lowrank" (``rank=``), "blockdiag" (``blocks=``) or
            "kronecker" (``shape=``): the family of A.
        estimator: "hessian" (Bonnet–Price, HVPs), "stein" (gradients), "zeroth" (values), "delta"
            (Newton-like at the mean; converges to the Laplace approximation).
        mc_samples: N, Monte-Carlo samples per step (even when ``antithetic``); default
            ``default_mc_samples``.
        lr: β, a number in (0, 1] or a function of the iteration (0, 1, …) returning one; default
            ``default_lr``.
        update: "multiplicative" (every structure) or "additive" (full and diagonal only).
        seed: seed of the sampling stream (``None``: fresh entropy).
        init_mean: m at the start (default 0).
        init_scale: A = init_scale · I at the start (default 0.1, as Pyro's autoguides).
        max_step: c in the cap ‖βX/2‖_F ≤ c of the multiplicative rule (why: a step of β = 1 from far
            away overshoots by a factor e^{x}; see the module docstring).
        retraction, order: h = "expm" (exact) or "truncated" of the given order (matmuls only; a
            retraction whose log-determinant strays more than 1 nat from expm's is refused).
        antithetic: draw mirrored pairs (z, −z): exact gradient parts on quadratics, less noise.
        grad, hvp, hess: optional numpy derivatives of log_joint (see ``oracle.LogJoint``).
        backend, dtype, device: where the state lives ("numpy", float64 by default).
        rank, blocks, shape: the structure's keyword (see ``structures.make``).
        momentum: α in [0, 1): the weight of the transported buffer in V_t = α T(V_{t−1}) + (1 − α) X_t
            and in the mean's w_t = α w_{t−1} + (1 − α) A_newᵀĝ (module docstring); 0 (default) is
            the plain rule.
        mean_step: "natural" (default): m ← m − β A Aᵀ ĝ, the natural gradient of the family;
            "newton" (estimators "hessian" and "delta"): m ← m − β A (AᵀĤA)⁻¹ Aᵀ ĝ = m − β Ĥ⁻¹ĝ,
            from the dense AᵀĤA those estimators form anyway (O(d³) a step).  Same fixed point
            (E_q[∇ℓ] = 0 holds at the optimum of every family), but on a restricted family
            (diagonal, low rank) the natural mean step is a Jacobi-like iteration that converges at
            rate 1 − β λ_min(D^{-1/2} Ĥ D^{-1/2}) and diverges above β = 2/λ_max; the Newton step
            moves the mean as the full family would.  A step where AᵀĤA is not positive definite
            falls back to the natural step.

    Attributes:
        posterior: the current q as a ``natgrad_es.distribution.Gaussian``.
        history: one dict per step: iteration, beta (after caps and refusals), loss (MC estimate of
            E_q[ℓ] from the step's samples), elbo (loss-based estimate −loss + H[q]; NaN for delta),
            step (‖βX/2‖_F and the whitened mean step, combined), refused (halvings), capped.
        evaluations: rows at which log_joint has been evaluated.
    """

    def __init__(self, log_joint: Callable, dim: int, structure: str = "full", *,
                 estimator: str = "hessian", mc_samples: int | None = None,
                 lr: float | Callable[[int], float] | None = None, update: str = "multiplicative",
                 seed: int | None = None, init_mean=None, init_scale: float = 0.1,
                 max_step: float = 1.0, retraction: str = "expm", order: int = 2,
                 antithetic: bool = True, grad: Callable | None = None, hvp: Callable | None = None,
                 hess: Callable | None = None, backend: str = "numpy", dtype="float64", device=None,
                 rank: int | None = None, blocks=None, shape=None, max_refusals: int = 30,
                 momentum: float = 0.0, mean_step: str = "natural"):
        self.dim = positive_dim(dim)
        self.estimator = _check_choice(estimator, "estimator", tuple(E.ESTIMATORS))
        self.update = _check_choice(update, "update", UPDATES)
        self.retraction = _check_choice(retraction, "retraction", structures.RETRACT_METHODS)
        if self.retraction == "truncated":
            B._check_order(order)
        self.order = int(order)
        kw = {k: v for k, v in (("rank", rank), ("blocks", blocks), ("shape", shape)) if v is not None}
        identity = structures.make(structure, self.dim, backend=backend, dtype=dtype, device=device, **kw)
        self.structure = identity.name
        if self.update == "additive" and self.structure not in _ADDITIVE_STRUCTURES:
            raise ValueError(f"update='additive' needs a factorisation of the precision and is offered for "
                             f"structures {_ADDITIVE_STRUCTURES}, not {self.structure!r}; use "
                             f"update='multiplicative' (inverse-free, every structure)")
        self._identity = identity
        self.xp = identity.xp
        self.antithetic = bool(antithetic)
        if mc_samples is None:
            mc_samples = default_mc_samples(self.estimator, self.dim)
            if self.antithetic and mc_samples % 2:
                mc_samples += 1
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, (int, np.integer)) or mc_samples < 1:
            raise ValueError(f"mc_samples must be a positive integer, got {mc_samples!r}")
        if self.antithetic and E.SAMPLED[self.estimator] and mc_samples % 2:
            raise ValueError(f"mc_samples must be even with antithetic=True (mirrored pairs), got "
                             f"{mc_samples}")
        self.mc_samples = int(mc_samples)
        if lr is None:
            lr = default_lr(self.estimator, self.structure)
        if not callable(lr):
            lr = positive(lr, "lr")
            if lr > 1:
                raise ValueError(f"lr must lie in (0, 1] (β = 1 is a full Newton step), got {lr!r}")
        self.lr = lr
        self.max_step = positive(max_step, "max_step")
        self.momentum = unit_interval(momentum, "momentum")
        self.mean_step = _check_choice(mean_step, "mean_step", MEAN_STEPS)
        if self.mean_step == "newton" and self.estimator not in ("hessian", "delta"):
            raise ValueError(f"mean_step='newton' needs the estimator 'hessian' or 'delta' (they form "
                             f"AᵀĤA), got {self.estimator!r}")
        if self.mean_step == "newton" and self.momentum:
            raise ValueError("momentum applies to mean_step='natural'; use one or the other")
        self._velocity: Tangent | None = None  # V_t, a tangent at the current factor
        self._mean_velocity = None  # w_t, in the whitened local coordinates of the mean
        if isinstance(max_refusals, bool) or not isinstance(max_refusals, int) or max_refusals < 1:
            raise ValueError(f"max_refusals must be a positive integer, got {max_refusals!r}")
        self.max_refusals = max_refusals
        init_scale = positive(init_scale, "init_scale")

        dt, dev = identity.dtype, identity.device
        if init_mean is None:
            mean = self.xp.zeros(self.dim, dtype=dt, device=dev)
        else:
            mean = self.xp.asarray(init_mean, dtype=dt, device=dev)
            if tuple(mean.shape) != (self.dim,):
                raise ValueError(f"init_mean must have shape (dim,) = ({self.dim},), got {tuple(mean.shape)}")
            if not self.xp.all_finite(mean):
                raise ValueError("init_mean has non-finite entries")
        self.mean = self.xp.copy(mean)
        zero = identity.natural_gradient(self.xp.zeros((1, self.dim), dtype=dt, device=dev),
                                         self.xp.zeros(1, dtype=dt, device=dev))
        self.factor: Factor = identity.retract(zero.add_identity(math.log(init_scale)), 1.0, "expm")

        self._oracle = LogJoint(log_joint, self.dim, grad=grad, hvp=hvp, hess=hess)
        self._oracle.prepare(self.mean[None, :])
        self._oracle.require(E.NEEDS[self.estimator], self.estimator)
        self._rng, self._elbo_rng = RandomStream(seed, backend, device).spawn(2)
        self.seed = seed
        self.iteration = 0
        self.evaluations = 0
        self.history: list[dict[str, Any]] = []

    # -- views -------------------------------------------------------------------------------------
    @property
    def posterior(self) -> Gaussian:
        """q = N(m, A Aᵀ) now (σ is folded into A: ``sigma == 1``)."""
        return Gaussian(self.mean, self.factor, 1.0)

    def beta(self, iteration: int | None = None) -> float:
        """The nominal β at an iteration (before caps and refusals)."""
        return step_size(self.lr, self.iteration if iteration is None else iteration)

    def __repr__(self) -> str:
        extra = f", momentum={self.momentum}" if self.momentum else ""
        return (f"GaussianVI(dim={self.dim}, structure={self.structure!r}, estimator={self.estimator!r}, "
                f"update={self.update!r}, mc_samples={self.mc_samples}{extra}, iteration={self.iteration})")

    # -- one step ----------------------------------------------------------------------------------
    def _draw(self):
        n = self.mc_samples
        if self.antithetic:
            half = self._rng.normal((n // 2, self.dim), dtype=self.factor.dtype)
            return self.xp.concat([half, -half], axis=0)
        return self._rng.normal((n, self.dim), dtype=self.factor.dtype)

    def step(self) -> dict[str, Any]:
        """One natural-gradient step; returns (and appends to ``history``) its record."""
        beta0 = self.beta()
        Z = self._draw() if E.SAMPLED[self.estimator] else None
        est = E.ESTIMATORS[self.estimator](self._oracle, self.mean, self.factor, Z,
                                           antithetic=self.antithetic)
        entropy = float(self.posterior.entropy())
        T = est.tangent
        if self.momentum and self._velocity is not None:  # V_t = α T(V_{t−1}) + (1 − α) X_t
            T = self._velocity * self.momentum + T * (1.0 - self.momentum)
        if self.update == "additive":
            factor, direction, grad_w, beta, refused, capped = self._additive(est, T, beta0)
        else:
            factor, direction, grad_w, beta, refused, capped = self._multiplicative(est, T, beta0)
        if self.momentum and self._mean_velocity is not None:  # w_t = α w_{t−1} + (1 − α) A_newᵀĝ
            grad_w = self._mean_velocity * self.momentum + grad_w * (1.0 - self.momentum)
            direction = factor.apply(grad_w)
        if self.mean_step == "newton":
            direction = self._newton_direction(est, direction)
        mean_step = beta * direction
        new_mean = self.mean - mean_step
        if not self.xp.all_finite(new_mean):
            raise FloatingPointError(f"the mean became non-finite at iteration {self.iteration}; "
                                     f"lower lr or max_step")
        whitened = self.factor.solve(mean_step)
        step_size = math.hypot(0.5 * beta * float(T.norm()), float((whitened * whitened).sum()) ** 0.5)
        if self.momentum and capped:  # far from the answer: restart (the next step starts from its own X)
            self._velocity = self._mean_velocity = None
        elif self.momentum:
            self._velocity, self._mean_velocity = self.factor.transport(T, factor), grad_w
        self.mean, self.factor = new_mean, factor
        self.evaluations += est.evaluations
        record = {"iteration": self.iteration, "beta": beta, "loss": est.loss,
                  "elbo": -est.loss + entropy if E.SAMPLED[self.estimator] else float("nan"),
                  "step": step_size, "refused": refused, "capped": capped}
        self.history.append(record)
        self.iteration += 1
        return record

    def _newton_direction(self, est, natural):
        """Ĥ⁻¹ĝ = A (AᵀĤA)⁻¹ Aᵀĝ at the factor of the estimate, or ``natural`` where AᵀĤA is not
        positive definite (a non-convex region)."""
        xp = self.xp
        C = est.curvature
        try:
            L = xp.linalg.cholesky(C)
        except (np.linalg.LinAlgError, RuntimeError):
            return natural
        if not xp.all_finite(L):
            return natural
        y = xp.linalg.solve(L, est.u[:, None])
        return self.factor.apply(xp.linalg.solve(L.mT, y)[:, 0])

    def _refusal_warning(self, reason: str) -> None:
        # a stable text: Python shows it once per call site, ``history[i]["refused"]`` counts them all
        warnings.warn(f"GaussianVI refused a step ({reason}) and halved β; history[i]['refused'] counts "
                      f"the halvings", VIWarning, stacklevel=4)

    def _multiplicative(self, est: E.Estimate, T: Tangent, beta: float):
        """(A_new, S_new⁻¹ĝ, A_newᵀĝ, β, refusals, capped) for A_new = A · h(−β/2 · T)."""
        norm = float(T.norm())
        capped = 0.5 * beta * norm > self.max_step
        if capped:
            beta = 2.0 * self.max_step / norm
        trace = float(T.trace())
        logdet0 = float(self.factor.logdet())
        for refused in range(self.max_refusals + 1):
            t = -0.5 * beta
            new = self.factor.retract(T, t, self.retraction, self.order)
            logdet = float(new.logdet())
            reason = None
            if not math.isfinite(logdet):
                reason = "the retracted factor is singular"
            elif self.retraction == "truncated" and abs(logdet - logdet0 - t * trace) > _LOGDET_TOLERANCE:
                reason = "the truncated retraction is near singular (its log-det strays > 1 nat from expm's)"
            if reason is None:
                break
            if refused == self.max_refusals:
                raise FloatingPointError(f"step refused {self.max_refusals} times ({reason})")
            self._refusal_warning(reason)
            beta *= 0.5
        if est.grad is not None:  # m ← m − β A_new A_newᵀ ĝ
            whitened = new.apply_transpose(est.grad)
            step = new.apply(whitened)
        else:  # A_new A_newᵀ ĝ = A h hᵀ u with h = h(tX): no inverse of A
            h = self._identity.retract(T, -0.5 * beta, self.retraction, self.order)
            whitened = h.apply_transpose(est.u)
            step = self.factor.apply(h.apply(whitened))
        return new, step, whitened, beta, refused, capped

    def _additive(self, est: E.Estimate, T: Tangent, beta: float):
        """(A_new, S_new⁻¹ĝ, A_newᵀĝ, β, refusals, False) for A_new = A (I + βT)^{−1/2}."""
        xp, A = self.xp, self.factor
        for refused in range(self.max_refusals + 1):
            floor = 0.5 * (1.0 - beta)  # a PSD Ĥ keeps I + βX ⪰ (1 − β)I: refuse losing half of it
            if isinstance(A, Dense):
                Xd = T.to_dense()
                eye = xp.eye(self.dim, dtype=A.dtype, device=A.device)
                lam, Q = xp.linalg.eigh(eye + beta * 0.5 * (Xd + Xd.mT))
                if xp.all_finite(lam) and float(lam.min()) > max(floor, 1e-12):
                    # A ← A (I + βX)^{-1/2} (symmetric root), m ← m − β A (I + βX)⁻¹ u
                    new = Dense(A.A @ ((Q * lam ** -0.5) @ Q.mT), backend=xp.name)
                    step = A.apply((Q * (1.0 / lam)) @ (Q.mT @ est.u))
                    whitened = (Q * lam ** -0.5) @ (Q.mT @ est.u)
                    break
            elif isinstance(A, Diagonal):
                c = 1.0 + beta * T.v
                if xp.all_finite(c) and float(c.min()) > max(floor, 1e-12):
                    new = Diagonal(A.a / c ** 0.5, backend=xp.name)
                    step = A.a * est.u / c
                    whitened = est.u / c ** 0.5
                    break
            else:  # pragma: no cover - refused in __init__
                raise ValueError(f"update='additive' is not offered for {self.structure!r}")
            if refused == self.max_refusals:
                raise FloatingPointError(f"additive step refused {self.max_refusals} times: the precision "
                                         f"(1 − β)S + βĤ stays (nearly) indefinite")
            self._refusal_warning("the precision (1 − β)S + βĤ would lose more than half of (1 − β)S or "
                                  "stop being positive definite: the factor would be (nearly) singular")
            beta *= 0.5
        return new, step, whitened, beta, refused, False

    # -- loops and diagnostics ---------------------------------------------------------------------
    def fit(self, n_iter: int | None = None, *, tol: float | None = None, max_iter: int = 10_000,
            callback: Callable[[GaussianVI], Any] | None = None) -> GaussianVI:
        """Run ``n_iter`` steps, or until the step size (``history[-1]["step"]``) falls below ``tol``
        (at most ``max_iter`` steps).  ``callback(self)`` runs after each step; returning True stops.

        With a stochastic estimator the step size measures noise as well as progress: prefer
        ``n_iter`` (or a decaying ``lr``) there, ``tol`` with ``delta`` or ``hessian`` on smooth
        problems.
        """
        run_steps(self, n_iter, tol, max_iter, callback)
        return self

    def elbo(self, n_samples: int = 1000) -> float:
        """Monte-Carlo ELBO = E_q[log p(x, data) − log q(x)] ≤ log p(data), from ``n_samples`` draws of
        a separate stream (calling it does not change the fitting run).  The integrand is constant when
        q is the exact posterior, so the estimate is exact there (and has low variance near it)."""
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        q = self.posterior
        X = q.sample(int(n_samples), self._elbo_rng)
        ev = self._oracle(X)
        return float((-ev.values - q.log_prob(X)).mean())

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run identically (arrays are copies), momentum buffers
        included ("velocity": V_t as a ``Tangent.state_dict``, "mean_velocity": w_t; None before the
        first step or without momentum)."""
        velocity = None if self._velocity is None else self._velocity.state_dict()
        mean_velocity = None if self._mean_velocity is None else self.xp.copy(self._mean_velocity)
        return {"version": _STATE_VERSION, "dim": self.dim, "structure": self.structure,
                "estimator": self.estimator, "update": self.update, "momentum": self.momentum,
                "iteration": self.iteration, "evaluations": self.evaluations,
                "mean": self.xp.copy(self.mean), "factor": self.factor.state_dict(),
                "velocity": velocity, "mean_velocity": mean_velocity, "rng": self._rng.state_dict(),
                "elbo_rng": self._elbo_rng.state_dict(), "history": [dict(r) for r in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` taken from a GaussianVI with the same dim, structure, estimator,
        update and momentum (a state_dict without "momentum" is one of momentum 0)."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"not a GaussianVI state_dict of version {_STATE_VERSION}")
        state = {"momentum": 0.0, "velocity": None, "mean_velocity": None, **state}
        for key in ("dim", "structure", "estimator", "update", "momentum"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state_dict has {key}={state[key]!r}, this GaussianVI has "
                                 f"{key}={getattr(self, key)!r}")
        factor = structures.from_state_dict(state["factor"])
        if type(factor) is not type(self.factor) or factor.dim != self.dim:
            raise ValueError("state_dict's factor does not match this GaussianVI's structure")
        mean = self.xp.asarray(state["mean"], dtype=self.factor.dtype, device=self.factor.device)
        velocity = (None if state["velocity"] is None
                    else tangent_from_state_dict(factor, state["velocity"]))
        mean_velocity = (None if state["mean_velocity"] is None else self.xp.copy(self.xp.asarray(
            state["mean_velocity"], dtype=factor.dtype, device=factor.device)))
        self._rng.load_state_dict(state["rng"])
        self._elbo_rng.load_state_dict(state["elbo_rng"])
        self.mean, self.factor = self.xp.copy(mean), factor
        self._velocity, self._mean_velocity = velocity, mean_velocity
        self.iteration, self.evaluations = int(state["iteration"]), int(state["evaluations"])
        self.history = [dict(r) for r in state["history"]]
