"""``WishartVI``: variational inference for a precision matrix Λ with a Wishart family (algorithms.md §5).

The family: q(Λ) = W(Λ | n, V), Λ p×p, with the scale V = S⁻¹ kept through a factor S = B Bᵀ:

    log q(Λ) = (n − p − 1)/2 · log|Λ| − ½ tr(SΛ) + (n/2) log|S| − (np/2) log 2 − log Γ_p(n/2),
    E[Λ] = n V,   E[log|Λ|] = ψ_p(n/2) + p log 2 − log|S|,   Λ = B⁻ᵀ T Tᵀ B⁻¹ (Bartlett: T lower
    triangular, Tᵢᵢ² ~ χ²(n − i + 1), Tᵢⱼ ~ N(0, 1) below the diagonal).

Local coordinates at (n_t, B_t) (algorithms-sources.md §5, derived and checked against a
finite-difference Fisher): n = n_t + δ, B = B_t h(M), M symmetric (the antisymmetric part rotates B and
leaves q unchanged).  With Z = B_tᵀ Λ B_t ~ W(n, I): score_M = nI − Z, score_δ = ½ log|Z| − (p/2) log 2
− ½ ψ_p(n/2), and the Fisher at 0 is

    2n ‖M₀‖²_F  on the traceless part M₀ of M,
    [[a, −p], [−p, 2np]]  on (δ, τ) with M = M₀ + τ I and a = ¼ ψ′_p(n/2) = ¼ Σᵢ ψ′((n − i + 1)/2).

The loss is L = E_q[ℓ(Λ)] − H[q] with ℓ = −log p(Λ, data).  Its gradient in (δ, M) at 0 is the path
derivative of ℓ + log q̄ (q̄: q with its parameters held fixed) through the Bartlett sample (torch
autograd; the χ² draws carry implicit gradients in n), averaged over ``mc_samples`` draws and
symmetrised in M.  This equals ∇L because the score has mean zero, and its noise vanishes where
ℓ + log q is constant — at the answer of a conjugate model ("sticking the landing").  (In closed form,
∂H/∂M = −(p + 1) I and ∂H/∂δ = p/2 − (n − p − 1)/4 · ψ′_p(n/2); the tests check the estimator against
these.)  The natural-gradient step is

    M̃₀ = G₀ / (2n),   (δ̃, τ̃) = [[a, −p], [−p, 2np]]⁻¹ (g_δ, tr G_M),
    n ← n − β δ̃,   B ← B · h(−β (M̃₀ + τ̃ I)),

capped at ‖β M̃‖_F ≤ ``max_step``; a step that would leave n ≤ p − 1 (or make B singular) is refused
and β halved with a ``VIWarning``.  On a conjugate model (Gaussian data with unknown precision and a
Wishart prior) the fixed point is the exact Wishart posterior, which the tests check.

Needs torch (for the reparameterised gradients); ``log_joint`` takes a batch Λ (s, p, p) of precision
matrices and returns s values of log p(Λ, data), written with torch operations.

References: Lin, Nielsen, Khan, Schmidt, "Tractable structured natural-gradient descent using local
parameterizations", ICML 2021 (Wishart in local coordinates); Bartlett decomposition (Smith & Hocking,
1972); implicit reparameterisation of the Gamma/χ² (Figurnov et al., NeurIPS 2018).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.special

from .fitting import run_steps, step_size
from .oracle import VIWarning

__all__ = ["Wishart", "WishartVI", "multi_digamma", "multi_trigamma"]

_STATE_VERSION = 1


def multi_digamma(a: float, p: int) -> float:
    """ψ_p(a) = Σ_{i=1..p} ψ(a + (1 − i)/2)."""
    return float(scipy.special.digamma(a + (1 - np.arange(1, p + 1)) / 2).sum())


def multi_trigamma(a: float, p: int) -> float:
    """ψ′_p(a) = Σ_{i=1..p} ψ′(a + (1 − i)/2)."""
    return float(scipy.special.polygamma(1, a + (1 - np.arange(1, p + 1)) / 2).sum())


def _spd(V, name: str) -> np.ndarray:
    V = np.asarray(V, dtype=np.float64)
    if V.ndim != 2 or V.shape[0] != V.shape[1] or V.shape[0] < 1:
        raise ValueError(f"{name} must be a square matrix, got shape {V.shape}")
    if not np.all(np.isfinite(V)):
        raise ValueError(f"{name} has non-finite entries")
    if not np.allclose(V, V.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(V).max())):
        raise ValueError(f"{name} must be symmetric")
    try:
        np.linalg.cholesky(V)
    except np.linalg.LinAlgError:
        raise ValueError(f"{name} must be symmetric positive definite (smallest eigenvalue "
                         f"{np.linalg.eigvalsh(V).min():.3g})") from None
    return 0.5 * (V + V.T)


@dataclass(frozen=True, eq=False)
class Wishart:
    """W(Λ | df, V) with V = (B Bᵀ)⁻¹, for p×p precision matrices Λ (numpy, float64).

    Attributes:
        df: n > p − 1 (degrees of freedom).
        B: an invertible p×p factor of the inverse scale, S = V⁻¹ = B Bᵀ.
    """

    df: float
    B: np.ndarray

    def __post_init__(self):
        B = np.asarray(self.B, dtype=np.float64)
        if B.ndim != 2 or B.shape[0] != B.shape[1] or B.shape[0] < 1:
            raise ValueError(f"B must be a square matrix, got shape {B.shape}")
        if not np.all(np.isfinite(B)):
            raise ValueError("B has non-finite entries")
        sign, _ = np.linalg.slogdet(B)
        if sign == 0:
            raise ValueError("B is singular")
        df = float(self.df)
        if not (math.isfinite(df) and df > B.shape[0] - 1):
            raise ValueError(f"df must exceed dim − 1 = {B.shape[0] - 1}, got {self.df!r}")
        object.__setattr__(self, "B", B)
        object.__setattr__(self, "df", df)

    @classmethod
    def from_scale(cls, df: float, scale) -> Wishart:
        """W(df, V) from the scale matrix V (symmetric positive definite)."""
        V = _spd(scale, "scale")
        return cls(df, np.linalg.cholesky(np.linalg.inv(V)))

    @property
    def dim(self) -> int:
        return self.B.shape[0]

    def inverse_scale(self) -> np.ndarray:
        """S = V⁻¹ = B Bᵀ."""
        return self.B @ self.B.T

    def scale(self) -> np.ndarray:
        """V = S⁻¹ = B⁻ᵀ B⁻¹."""
        Binv = np.linalg.inv(self.B)
        return Binv.T @ Binv

    def mean(self) -> np.ndarray:
        """E[Λ] = n V."""
        return self.df * self.scale()

    def logdet_inverse_scale(self) -> float:
        """log|S| = 2 log|det B|."""
        return 2.0 * float(np.linalg.slogdet(self.B)[1])

    def mean_logdet(self) -> float:
        """E[log|Λ|] = ψ_p(n/2) + p log 2 − log|S|."""
        p = self.dim
        return multi_digamma(self.df / 2, p) + p * math.log(2.0) - self.logdet_inverse_scale()

    def log_prob(self, Lam) -> np.ndarray:
        """log W(Λ | n, V) for a batch Λ (s, p, p) (or one p×p matrix)."""
        Lam = np.asarray(Lam, dtype=np.float64)
        single = Lam.ndim == 2
        Lam = Lam[None] if single else Lam
        p, n = self.dim, self.df
        logdet = np.linalg.slogdet(Lam)[1]
        tr = np.einsum("ij,sji->s", self.inverse_scale(), Lam)
        out = ((n - p - 1) / 2 * logdet - 0.5 * tr + n / 2 * self.logdet_inverse_scale()
               - n * p / 2 * math.log(2.0) - scipy.special.multigammaln(n / 2, p))
        return out[0] if single else out

    def entropy(self) -> float:
        """H = −(n − p − 1)/2 · E[log|Λ|] + np/2 − (n/2) log|S| + (np/2) log 2 + log Γ_p(n/2)."""
        p, n = self.dim, self.df
        return float(-(n - p - 1) / 2 * self.mean_logdet() + n * p / 2 - n / 2 * self.logdet_inverse_scale()
                     + n * p / 2 * math.log(2.0) + scipy.special.multigammaln(n / 2, p))

    def kl(self, other: Wishart) -> float:
        """KL(self ‖ other) = (n₁ − n₂)/2 ψ_p(n₁/2) + (n₂/2)(log|S₁| − log|S₂|) + (n₁/2)(tr(S₂V₁) − p)
        + log Γ_p(n₂/2) − log Γ_p(n₁/2)."""
        if other.dim != self.dim:
            raise ValueError(f"dimensions differ: {self.dim} vs {other.dim}")
        p, n1, n2 = self.dim, self.df, other.df
        W = scipy.linalg.solve(self.B, other.B)  # B₁⁻¹B₂: tr(S₂V₁) = ‖B₁⁻¹B₂‖²_F
        return float((n1 - n2) / 2 * multi_digamma(n1 / 2, p)
                     + n2 / 2 * (self.logdet_inverse_scale() - other.logdet_inverse_scale())
                     + n1 / 2 * ((W * W).sum() - p)
                     + scipy.special.multigammaln(n2 / 2, p) - scipy.special.multigammaln(n1 / 2, p))

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """n draws Λ = B⁻ᵀ T Tᵀ B⁻¹ (Bartlett), shape (n, p, p)."""
        rng = np.random.default_rng(rng)
        p = self.dim
        T = np.tril(rng.standard_normal((n, p, p)), -1)
        idx = np.arange(p)
        T[:, idx, idx] = np.sqrt(rng.chisquare(self.df - idx, size=(n, p)))
        R = np.linalg.inv(self.B).T  # B⁻ᵀ
        RT = R @ T
        return RT @ RT.transpose(0, 2, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"df": self.df, "B": self.B.copy()}


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is optional
        raise ImportError("WishartVI needs torch for its reparameterised gradients "
                          "(pip install torch)") from exc
    return torch


class WishartVI:
    """Natural-gradient VI for a precision matrix with q(Λ) = W(n, V) (see the module docstring).

    Args:
        log_joint: Λ (s, p, p) → s values of log p(Λ, data), written with torch operations.
        dim: p.
        mc_samples: Bartlett draws per step for the E_q[ℓ] gradient.
        lr: β in (0, 1], or a function of the iteration returning it.
        seed: seed of the sampling (each step's draws are a function of (seed, iteration)).
        init_df: n at the start (default p + 2).
        init_mean: E_q[Λ] at the start (default I): V = init_mean / n.
        max_step: cap on ‖β M̃‖_F (why: the multiplicative step overshoots far from the answer).

    Attributes:
        posterior: the current ``Wishart``.
        history: per step: iteration, beta, loss (MC estimate of E_q[ℓ]), elbo (−loss + H), step.
    """

    def __init__(self, log_joint: Callable, dim: int, *, mc_samples: int = 64,
                 lr: float | Callable[[int], float] = 0.5, seed: int | None = None,
                 init_df: float | None = None, init_mean=None, max_step: float = 1.0,
                 max_refusals: int = 30):
        self._torch = _torch()
        if not callable(log_joint):
            raise TypeError("log_joint must be callable: Λ (s, p, p) → s values")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.fn, self.dim = log_joint, int(dim)
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, (int, np.integer)) or mc_samples < 1:
            raise ValueError(f"mc_samples must be a positive integer, got {mc_samples!r}")
        self.mc_samples = int(mc_samples)
        if not callable(lr):
            lr = float(lr)
            if not (0 < lr <= 1):
                raise ValueError(f"lr must lie in (0, 1], got {lr!r}")
        self.lr = lr
        self.max_step = float(max_step)
        if not (math.isfinite(self.max_step) and self.max_step > 0):
            raise ValueError(f"max_step must be a finite positive number, got {max_step!r}")
        self.max_refusals = int(max_refusals)
        p = self.dim
        df = float(p + 2 if init_df is None else init_df)
        if not (math.isfinite(df) and df > p - 1):
            raise ValueError(f"init_df must exceed dim − 1 = {p - 1}, got {init_df!r}")
        mean = np.eye(p) if init_mean is None else _spd(init_mean, "init_mean")
        if mean.shape != (p, p):
            raise ValueError(f"init_mean must have shape ({p}, {p}), got {mean.shape}")
        self.posterior = Wishart.from_scale(df, mean / df)
        self._entropy_seed = np.random.SeedSequence(seed).entropy
        self.iteration = 0
        self.history: list[dict[str, Any]] = []
        self._check_log_joint()

    # -- helpers -----------------------------------------------------------------------------------
    def _check_log_joint(self) -> None:
        torch = self._torch
        Lam = torch.as_tensor(self.posterior.mean(), dtype=torch.float64)[None].repeat(2, 1, 1)
        out = self.fn(Lam)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"log_joint must be written with torch operations and return a tensor "
                            f"(got {type(out).__name__}): WishartVI differentiates it by autograd")
        if tuple(out.shape) != (2,):
            raise ValueError(f"log_joint must return one value per matrix: expected shape (2,) for Λ of "
                             f"shape (2, {self.dim}, {self.dim}), got {tuple(out.shape)}")

    def beta(self, iteration: int | None = None) -> float:
        return step_size(self.lr, self.iteration if iteration is None else iteration)

    def _seed_for(self, iteration: int, stream: int) -> int:
        ss = np.random.SeedSequence([*np.atleast_1d(self._entropy_seed).tolist(), stream, iteration])
        return int(ss.generate_state(1, np.uint64)[0] >> 1)

    def _loss_gradient(self, q: Wishart, n_samples: int, seed: int):
        """(E_q[ℓ] estimate, ∂L/∂δ, sym ∂L/∂M) at the local origin, by reparameterisation.

        The path derivative of ℓ + log q̄ (q̄ = q with its parameters held fixed) is averaged over the
        Bartlett draws: E[∇(ℓ + log q)] − E[score] with E[score] = 0, i.e. ∇L including the entropy
        ("sticking the landing", Roeder et al. 2017): on a conjugate model ℓ + log q is constant at
        the answer, so the estimate's noise vanishes there.
        """
        torch = self._torch
        p = self.dim
        S_t = torch.as_tensor(q.inverse_scale(), dtype=torch.float64)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            delta = torch.zeros((), dtype=torch.float64, requires_grad=True)
            M = torch.zeros((p, p), dtype=torch.float64, requires_grad=True)
            dfs = q.df + delta - torch.arange(p, dtype=torch.float64)  # n − i + 1, i = 1..p
            with torch.enable_grad():
                chi2 = torch.distributions.Chi2(dfs).rsample((n_samples,))  # (s, p)
                T = torch.tril(torch.randn((n_samples, p, p), dtype=torch.float64), -1)
                T = T + torch.diag_embed(chi2.sqrt())
                C = torch.as_tensor(q.B, dtype=torch.float64) @ (torch.eye(p, dtype=torch.float64) + M)
                R = torch.linalg.solve(C.mT, T)
                Lam = R @ R.mT  # Λ = C⁻ᵀ T Tᵀ C⁻¹
                out = self.fn(Lam)
                if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n_samples,):
                    raise ValueError(f"log_joint must return a tensor of shape ({n_samples},), got "
                                     f"{tuple(getattr(out, 'shape', ())) or type(out).__name__}")
                if not bool(torch.isfinite(out).all()):
                    raise ValueError("log_joint returned non-finite values (NaN or inf) at Wishart draws")
                # log q̄(Λ) up to a constant: (n_t − p − 1)/2 log|Λ| − ½ tr(S_t Λ), parameters fixed
                log_q = 0.5 * (q.df - p - 1) * 2.0 * torch.log(torch.diagonal(
                    torch.linalg.cholesky(Lam), dim1=-2, dim2=-1)).sum(-1) - 0.5 * (S_t * Lam).sum((-1, -2))
                integrand = (log_q - out).mean()
                g_delta, g_M = torch.autograd.grad(integrand, (delta, M), allow_unused=True)
        g_delta = 0.0 if g_delta is None else float(g_delta)
        g_M = np.zeros((p, p)) if g_M is None else g_M.numpy()
        return float(-out.detach().mean()), g_delta, 0.5 * (g_M + g_M.T)

    def natural_gradient(self, q: Wishart, g_delta: float, g_M: np.ndarray) -> tuple[float, np.ndarray]:
        """F⁻¹ (g_δ, g_M) in the local coordinates of q: (δ̃, M̃) with M̃ = G₀/(2n) + τ̃ I."""
        p, n = self.dim, q.df
        tau_grad = float(np.trace(g_M))
        G0 = g_M - tau_grad / p * np.eye(p)
        a = 0.25 * multi_trigamma(n / 2, p)
        F = np.array([[a, -p], [-p, 2 * n * p]])
        d_nat, tau_nat = np.linalg.solve(F, np.array([g_delta, tau_grad]))
        return float(d_nat), G0 / (2 * n) + tau_nat * np.eye(p)

    def loss_gradient(self, q: Wishart | None = None, n_samples: int | None = None, seed: int = 0):
        """Gradient of L = E_q[ℓ] − H[q] in the local coordinates of q: (E_q[ℓ] estimate, g_δ, g_M)."""
        q = self.posterior if q is None else q
        return self._loss_gradient(q, n_samples or self.mc_samples, seed)

    # -- steps ---------------------------------------------------------------------------------------
    def step(self) -> dict[str, Any]:
        """One natural-gradient step; returns (and appends to ``history``) its record."""
        q = self.posterior
        beta = self.beta()
        loss, g_delta, g_M = self.loss_gradient(q, self.mc_samples, self._seed_for(self.iteration, 0))
        d_nat, M_nat = self.natural_gradient(q, g_delta, g_M)
        norm = float(np.linalg.norm(M_nat))
        capped = beta * norm > self.max_step
        if capped:
            beta = self.max_step / norm
        for refused in range(self.max_refusals + 1):
            df = q.df - beta * d_nat
            B = q.B @ scipy.linalg.expm(-beta * M_nat)
            if df > self.dim - 1 and np.all(np.isfinite(B)) and np.linalg.slogdet(B)[0] != 0:
                break
            if refused == self.max_refusals:
                raise FloatingPointError(f"Wishart step refused {self.max_refusals} times")
            warnings.warn(f"WishartVI step {self.iteration} refused (df would fall to {df:.3g} ≤ dim − 1 "
                          f"or the factor become singular); step size reduced from β = {beta:.3g} to "
                          f"{beta / 2:.3g}", VIWarning, stacklevel=2)
            beta *= 0.5
        self.posterior = Wishart(df, B)
        record = {"iteration": self.iteration, "beta": beta, "loss": loss, "elbo": -loss + q.entropy(),
                  "step": math.hypot(beta * d_nat, beta * norm), "refused": refused, "capped": capped}
        self.history.append(record)
        self.iteration += 1
        return record

    def fit(self, n_iter: int | None = None, *, tol: float | None = None, max_iter: int = 10_000,
            callback: Callable[[WishartVI], Any] | None = None) -> WishartVI:
        """``n_iter`` steps, or until the step size falls below ``tol`` (at most ``max_iter``)."""
        run_steps(self, n_iter, tol, max_iter, callback)
        return self

    def elbo(self, n_samples: int = 1000) -> float:
        """Monte-Carlo ELBO = E_q[log p(Λ, data) − log q(Λ)] ≤ log p(data) (its own stream: does not
        change the run); exact when q is the exact posterior, where the integrand is constant."""
        torch = self._torch
        Lam = self.posterior.sample(int(n_samples), self._seed_for(self.iteration, 1))
        with torch.no_grad():
            out = self.fn(torch.as_tensor(Lam, dtype=torch.float64))
        return float((out.numpy() - self.posterior.log_prob(Lam)).mean())

    def state_dict(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "dim": self.dim, "iteration": self.iteration,
                "posterior": self.posterior.state_dict(), "seed_entropy": self._entropy_seed,
                "history": [dict(r) for r in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"not a WishartVI state_dict of version {_STATE_VERSION}")
        if state["dim"] != self.dim:
            raise ValueError(f"state_dict has dim={state['dim']}, this WishartVI has dim={self.dim}")
        self.posterior = Wishart(state["posterior"]["df"], state["posterior"]["B"])
        self._entropy_seed = state["seed_entropy"]
        self.iteration = int(state["iteration"])
        self.history = [dict(r) for r in state["history"]]
