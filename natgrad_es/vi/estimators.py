"""Estimators of the natural gradient of Gaussian VI in local coordinates (algorithms.md §4).

For q = N(m, A Aᵀ) and the loss L(q) = E_q[ℓ] − H[q], ℓ = −log p(x, data), the Bayesian learning
rule needs two quantities at the current (m, A), both in the local (whitened) coordinates of A:

    X = κ(Aᵀ Ĥ A − I)          Ĥ ≈ E_q[∇²ℓ(x)],  κ = ``factor.project`` (the structure's algebra)
    u = Aᵀ ĝ                    ĝ ≈ E_q[∇ℓ(x)]

and need no inverse of A.  With x = m + A z, z ~ N(0, I) (rows: X = m + Z Aᵀ):

===========  =====================================================  =========================  ==========
name         Aᵀ Ĥ A                                                 u                          needs
===========  =====================================================  =========================  ==========
``hessian``  (1/N) Σᵢ Aᵀ ∇²ℓ(xᵢ) A   (Bonnet–Price), d HVPs a row   (1/N) Σᵢ Aᵀ∇ℓ(xᵢ)          HVPs
``stein``    sym((1/N) Σᵢ zᵢ (Aᵀ∇ℓ(xᵢ))ᵀ)   (Stein's lemma)           (1/N) Σᵢ Aᵀ∇ℓ(xᵢ)          gradients
``zeroth``   (1/N) Σᵢ (zᵢzᵢᵀ − I)(ℓ(xᵢ) − bᵢ)  (the xNES term)         (1/N) Σᵢ zᵢ(ℓ(xᵢ) − bᵢ)    values
``delta``    Aᵀ ∇²ℓ(m) A   (Newton-like, deterministic)              Aᵀ∇ℓ(m)                    HVPs
===========  =====================================================  =========================  ==========

The Stein and zeroth-order estimators are applied to ℓ + log q (the integrand of KL(q‖p)) rather than
ℓ: the expectation is the same (E_q[∇²log q] = −S), so X = κ(AᵀĤA − I) comes out directly, and on a
Gaussian target the integrand becomes constant as q reaches the answer — the noise vanishes there
instead of leaving a floor ("sticking the landing", Roeder, Wu & Duvenaud, NeurIPS 2017).

The Stein and zeroth-order estimates are fed to the structure as rows, ``natural_gradient(Z, w)``,
so a structured factor never sees a d×d matrix: sym(z gᵀ) = ((c z + g/c)(c z + g/c)ᵀ −
(c z − g/c)(c z − g/c)ᵀ)/4 for any c ≠ 0 (c² = ‖g‖/‖z‖ balances the two rows and avoids
cancellation).  The Hessian and delta estimators form Aᵀ Ĥ A from d Hessian-vector products along the
columns of A (d×d memory; use them for moderate d).  With mirrored samples (z, −z), which the VI
layer draws by default, the gradient part of the Hessian and Stein estimators and the linear part of
the zeroth-order one cancel exactly on a quadratic; the zeroth-order baseline bᵢ is the leave-one-out
mean of the other samples (unbiased, no extra evaluation).

The delta estimator's fixed point is the Laplace approximation (∇ℓ(m) = 0, A⁻ᵀA⁻¹ = ∇²ℓ(m)); the other
three converge (in expectation) to the VI optimum of the family.  The zeroth-order estimator is the
xNES update with values instead of ranks plus the entropy's −I (algorithms.md §4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..structures import Factor, Tangent
from .oracle import LogJoint

__all__ = ["Estimate", "ESTIMATORS", "NEEDS", "hessian", "stein", "zeroth", "delta"]


@dataclass(frozen=True)
class Estimate:
    """One estimate of the local natural gradient.

    Attributes:
        tangent: X = κ(AᵀĤA − I), in the ``Factor.project`` convention (the step that goes with it
            is A ← A · h(−β/2 · X)).
        u: Aᵀ ĝ (d,).
        grad: ĝ in x-space (d,) when the estimator has it (None for ``zeroth``).
        loss: mean of ℓ over the samples (the MC estimate of E_q[ℓ]); ℓ(m) for ``delta``.
        evaluations: rows at which log_joint was evaluated.
        curvature: the dense AᵀĤA (d×d) where the estimator forms it (``hessian``, ``delta``), for
            the Newton mean step; None otherwise.
    """

    tangent: Tangent
    u: Any
    grad: Any
    loss: float
    evaluations: int
    curvature: Any = None


def _columns(factor: Factor):
    """Rows A eⱼ (the columns of A) as a (d, d) array."""
    xp = factor.xp
    return factor.apply(xp.eye(factor.dim, dtype=factor.dtype, device=factor.device))


def _curvature(factor: Factor, hvps):
    """(1/N) Σᵢ Aᵀ H(xᵢ) A from hvps[j, i] = H(xᵢ) A eⱼ, symmetrised."""
    C = factor.apply_transpose(hvps).mean(1)  # row j: (1/N) Σᵢ (Aᵀ H(xᵢ) A eⱼ)ᵀ
    return 0.5 * (C + C.mT)


def hessian(oracle: LogJoint, mean, factor: Factor, Z, *, antithetic: bool = True) -> Estimate:
    """Bonnet–Price: AᵀĤA = (1/N) Σ Aᵀ∇²ℓ(xᵢ)A from d HVPs per sample, u = (1/N) Σ Aᵀ∇ℓ(xᵢ)."""
    X = mean + factor.apply(Z)
    ev = oracle(X, grad=True, directions=_columns(factor))
    G = _curvature(factor, ev.hvps)
    eye = factor.xp.eye(factor.dim, dtype=factor.dtype, device=factor.device)
    g = ev.grads.mean(0)
    return Estimate(factor.project(G - eye), factor.apply_transpose(g), g, float(ev.values.mean()),
                    Z.shape[0], G)


def stein(oracle: LogJoint, mean, factor: Factor, Z, *, antithetic: bool = True) -> Estimate:
    """Stein: AᵀĤA − I = sym((1/N) Σ zᵢ(Aᵀ∇ℓ(xᵢ) − zᵢ)ᵀ), fed to the structure as 2N weighted rows.

    Aᵀ∇ℓ(x) − z = Aᵀ∇(ℓ + log q)(x) is the whitened gradient of the KL integrand ("sticking the
    landing"): E[z zᵀ] = I makes it the same expectation, and on a Gaussian target it vanishes as q
    reaches the answer, so the estimate has no noise floor there.
    """
    xp = factor.xp
    X = mean + factor.apply(Z)
    ev = oracle(X, grad=True)
    Gt = factor.apply_transpose(ev.grads)  # rows Aᵀ∇ℓ(xᵢ)
    R = Gt - Z  # rows Aᵀ∇(ℓ + log q)(xᵢ)
    n = Z.shape[0]
    zn = (Z * Z).sum(-1) ** 0.5
    rn = (R * R).sum(-1) ** 0.5
    ok = (zn > 0) & (rn > 0)
    c = xp.where(ok, (rn / xp.where(ok, zn, 1.0)) ** 0.5, 1.0)[:, None]
    rows = xp.concat([c * Z + R / c, c * Z - R / c], axis=0)
    w = xp.ones(n, dtype=factor.dtype, device=factor.device) / (4.0 * n)
    T = factor.natural_gradient(rows, xp.concat([w, -w], axis=0))
    g = ev.grads.mean(0)
    return Estimate(T, Gt.mean(0), g, float(ev.values.mean()), n)


def zeroth(oracle: LogJoint, mean, factor: Factor, Z, *, antithetic: bool = True) -> Estimate:
    """Values only: AᵀĤA − I = (1/N) Σ (zᵢzᵢᵀ − I) rᵢ,  u = (1/N) Σ zᵢ(ℓ(xᵢ) − bᵢ).

    rᵢ = ℓ(xᵢ) + log q(xᵢ) − bᵢ = ℓ(xᵢ) − ½‖zᵢ‖² − bᵢ: the values of the KL integrand (E[(zzᵀ − I)
    ½‖z‖²] = I turns AᵀĤA into AᵀĤA − I, and on a Gaussian target the rᵢ become constant as q reaches
    the answer: no noise floor).  bᵢ is the leave-one-out mean of the other samples' values (unbiased,
    since E[zzᵀ − I] = 0 and E[z] = 0).  With mirrored pairs (rows i and i + N/2 are z and −z) the
    curvature part uses the pair means (ℓ₊ + ℓ₋)/2 — on a quadratic exactly ½zᵀ(AᵀHA)z + const — and
    the gradient part (ℓ₊ − ℓ₋)/2, in which any baseline cancels.
    """
    xp = factor.xp
    X = mean + factor.apply(Z)
    ev = oracle(X)
    n = Z.shape[0]
    values = ev.values
    kl_values = values - 0.5 * (Z * Z).sum(-1)
    if antithetic:
        half = n // 2
        pair = 0.5 * (kl_values[:half] + kl_values[half:])
        curv, groups = xp.concat([pair, pair], axis=0), half
    else:
        curv, groups = kl_values, n
    if groups < 2:
        raise ValueError("the zeroth-order estimator needs at least 2 independent samples (mc_samples >= 4 "
                         "with antithetic pairs)")
    w = (curv - curv.mean()) * (groups / (groups - 1)) / n  # leave-one-out baseline
    grad_w = values - values.mean() if antithetic else w * n
    T = factor.natural_gradient(Z, w)
    return Estimate(T, (grad_w / n) @ Z, None, float(values.mean()), n)


def delta(oracle: LogJoint, mean, factor: Factor, Z=None, *, antithetic: bool = True) -> Estimate:
    """Newton-like: Ĥ = ∇²ℓ(m), ĝ = ∇ℓ(m) (deterministic; its fixed point is the Laplace
    approximation, which is the exact posterior when ℓ is quadratic)."""
    ev = oracle(mean[None, :], grad=True, directions=_columns(factor))
    G = _curvature(factor, ev.hvps)
    eye = factor.xp.eye(factor.dim, dtype=factor.dtype, device=factor.device)
    g = ev.grads[0]
    return Estimate(factor.project(G - eye), factor.apply_transpose(g), g, float(ev.values[0]), 1, G)


ESTIMATORS: dict[str, Callable[..., Estimate]] = {  # (oracle, m, A, Z, *, antithetic) -> Estimate
    "hessian": hessian, "stein": stein, "zeroth": zeroth, "delta": delta}
"""The estimators by name."""

NEEDS: dict[str, str] = {"hessian": "hvp", "stein": "grad", "zeroth": "values", "delta": "hvp"}
"""What each estimator needs from the log-joint."""

SAMPLED: dict[str, bool] = {"hessian": True, "stein": True, "zeroth": True, "delta": False}
"""Whether the estimator draws Monte-Carlo samples."""
