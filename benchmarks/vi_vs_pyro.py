"""natgrad-es Gaussian VI against Pyro autoguides with Adam, at equal structure (issue 6).

Two Bayesian regressions, and on each the three families of q on both sides:

* **linear** regression on scikit-learn's diabetes data (the 353 training rows of
  ``load_diabetes(seed=0)``: 10 standardised features, standardised target; noise variance 0.5,
  about the residual variance; prior N(0, I)).  The posterior is Gaussian in closed form; the
  error of a fit is KL(q ‖ q*) with q* the best member of q's family (for the full family, the
  exact posterior), targets KL < 1e-2 and < 1e-3.
* **logistic** regression on breast cancer (``load_breast_cancer(seed=0, add_bias=True)``: 455
  rows, 30 standardised features + bias, prior N(0, I)), as in ``vi_logistic.py``.  The error is
  max(‖m − m*‖/‖m*‖, ‖Σ − Σ*‖_F/‖Σ*‖_F) against the best member q* = N(m*, Σ*) of the family,
  computed from exact (Gauss–Hermite) expectations; targets 10% and 3%.

Families: full ↔ ``AutoMultivariateNormal``; diagonal ↔ ``AutoDiagonalNormal``; low rank ↔
``AutoLowRankMultivariateNormal``, both of rank k = round(√d) (Pyro's default).  The two low-rank
families are *not* the same: Pyro's is Σ = WWᵀ + diag(s²) (rotation invariant), GaussianVI's is
block-triangular, A = [[A₁₁, 0], [A₂₁, D]] (its low-rank part lives in the first k coordinates).
Each fit is measured against the optimum of its own family (both computed here).

Best member q* of a family (``family_optimum``): the full and diagonal families of the linear model
in closed form (Σ* = P⁻¹, resp. diag(P)⁻¹; m* = μ); the full, diagonal and block-triangular
families of the logistic model by ``vi_logistic.best_of_family`` (the reference of vi_logistic.py);
the rest — Pyro's low-rank family on both models, the block-triangular family of the linear model —
by L-BFGS on the exact objective E_q[ℓ] − ½ log|Σ| over the family's parameters.

Gradient evaluations (the figure of merit): one ∇log p(θ, data) at one θ counts 1, one
Hessian-vector product counts ``HVP_COST`` = 2 (forward-over-reverse costs about two gradients), so
a GaussianVI step costs N (Stein), N(1 + 2d) (Hessian: a gradient and d HVPs per sample) or 1 + 2d
(delta).  Pyro: ``Trace_ELBO`` with one particle differentiates the model once per step, counted by
the model's own calls.  Both start at m = 0, scale 0.1 (Pyro: ``init_to_value`` 0, ``init_scale``
0.1; its low-rank factor W starts random, as Pyro draws it).

Protocol: for each (model, family) and each method group — Pyro Adam; GaussianVI with gradients only
(Stein: the same oracle as Adam); GaussianVI with Hessian-vector products (Hessian or delta
estimator) — every setting of a small grid runs on the first seed, the best (fewest evaluations to
the tight target, then to the loose one, then the lowest final error) runs on every seed.  Adam's
grid is lr ∈ {1e-3, 3e-3, 1e-2, 3e-2, 1e-1}, constant; ``--adam-decay`` adds the same lrs decayed
100× over the budget (``ClippedAdam`` with ``lrd``, no clipping), since a constant step leaves a
noise floor (it doubles Pyro's runs; in a pilot on the linear model, full family, lr 1e-2 → 1e-4
got to KL 0.04 in 20,000 steps, constant lr 3e-3 to 0.09: neither reached 1e-2).  A run stops at
the budget of gradient evaluations or when both targets are hit (first hitting times: a noisy run
that dips below a target once counts as there).  Wall time counts the steps only, not the error
checks.  Figures: median (min–max) over seeds; a run that misses a target within the budget is
"not reached", and a ratio against it is a bound (> or <).

Run:  python benchmarks/vi_vs_pyro.py [--quick] [--seeds 3] [--budget 20000 | --budget 10000 20000]
      [--problems linear logistic] [--jobs 2] [--adam-decay] [--out benchmarks/results/vi_vs_pyro.json]
(--quick: 1 seed, budget 2,000, a minute or two; the full default is hours on two busy cores: Pyro
takes 2–4 ms a step here, and each (model, family) tunes 5 learning rates on the whole budget.)
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # harness, vi_logistic
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # problems

import harness  # noqa: E402,I001  (sets the BLAS thread variables before numpy is imported)

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import scipy.optimize  # noqa: E402
import scipy.special  # noqa: E402

from natgrad_es.backend import limit_threads  # noqa: E402
from natgrad_es.vi import GaussianVI, VIWarning  # noqa: E402
from problems.datasets import load_breast_cancer, load_diabetes  # noqa: E402
from problems.regression import (  # noqa: E402
    BayesianLinearRegression,
    BayesianLogisticRegression,
    gaussian_kl,
)

limit_threads(1)  # small problems: torch and BLAS thread pools would spin against each other

HVP_COST = 2
"""Gradient evaluations charged for one Hessian-vector product."""

STRUCTURES = ("full", "lowrank", "diagonal")
GUIDES = {"full": "AutoMultivariateNormal", "lowrank": "AutoLowRankMultivariateNormal",
          "diagonal": "AutoDiagonalNormal"}
ADAM_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
ADAM_DECAY = 0.01  # the decayed variant ends the budget at lr × ADAM_DECAY
GROUPS = ("pyro", "stein", "hvp")
GROUP_LABELS = {"pyro": "Pyro Adam", "stein": "natgrad-es, gradients only",
                "hvp": "natgrad-es, with HVPs"}

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)  # as vi_logistic.py
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


# -- problems and their references ---------------------------------------------------------------


@dataclass
class Problem:
    """A model, how a fit's error is measured ("kl" or "relerr") and the two targets (loose, tight).

    ``references`` maps a family name ("full", "diagonal", "blocktri", "lowrank+diag") to the best
    member (m*, Σ*) of that family; ``family_optimum`` fills it in.
    """

    name: str
    model: Any
    metric: str
    targets: tuple[float, float]
    rank: int
    references: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    notes: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        if self.metric not in ("kl", "relerr"):
            raise ValueError(f"metric must be 'kl' or 'relerr', got {self.metric!r}")
        if not (len(self.targets) == 2 and self.targets[0] > self.targets[1] > 0):
            raise ValueError(f"targets must be (loose, tight) with loose > tight > 0, got {self.targets}")
        if not 1 <= self.rank < self.model.dim:
            raise ValueError(f"rank must lie in [1, {self.model.dim}), got {self.rank}")

    @property
    def dim(self) -> int:
        return self.model.dim


def linear_problem() -> Problem:
    data = load_diabetes(seed=0)
    model = BayesianLinearRegression(data.X_train, data.y_train, prior_var=1.0, noise_var=0.5)
    return Problem("linear", model, "kl", (1e-2, 1e-3), round(model.dim ** 0.5))


def logistic_problem() -> Problem:
    data = load_breast_cancer(seed=0, add_bias=True)
    model = BayesianLogisticRegression(data.X_train, data.y_train, prior_var=1.0)
    return Problem("logistic", model, "relerr", (1e-1, 3e-2), round(model.dim ** 0.5))


PROBLEMS: dict[str, Callable[[], Problem]] = {"linear": linear_problem, "logistic": logistic_problem}


def family(group: str, structure: str) -> str:
    """The variational family a method fits: Pyro's low rank is WWᵀ + diag(s²), ours block-triangular."""
    if structure == "lowrank":
        return "lowrank+diag" if group == "pyro" else "blocktri"
    return structure


def expectations(model) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray, np.ndarray]]:
    """(m, Σ) ↦ (E_q[ℓ], E_q[∇ℓ], E_q[∇²ℓ]) exactly (up to a constant in the value), q = N(m, Σ).

    Linear: ℓ is quadratic with Hessian P.  Logistic: ℓ depends on θ through tᵢ = xᵢᵀθ only and
    tᵢ ~ N(xᵢᵀm, xᵢᵀΣxᵢ) under q: one-dimensional Gauss–Hermite quadrature (80 nodes).
    """
    P0 = model.prior.precision
    if isinstance(model, BayesianLinearRegression):
        mu, _ = model.posterior()
        P = model.posterior_precision()

        def linear(m, Sigma):
            r = m - mu
            return 0.5 * (r @ P @ r + np.sum(P * Sigma)), P @ r, P

        return linear
    if isinstance(model, BayesianLogisticRegression):
        X, y = model.X, model.y

        def logistic(m, Sigma):
            mu_t = X @ m
            s = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", X, Sigma, X), 0.0))
            t = mu_t[:, None] + s[:, None] * _NODES[None, :]
            sig = scipy.special.expit(t)
            value = ((np.logaddexp(0.0, t) @ _WEIGHTS).sum() - y @ mu_t
                     + 0.5 * (m @ P0 @ m + np.sum(P0 * Sigma)))
            grad = -(X.T @ (y - sig @ _WEIGHTS)) + P0 @ m
            hess = (X.T * ((sig * (1.0 - sig)) @ _WEIGHTS)) @ X + P0
            return value, grad, hess

        return logistic
    raise TypeError(f"no exact expectations for {type(model).__name__}")


def _mask(fam: str, d: int, rank: int) -> np.ndarray:
    """Free strictly-lower entries of the lower-triangular factor A of a family (Σ = AAᵀ)."""
    if fam == "full":
        return np.tril(np.ones((d, d), bool), -1)
    if fam == "diagonal":
        return np.zeros((d, d), bool)
    if fam == "blocktri":  # [[A₁₁ lower-triangular, 0], [A₂₁, D]]: the block-triangular family
        M = np.zeros((d, d), bool)
        M[:rank, :rank] = np.tril(np.ones((rank, rank), bool), -1)
        M[rank:, :rank] = True
        return M
    raise ValueError(f"unknown family {fam!r}")


def lbfgs_optimum(expect, d: int, fam: str, rank: int, *, max_iter: int = 20000, seed: int = 0,
                  start: tuple[np.ndarray, np.ndarray] | None = None):
    """argmin over the family of F(m, Σ) = E_q[ℓ] − ½ log|Σ| (the negative ELBO up to a constant).

    "lowrank+diag": Σ = WWᵀ + diag(e^{2ρ}), ∂F/∂W = 2GW, ∂F/∂ρ = 2 e^{2ρ} diag(G) with
    G = ∂F/∂Σ = ½(E_q[∇²ℓ] − Σ⁻¹) (Price's theorem).  The others: A lower triangular with the
    family's pattern and diagonal e^ρ, Σ = AAᵀ, log|Σ| = 2Σρ, ∂E_q[ℓ]/∂A = E_q[∇²ℓ] A.
    "lowrank+diag" starts from a random W (``seed``) or, with ``start`` = (m, Σ) of the
    block-triangular family (a limit point of this one: D = 0 on the first k coordinates), from there.
    Returns (m*, Σ*, ‖∇F‖_∞ at the end, F at the end).
    """
    if fam == "lowrank+diag":
        if start is None:
            rng = np.random.default_rng(seed)
            x0 = np.concatenate([np.zeros(d), 0.1 * rng.standard_normal(d * rank), np.full(d, math.log(0.1))])
        else:
            m0, S0 = start
            L11 = np.linalg.cholesky(S0[:rank, :rank])
            W0 = np.vstack([L11, scipy.linalg.solve_triangular(L11, S0[:rank, rank:], lower=True).T])
            D2 = np.concatenate([np.full(rank, 1e-6), np.diag(S0)[rank:] - (W0[rank:] ** 2).sum(1)])
            x0 = np.concatenate([m0, W0.ravel(), 0.5 * np.log(np.maximum(D2, 1e-6))])

        def unpack(x):
            m, W, rho = x[:d], x[d:d + d * rank].reshape(d, rank), x[d + d * rank:]
            return m, W, rho, W @ W.T + np.diag(np.exp(2 * rho))

        def fun(x):
            m, W, rho, Sigma = unpack(x)
            value, g, H = expect(m, Sigma)
            L = np.linalg.cholesky(Sigma)
            Sinv = scipy.linalg.cho_solve((L, True), np.eye(d))
            G = 0.5 * (H - Sinv)
            f = value - np.log(np.diag(L)).sum()
            return f, np.concatenate([g, (2 * G @ W).ravel(), 2 * np.exp(2 * rho) * np.diag(G)])
    else:
        M = _mask(fam, d, rank)
        idx = np.nonzero(M)

        def unpack(x):
            m, a, rho = x[:d], x[d:d + len(idx[0])], x[d + len(idx[0]):]
            A = np.diag(np.exp(rho))
            A[idx] = a
            return m, A, rho, A @ A.T

        x0 = np.concatenate([np.zeros(d), np.zeros(len(idx[0])), np.full(d, math.log(0.1))])

        def fun(x):
            m, A, rho, Sigma = unpack(x)
            value, g, H = expect(m, Sigma)
            dA = H @ A
            return value - rho.sum(), np.concatenate([g, dA[idx], np.diag(dA) * np.exp(rho) - 1.0])

    x = x0
    for _ in range(5):  # restarts from the last point refresh the curvature memory
        res = scipy.optimize.minimize(fun, x, jac=True, method="L-BFGS-B",
                                      options={"maxiter": max_iter, "maxfun": 2 * max_iter,
                                               "ftol": 0.0, "gtol": 1e-11, "maxcor": 30})
        x = res.x
        if np.abs(res.jac).max() < 1e-9:
            break
    m, _, _, Sigma = unpack(x)
    f, grad = fun(x)
    return m, Sigma, float(np.abs(grad).max()), float(f)


def family_optimum(problem: Problem, fam: str) -> tuple[np.ndarray, np.ndarray]:
    """The best member (m*, Σ*) of a family for a problem (cached in ``problem.references``)."""
    if fam in problem.references:
        return problem.references[fam]
    model, d = problem.model, problem.dim
    closed = isinstance(model, BayesianLinearRegression) and fam in ("full", "diagonal")
    if closed:
        mu, S = model.posterior()
        ref = (mu, S if fam == "full" else np.diag(1.0 / np.diag(model.posterior_precision())))
    elif isinstance(model, BayesianLogisticRegression) and fam != "lowrank+diag":
        import vi_logistic

        kw = {"rank": problem.rank} if fam == "blocktri" else {}
        structure = "lowrank" if fam == "blocktri" else fam
        m, S, _ = vi_logistic.best_of_family(model, structure, beta0=0.1 if kw else 1.0, **kw)
        ref = (m, S)
    elif fam == "lowrank+diag":  # not convex: several local optima on the logistic model; keep the best
        starts = [{"seed": k} for k in range(4)] + [{"start": family_optimum(problem, "blocktri")}]
        found = [lbfgs_optimum(expectations(model), d, fam, problem.rank, **kw) for kw in starts]
        problem.notes[fam] = {"objective_of_each_start": [f[3] for f in found],
                              "grad_inf_norm_of_each_start": [f[2] for f in found]}
        m, S, _, _ = min(found, key=lambda f: f[3])
        ref = (m, S)
    else:
        m, S, gmax, _ = lbfgs_optimum(expectations(model), d, fam, problem.rank)
        problem.notes[fam] = {"grad_inf_norm": gmax}
        ref = (m, S)
    problem.references[fam] = ref
    return ref


def error(problem: Problem, mean, cov, ref: tuple[np.ndarray, np.ndarray]) -> float:
    """KL(q ‖ q*) ("kl") or max of the relative mean and covariance errors ("relerr")."""
    mean, cov = np.asarray(mean, float), np.asarray(cov, float)
    if problem.metric == "kl":
        return gaussian_kl(mean, cov, *ref)
    m_ref, S_ref = ref
    return max(float(np.linalg.norm(mean - m_ref) / np.linalg.norm(m_ref)),
               float(np.linalg.norm(cov - S_ref) / np.linalg.norm(S_ref)))


# -- runs -----------------------------------------------------------------------------------------


def _checkpoints(n: int) -> set[int]:
    """About 200 step counts, geometrically spaced up to n (where a run's error is recorded)."""
    return set(np.unique(np.geomspace(1, max(n, 1), 200).round().astype(int)).tolist())


class _Tracker:
    """First hitting times of the targets, the trace of the error and the step time."""

    def __init__(self, problem: Problem, ref, budget: int):
        self.problem, self.ref, self.budget = problem, ref, budget
        self.hits: dict[str, dict | None] = {str(t): None for t in problem.targets}
        self.trace_evals: list[int] = []
        self.trace_error: list[float] = []
        self.checkpoints = _checkpoints(budget)
        self.seconds = 0.0
        self.steps = 0
        self.last_error = math.inf

    def record(self, evals: int, mean, cov) -> bool:
        """Note the error after a step; True when every target has been hit."""
        self.steps += 1
        err = error(self.problem, mean, cov, self.ref) if np.all(np.isfinite(mean)) else math.inf
        self.last_error = err
        for t in self.problem.targets:
            if self.hits[str(t)] is None and err < t:
                self.hits[str(t)] = {"evals": evals, "seconds": self.seconds, "steps": self.steps}
        if self.steps in self.checkpoints or evals in self.checkpoints:
            self.trace_evals.append(evals)
            self.trace_error.append(err)
        return all(h is not None for h in self.hits.values())

    def result(self, evals: int, mean, cov, **extra) -> dict:
        if not self.trace_evals or self.trace_evals[-1] != evals:
            self.trace_evals.append(evals)
            self.trace_error.append(self.last_error)
        return {"hits": self.hits, "final_error": self.last_error, "evals": evals, "seconds": self.seconds,
                "steps": self.steps, "trace_evals": self.trace_evals, "trace_error": self.trace_error,
                "final_mean": np.asarray(mean, float), "final_cov": np.asarray(cov, float), **extra}


def natgrad_cost(vi: GaussianVI) -> int:
    """Gradient evaluations a GaussianVI run has spent: each log-joint row evaluated costs one gradient
    (Stein) or one gradient and d HVPs (Hessian, delta)."""
    per_row = 1 if vi.estimator == "stein" else 1 + HVP_COST * vi.dim
    if vi.estimator == "zeroth":
        raise ValueError("the zeroth-order estimator evaluates values only; it is not part of this benchmark")
    return vi.evaluations * per_row


def run_natgrad(problem: Problem, structure: str, setting: dict, seed: int, budget: int) -> dict:
    """One GaussianVI fit until both targets are hit or ``budget`` gradient evaluations are spent.

    ``setting``: estimator, lr (β₀), decay (c in β_t = min(β₀, c/(t + 1)), or None for a constant
    β), mc_samples, update.
    """
    ref = family_optimum(problem, family("natgrad", structure))
    kw = {"rank": problem.rank} if structure == "lowrank" else {}
    beta0, c = setting["lr"], setting.get("decay")
    lr = beta0 if c is None else (lambda t, b=beta0, c=c: min(b, c / (t + 1)))
    vi = GaussianVI(problem.model.log_joint, problem.dim, structure, estimator=setting["estimator"],
                    mc_samples=setting.get("mc_samples"), lr=lr, seed=seed, init_scale=0.1,
                    update=setting.get("update", "multiplicative"),
                    mean_step=setting.get("mean_step", "natural"), **kw)
    track = _Tracker(problem, ref, budget)
    failure = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VIWarning)
        while natgrad_cost(vi) < budget:
            t0 = time.perf_counter()
            try:
                vi.step()
            except (FloatingPointError, ValueError) as exc:  # diverged: a NaN log-joint or a singular step
                failure = f"{type(exc).__name__}: {exc}"[:200]
                break
            track.seconds += time.perf_counter() - t0
            q = vi.posterior
            if track.record(natgrad_cost(vi), q.mean, q.covariance()):
                break
    q = vi.posterior
    return track.result(natgrad_cost(vi), q.mean, q.covariance(), failure=failure)


def run_pyro(problem: Problem, structure: str, setting: dict, seed: int, budget: int, *,
             jit: bool = True) -> dict:
    """One Pyro SVI fit (``Trace_ELBO``, one particle, Adam) of the autoguide matching ``structure``.

    The model is θ ~ ImproperUniform and ``pyro.factor(log p(θ, data))``: exactly the log-joint
    GaussianVI sees.  ``setting``: lr, and decay (True: lr falls by ``ADAM_DECAY`` over the budget).
    ``jit``: ``JitTrace_ELBO`` (the same gradients, about 2× faster per step here); the traced model
    is not re-run in Python, so evaluations are counted as steps × 1 particle — without ``jit`` they
    are the model's own calls (the tests check the two agree).
    """
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
    from pyro.infer.autoguide import guides as autoguides
    from pyro.infer.autoguide import init_to_value

    ref = family_optimum(problem, family("pyro", structure))
    d, log_joint = problem.dim, problem.model.log_joint
    calls = [0]

    def model():
        theta = pyro.sample("theta", dist.ImproperUniform(dist.constraints.real, (), (d,)))
        calls[0] += 1
        pyro.factor("log_joint", log_joint(theta[None, :])[0])

    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    kw = {"rank": problem.rank} if structure == "lowrank" else {}
    guide = getattr(autoguides, GUIDES[structure])(
        model, init_loc_fn=init_to_value(values={"theta": torch.zeros(d, dtype=torch.float64)}),
        init_scale=0.1, **kw)
    guide()  # builds the guide's parameters (one model call without a gradient: not counted)
    if setting.get("decay"):
        optim = pyro.optim.ClippedAdam({"lr": setting["lr"], "lrd": ADAM_DECAY ** (1.0 / budget),
                                        "clip_norm": math.inf})
    else:
        optim = pyro.optim.Adam({"lr": setting["lr"]})
    svi = SVI(model, guide, optim, (JitTrace_ELBO if jit else Trace_ELBO)(num_particles=1))
    calls[0] = 0

    def evaluations():
        return track.steps if jit else calls[0]

    def moments():
        with torch.no_grad():
            q = guide.get_posterior()
            cov = q.covariance_matrix if hasattr(q, "covariance_matrix") else torch.diag(q.variance)
            return q.mean.numpy().copy(), cov.numpy().copy()

    track = _Tracker(problem, ref, budget)
    failure = None
    while evaluations() < budget:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the JIT tracer's warnings
                svi.step()
        except (ValueError, RuntimeError) as exc:  # a NaN loss or a non-PD scale
            failure = f"{type(exc).__name__}: {exc}"[:200]
            break
        track.seconds += time.perf_counter() - t0
        if track.record(track.steps + 1 if jit else calls[0], *moments()):
            break
    try:
        mean, cov = moments()
    except (ValueError, RuntimeError):
        mean, cov = np.full(d, np.nan), np.full((d, d), np.nan)
    return track.result(evaluations(), mean, cov, failure=failure, model_calls=calls[0])


# -- settings and protocol ------------------------------------------------------------------------


def pyro_settings(decay: bool = False) -> list[dict]:
    """Adam's grid: every lr of ``ADAM_LRS``, constant (and, with ``decay``, decayed as well)."""
    return [{"lr": lr, "decay": dec} for dec in ((False, True) if decay else (False,)) for lr in ADAM_LRS]


def natgrad_settings(problem: Problem, structure: str, group: str) -> list[dict]:
    """The GaussianVI grid per (model, family, group); the reasons are in RESULTS.md.

    Linear (Gaussian target): constant β — Stein and Hessian estimators of ℓ + log q have no noise
    floor on the full family; the restricted families' mean step is a Jacobi iteration stable for
    β < 2/λ_max(D^{-1/2}PD^{-1/2}) ≈ 0.5 here.  Logistic: β_t = min(β₀, 20/(t + 1)) as in
    vi_logistic.py (a constant β leaves a Monte-Carlo noise floor).
    """
    if group not in ("stein", "hvp"):
        raise ValueError(f"group must be 'stein' or 'hvp', got {group!r}")
    linear = problem.metric == "kl"
    if group == "stein":
        if linear:
            betas = {"full": (0.2, 0.5), "diagonal": (0.25, 0.45), "lowrank": (0.1, 0.4)}[structure]
            return [{"estimator": "stein", "lr": b, "mc_samples": n} for b in betas for n in (4, 16)]
        top = 0.1 if structure == "lowrank" else 0.5
        return [{"estimator": "stein", "lr": b, "decay": c, "mc_samples": n}
                for b, c in ((min(top, 0.2), 20.0), (top, 100.0)) for n in (8, 16)]
    if linear:
        if structure == "full":
            return [{"estimator": "delta", "lr": 1.0, "update": "additive"},
                    {"estimator": "hessian", "lr": 1.0, "mc_samples": 2}]
        betas = {"diagonal": (0.25, 0.45), "lowrank": (0.1, 0.4)}[structure]
        # the Newton mean step (GaussianVI(mean_step="newton")) lifts the Jacobi limit on β
        return ([{"estimator": "delta", "lr": b} for b in betas]
                + [{"estimator": "delta", "lr": b, "mean_step": "newton"} for b in (0.5, 1.0)])
    top = 0.1 if structure == "lowrank" else 0.5
    plain = [{"estimator": "hessian", "lr": top, "decay": 20.0, "mc_samples": n} for n in (2, 8)]
    if structure == "full":
        return plain
    return plain + [{"estimator": "hessian", "lr": b, "decay": 20.0, "mc_samples": 2, "mean_step": "newton"}
                    for b in (top, 1.0)]


def setting_label(group: str, setting: dict) -> str:
    if group == "pyro":
        decay = f" → {setting['lr'] * ADAM_DECAY:g}" if setting.get("decay") else ""
        return f"lr {setting['lr']:g}{decay}"
    beta = f"β {setting['lr']:g}" + (f", min(β, {setting['decay']:g}/(t+1))" if setting.get("decay") else "")
    n = "" if setting["estimator"] == "delta" else f", N {setting['mc_samples']}"
    upd = ", additive" if setting.get("update") == "additive" else ""
    upd += ", Newton mean" if setting.get("mean_step") == "newton" else ""
    return f"{setting['estimator']}, {beta}{n}{upd}"


def run_job(job: dict) -> dict:
    """One run (a module-level function: ``harness.run_parallel`` pickles it)."""
    fn = run_pyro if job["group"] == "pyro" else run_natgrad
    return fn(job["problem"], job["structure"], job["setting"], job["seed"], job["budget"])


def _score(problem: Problem, result: dict) -> tuple:
    loose, tight = (result["hits"][str(t)] for t in problem.targets)
    return (math.inf if tight is None else tight["evals"], math.inf if loose is None else loose["evals"],
            result["final_error"])


def run_benchmark(problem: Problem, seeds: Sequence[int], budget: int, *, structures=STRUCTURES,
                  groups=GROUPS, settings: dict | None = None, adam_decay: bool = False, jobs: int = 1,
                  progress: bool = True) -> list[dict]:
    """Tune each (family, group) on the first seed, run the best setting on every seed.

    ``settings`` overrides the grids: {group: list of settings} (for tests).  Returns one record per
    (family, group): the chosen setting, the grid's scores and the runs of every seed.
    """
    for s in structures:  # references first, once (workers get them with the problem)
        for g in groups:
            family_optimum(problem, family(g, s))
    grid = {}
    for s in structures:
        for g in groups:
            if settings is not None and g in settings:
                grid[s, g] = list(settings[g])
            else:
                grid[s, g] = pyro_settings(adam_decay) if g == "pyro" else natgrad_settings(problem, s, g)
    first = [{"problem": problem, "structure": s, "group": g, "setting": st, "seed": seeds[0],
              "budget": budget, "key": (s, g, i)} for (s, g), sts in grid.items() for i, st in enumerate(sts)]
    tuned: dict[tuple, list] = {k: [None] * len(v) for k, v in grid.items()}
    for job, res in harness.run_parallel(run_job, first, jobs, desc=f"{problem.name}: tuning",
                                         disable_progress=not progress):
        s, g, i = job["key"]
        tuned[s, g][i] = res
    records, rest = {}, []
    for (s, g), results in tuned.items():
        best = min(range(len(results)), key=lambda i: _score(problem, results[i]))
        records[s, g] = {"problem": problem.name, "structure": s, "group": g, "family": family(g, s),
                         "setting": grid[s, g][best], "label": setting_label(g, grid[s, g][best]),
                         "grid": [{"setting": st, "label": setting_label(g, st),
                                   "score": _score(problem, r)[:2], "final_error": r["final_error"]}
                                  for st, r in zip(grid[s, g], results)],
                         "runs": {seeds[0]: results[best]}}
        rest += [{"problem": problem, "structure": s, "group": g, "setting": grid[s, g][best], "seed": seed,
                  "budget": budget, "key": (s, g, seed)} for seed in seeds[1:]]
    for job, res in harness.run_parallel(run_job, rest, jobs, desc=f"{problem.name}: seeds",
                                         disable_progress=not progress):
        s, g, seed = job["key"]
        records[s, g]["runs"][seed] = res
    for rec in records.values():
        rec["runs"] = [dict(seed=k, **rec["runs"][k]) for k in sorted(rec["runs"])]
    return [records[s, g] for s in structures for g in groups]


# -- the table ------------------------------------------------------------------------------------


def to_target(record: dict, target: float, what: str = "evals") -> list[float]:
    """Evaluations (or seconds) to a target over the seeds, inf where it was not reached."""
    hits = [r["hits"][str(target)] for r in record["runs"]]
    return [math.inf if h is None else h[what] for h in hits]


def _fmt_count(values: list[float], budget: int) -> str:
    s = harness.summary(values)
    missed = sum(v == math.inf for v in values)
    if missed == len(values):
        return f"not reached (> {budget:,})"
    text = f"{s.median:,.0f}" if s.n == 1 else f"{_n(s.median)} ({_n(s.min)}–{_n(s.max)})"
    return text + (f", {missed}/{len(values)} not reached" if missed else "")


def _n(x: float) -> str:
    return "∞" if x == math.inf else f"{x:,.0f}"


def _fmt_seconds(values: list[float]) -> str:
    if all(v == math.inf for v in values):
        return "–"
    return _num(harness.summary(values).median, "{:.3g}")


def _num(x: float, spec: str) -> str:
    return "∞" if x == math.inf else spec.format(x)


def ratio(pyro: list[float], ours: list[float], budget_pyro: float, budget_ours: float) -> tuple[str, float]:
    """Pyro ÷ ours of the medians; a bound where one side did not reach the target."""
    p, o = harness.summary(pyro).median, harness.summary(ours).median
    if p < math.inf and o < math.inf:
        return f"{p / o:.3g}", p / o
    if p == math.inf and o < math.inf:
        return f"> {budget_pyro / o:.3g}", budget_pyro / o
    if p < math.inf:
        return f"< {p / budget_ours:.3g}", p / budget_ours
    return "–", math.nan


def table(problem: Problem, records: list[dict], budget: int) -> tuple[str, list[dict]]:
    """The markdown table (one row per family and method) and its rows as dicts (for JSON)."""
    loose, tight = problem.targets
    what = "KL" if problem.metric == "kl" else "err"
    headers = ["model", "family", "method", "setting", f"grad evals to {what} < {loose:g}",
               f"grad evals to {what} < {tight:g}", f"s to {tight:g}",
               "Pyro ÷ ours, evals (loose / tight)", "Pyro ÷ ours, time (tight)", "≥ 10× (tight)"]
    rows, out = [], []
    by_key = {(r["structure"], r["group"]): r for r in records}
    for r in records:
        ev = {t: to_target(r, t) for t in problem.targets}
        sec = to_target(r, tight, "seconds")
        row = {"model": problem.name, "family": r["structure"] if r["structure"] != "lowrank" else
               f"lowrank k={problem.rank} ({r['family']})", "method": GROUP_LABELS[r["group"]],
               "setting": r["label"], "evals": {str(t): v for t, v in ev.items()}, "seconds": sec}
        cells = [problem.name, row["family"], row["method"], r["label"], _fmt_count(ev[loose], budget),
                 _fmt_count(ev[tight], budget), _fmt_seconds(sec)]
        pyro = by_key.get((r["structure"], "pyro"))
        if r["group"] == "pyro" or pyro is None:
            cells += ["–", "–", "–"]
        else:
            rl, _ = ratio(to_target(pyro, loose), ev[loose], budget, budget)
            rt, vt = ratio(to_target(pyro, tight), ev[tight], budget, budget)
            total = [harness.summary([x["seconds"] for x in rec["runs"]]).median for rec in (pyro, r)]
            rs, _ = ratio(to_target(pyro, tight, "seconds"), sec, *total)
            goal = "yes" if vt >= 10 else "no" if not rt.startswith(">") and rt != "–" else "unknown"
            row.update(ratio_loose=rl, ratio_tight=rt, ratio_time=rs, goal=goal)
            cells += [f"{rl} / {rt}", rs, goal]
        rows.append(cells)
        out.append(row)
    return harness.markdown_table(headers, rows), out


def plot(results: dict[str, tuple[Problem, list[dict]]], path: str | os.PathLike) -> Path:
    """Error against gradient evaluations (best so far), one panel per (model, family)."""
    plt = harness._pyplot()
    panels = [(p, s) for p, recs in results.values() for s in dict.fromkeys(r["structure"] for r in recs)]
    fig, axes = plt.subplots(len(results), 3, figsize=(13, 3.6 * len(results)), squeeze=False)
    for ax, (problem, structure) in zip(axes.flat, panels):
        recs = [r for r in results[problem.name][1] if r["structure"] == structure]
        curves = {f"{GROUP_LABELS[r['group']]}: {r['label']}": [(x["trace_evals"], x["trace_error"])
                                                               for x in r["runs"]] for r in recs}
        harness.plot_convergence(curves, None, ax=ax, target=problem.targets[1],
                                 title=f"{problem.name}, {structure}",
                                 ylabel="KL(q ‖ q*)" if problem.metric == "kl" else "max rel. error")
        ax.set_xlabel("gradient evaluations")
        ax.legend(fontsize=6)
    fig.tight_layout()
    p = harness._path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def write_results(path: str | os.PathLike, results: dict[str, tuple[Problem, list[dict]]], rows: list[dict],
                  **header) -> Path:
    """The JSON file: the header, the table rows, and per problem its references and every run (without
    the final moments)."""
    problems = {}
    for name, (p, recs) in results.items():
        records = [dict(r, runs=[{k: v for k, v in run.items() if k not in ("final_mean", "final_cov")}
                                 for run in r["runs"]]) for r in recs]
        problems[name] = {"dim": p.dim, "rank": p.rank, "metric": p.metric, "targets": p.targets,
                          "reference_kl_to_full": ({f: gaussian_kl(*ref, *p.references["full"])
                                                    for f, ref in p.references.items()}
                                                   if "full" in p.references else None),
                          "reference_notes": p.notes, "records": records}
    header = {**header, "hvp_cost": HVP_COST}
    return harness.write_json(Path(path), {**header, "rows": rows, "problems": problems})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, a 2,000-evaluation budget")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3, quick 1)")
    parser.add_argument("--budget", type=int, nargs="+", default=None,
                        help="gradient evaluations per run, one number or one per problem "
                             "(default 20,000, quick 2,000)")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--families", nargs="+", default=list(STRUCTURES), choices=list(STRUCTURES),
                        help="variational families to run (default all)")
    parser.add_argument("--adam-decay", action="store_true",
                        help="add Adam decayed 100x over the budget to the grid (doubles Pyro's runs)")
    parser.add_argument("--out", default="benchmarks/results/vi_vs_pyro.json")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    seeds = harness.seeds(args.seeds or (1 if args.quick else 3))
    budgets = args.budget or [2000 if args.quick else 20000]
    if len(budgets) not in (1, len(args.problems)):
        parser.error(f"--budget takes one number or one per problem ({len(args.problems)})")
    budgets = dict(zip(args.problems, budgets * len(args.problems) if len(budgets) == 1 else budgets))
    env = harness.environment(("numpy", "scipy", "torch", "pyro"))
    results, tables, rows = {}, [], []
    t0 = time.perf_counter()
    for name in args.problems:
        problem, budget = PROBLEMS[name](), budgets[name]
        records = run_benchmark(problem, seeds, budget, structures=tuple(args.families),
                                adam_decay=args.adam_decay, jobs=args.jobs)
        results[name] = (problem, records)
        text, trows = table(problem, records, budget)
        tables.append(text)
        rows += trows
        elapsed = time.perf_counter() - t0
        if args.out:  # after each problem: a long run keeps what it finished
            write_results(args.out, results, rows, env=env, budgets=budgets, seeds=seeds,
                          elapsed_s=elapsed)
    if args.out:
        print(f"wrote {args.out}")
        if not args.no_plot:
            print(f"wrote {plot(results, Path(args.out).with_suffix('.png'))}")
    spent = ", ".join(f"{n} {b:,}" for n, b in budgets.items())
    print(f"\n{len(seeds)} seed(s), budget ({spent}) gradient evaluations per run (1 HVP = {HVP_COST}), "
          f"{elapsed / 60:.1f} min; {env['cpu']}, torch {env['torch']}, pyro {env['pyro']}\n")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
