"""Bayesian regression models as batched log-joints: linear, logistic, one-hidden-layer network.

Each model holds a data set (X (N, p), y (N,)) and a Gaussian prior θ ~ N(0, Σ₀) and gives

    log p(θ, y | X) = Σ_{i ∈ data} log p(yᵢ | xᵢ, θ) + log N(θ; 0, Σ₀)

*batched over parameter rows*: ``log_joint(theta)`` takes θ of shape (n, dim) — numpy or torch,
the result has the same type — and returns n values, so that a variational method evaluates a whole
Monte-Carlo batch in one call and torch autograd supplies gradients and Hessian-vector products.

Minibatches: ``log_joint(theta, batch=idx)`` uses only the data rows ``idx`` and scales the data
term by N/|batch| (an unbiased estimate of the full data term; the prior is not scaled), and
``minibatch_log_joint(batch_size, seed)`` returns a callable that draws a fresh batch on every call.

All normalising constants are included, so for the linear model the ELBO of the exact posterior
equals ``log_evidence()``.

Notation as in ``shared/design/algorithms.md`` §4: ℓ(θ) = −log p(θ, data) is what a VI method
minimises in expectation; the methods here return log p (the sign users write).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from natgrad_es import backend as B
from natgrad_es.vi.fitting import positive

__all__ = [
    "GaussianPrior",
    "BayesianLinearRegression",
    "BayesianLogisticRegression",
    "BayesianNeuralNetwork",
    "gaussian_kl",
]

_LOG_2PI = math.log(2.0 * math.pi)


# -- helpers -------------------------------------------------------------------------------------


def _as_data(X, y, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name}: X must be a non-empty 2-D array (N, p), got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"{name}: y must have shape (N,) = ({X.shape[0]},) to match X, got {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError(f"{name}: X and y must be finite (no NaN or inf)")
    return X, y


def gaussian_kl(mean1, cov1, mean2, cov2) -> float:
    """KL(N(mean1, cov1) ‖ N(mean2, cov2)) for dense numpy covariances (Cholesky based).

        KL = ½ [tr(Σ₂⁻¹Σ₁) + (m₂ − m₁)ᵀΣ₂⁻¹(m₂ − m₁) − d + log|Σ₂| − log|Σ₁|]
    """
    m1, m2 = np.asarray(mean1, float), np.asarray(mean2, float)
    S1, S2 = np.asarray(cov1, float), np.asarray(cov2, float)
    d = m1.shape[0]
    if m2.shape != (d,) or S1.shape != (d, d) or S2.shape != (d, d):
        raise ValueError(f"shapes do not match: means {m1.shape}, {m2.shape}; covariances {S1.shape}, "
                         f"{S2.shape}")
    L1 = _cholesky(S1, "cov1")
    L2 = _cholesky(S2, "cov2")
    W = np.linalg.solve(L2, L1)  # L₂⁻¹L₁: tr(Σ₂⁻¹Σ₁) = ‖W‖²_F
    v = np.linalg.solve(L2, m2 - m1)
    logdet = 2.0 * (np.log(np.diag(L2)).sum() - np.log(np.diag(L1)).sum())
    return float(0.5 * ((W * W).sum() + v @ v - d + logdet))


def _cholesky(S: np.ndarray, name: str) -> np.ndarray:
    if not np.allclose(S, S.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(S).max())):
        raise ValueError(f"{name} must be symmetric")
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        raise ValueError(f"{name} must be symmetric positive definite (its Cholesky factorisation "
                         f"failed; smallest eigenvalue {np.linalg.eigvalsh(S).min():.3g})") from None


class GaussianPrior:
    """θ ~ N(0, Σ₀) with Σ₀ = v·I (scalar v), diag(v) (vector) or a dense SPD matrix.

    Args:
        prior_var: a positive number, a vector of ``dim`` positive variances, or a ``dim``×``dim``
            symmetric positive-definite covariance.  Anything else raises ``ValueError``.
        dim: the number of parameters.
    """

    def __init__(self, prior_var, dim: int):
        self.dim = dim
        v = np.asarray(prior_var, dtype=np.float64)
        if v.ndim == 0:
            v = np.full(dim, positive(prior_var, "prior_var"))
        if v.ndim == 1:
            if v.shape != (dim,):
                raise ValueError(f"prior_var as a vector must have shape ({dim},), got {v.shape}")
            if not (np.all(np.isfinite(v)) and np.all(v > 0)):
                raise ValueError("prior_var must have finite positive entries (a diagonal covariance)")
            self.covariance = np.diag(v)
            self.precision = np.diag(1.0 / v)
            self.logdet = float(np.log(v).sum())
            self._diag = 1.0 / v
        elif v.ndim == 2:
            if v.shape != (dim, dim):
                raise ValueError(f"prior_var as a matrix must have shape ({dim}, {dim}), got {v.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError("prior_var must be finite")
            L = _cholesky(v, "prior_var")
            self.covariance = v.copy()
            Linv = np.linalg.inv(L)
            self.precision = Linv.T @ Linv
            self.logdet = float(2.0 * np.log(np.diag(L)).sum())
            self._diag = None
        else:
            raise ValueError(f"prior_var must be a scalar, a vector or a matrix, got ndim={v.ndim}")
        self._cache: dict[Any, Any] = {}

    def _precision_like(self, theta):
        xp = B.namespace(theta)
        key = (xp.name, str(theta.dtype), str(xp.device_of(theta)))
        if key not in self._cache:
            P = self._diag if self._diag is not None else self.precision
            self._cache[key] = xp.asarray(P, dtype=theta.dtype, device=xp.device_of(theta))
        return self._cache[key]

    def log_prob(self, theta):
        """log N(θ; 0, Σ₀) for rows θ (n, dim) → (n,)."""
        P = self._precision_like(theta)
        quad = ((theta * theta) * P).sum(-1) if self._diag is not None else ((theta @ P) * theta).sum(-1)
        return -0.5 * quad - 0.5 * (self.dim * _LOG_2PI + self.logdet)

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return -theta @ self.precision

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        L = np.linalg.cholesky(self.covariance)
        return rng.standard_normal((n, self.dim)) @ L.T


class _Model:
    """Shared plumbing: data, prior, parameter validation, data arrays per backend, minibatches."""

    dim: int
    name = "model"

    def __init__(self, X, y, prior_var, dim: int):
        self.X, self.y = _as_data(X, y, name=type(self).__name__)
        self.n_data = self.X.shape[0]
        self.dim = dim
        self.prior = GaussianPrior(prior_var, dim)
        self._data_cache: dict[Any, Any] = {}

    # -- inputs ----------------------------------------------------------------------------------
    def _theta(self, theta):
        if not B.is_torch(theta):
            theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim == 1:
            raise ValueError(f"theta must be a batch of parameter rows, shape (n, {self.dim}); got a "
                             f"1-D array of shape {tuple(theta.shape)} (use theta[None, :])")
        if theta.ndim != 2 or theta.shape[1] != self.dim:
            raise ValueError(f"theta must have shape (n, {self.dim}) for this "
                             f"{type(self).__name__} with dim={self.dim}, got {tuple(theta.shape)}")
        return theta

    def _data(self, theta, batch):
        """(X, y, scale) in theta's backend/dtype/device; scale = N/|batch|."""
        xp = B.namespace(theta)
        if batch is None:
            idx, scale = None, 1.0
        else:
            idx = np.asarray(batch)
            if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
                raise ValueError("batch must be a non-empty 1-D array of data indices")
            if idx.min() < -self.n_data or idx.max() >= self.n_data:
                raise ValueError(f"batch indices must lie in [0, {self.n_data})")
            scale = self.n_data / idx.size
        key = (xp.name, str(theta.dtype), str(xp.device_of(theta)))
        if key not in self._data_cache:
            dev = xp.device_of(theta)
            self._data_cache[key] = (xp.asarray(self.X, dtype=theta.dtype, device=dev),
                                     xp.asarray(self.y, dtype=theta.dtype, device=dev))
        X, y = self._data_cache[key]
        if idx is not None:
            if xp.name == "torch":
                import torch

                t_idx = torch.as_tensor(idx, device=X.device)
                X, y = X[t_idx], y[t_idx]
            else:
                X, y = X[idx], y[idx]
        return X, y, scale

    # -- the log-joint ---------------------------------------------------------------------------
    def log_likelihood(self, theta, batch=None):
        """Σ log p(yᵢ | xᵢ, θ) over the data (or N/|batch| × the sum over ``batch``), rows θ → (n,)."""
        theta = self._theta(theta)
        X, y, scale = self._data(theta, batch)
        return scale * self._loglik(theta, X, y)

    def log_joint(self, theta, batch=None):
        """log p(θ, y) = log-likelihood + log prior for rows θ (n, dim) → (n,) (numpy or torch)."""
        theta = self._theta(theta)
        X, y, scale = self._data(theta, batch)
        return scale * self._loglik(theta, X, y) + self.prior.log_prob(theta)

    __call__ = log_joint

    def minibatch_log_joint(self, batch_size: int, seed: int | None = None) -> Callable:
        """A log-joint that draws a fresh batch of ``batch_size`` data rows (without replacement) on
        every call; one call evaluates all parameter rows on the same batch."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not (
                1 <= batch_size <= self.n_data):
            raise ValueError(f"batch_size must be an integer in [1, {self.n_data}], got {batch_size!r}")
        rng = np.random.default_rng(seed)

        def log_joint(theta):
            return self.log_joint(theta, batch=rng.choice(self.n_data, size=batch_size, replace=False))

        return log_joint

    def _loglik(self, theta, X, y):
        raise NotImplementedError


# -- linear regression -----------------------------------------------------------------------------


class BayesianLinearRegression(_Model):
    """y = X θ + ε, ε ~ N(0, noise_var·I), θ ~ N(0, Σ₀): conjugate, with a closed-form posterior.

    Posterior: precision P = Σ₀⁻¹ + XᵀX / σ², mean μ = P⁻¹ Xᵀy / σ² (σ² = ``noise_var``).
    The log-joint is quadratic in θ, so its Hessian is −P everywhere: one Newton step (the additive
    VI rule with the delta estimator and β = 1) lands on the exact posterior.

    Args:
        X: (N, p) design matrix; y: (N,) targets.
        prior_var: Σ₀ as a scalar, a vector of variances or an SPD matrix.
        noise_var: the known noise variance σ² > 0.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> model = BayesianLinearRegression(rng.standard_normal((20, 3)), rng.standard_normal(20))
        >>> mean, cov = model.posterior()
        >>> model.log_joint(np.zeros((2, 3))).shape
        (2,)
    """

    def __init__(self, X, y, prior_var=1.0, noise_var=1.0):
        X_, _ = _as_data(X, y, name="BayesianLinearRegression")
        super().__init__(X, y, prior_var, X_.shape[1])
        self.noise_var = positive(noise_var, "noise_var")

    def _loglik(self, theta, X, y):
        r = y - theta @ X.mT  # (n, batch)
        m = X.shape[0]
        return -0.5 * (r * r).sum(-1) / self.noise_var - 0.5 * m * (_LOG_2PI + math.log(self.noise_var))

    def grad_log_joint(self, theta) -> np.ndarray:
        """∇_θ log p(θ, y) for rows θ (numpy) → (n, dim)."""
        theta = np.asarray(self._theta(theta))
        r = self.y - theta @ self.X.T
        return r @ self.X / self.noise_var + self.prior.grad(theta)

    def hess_log_joint(self, theta) -> np.ndarray:
        """∇²_θ log p(θ, y) = −P for each row (numpy) → (n, dim, dim)."""
        theta = np.asarray(self._theta(theta))
        return np.broadcast_to(-self.posterior_precision(), (theta.shape[0], self.dim, self.dim)).copy()

    def posterior_precision(self) -> np.ndarray:
        return self.prior.precision + self.X.T @ self.X / self.noise_var

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, covariance) of the exact Gaussian posterior."""
        P = self.posterior_precision()
        L = np.linalg.cholesky(P)
        mean = np.linalg.solve(L.T, np.linalg.solve(L, self.X.T @ self.y / self.noise_var))
        Linv = np.linalg.inv(L)
        return mean, Linv.T @ Linv

    def log_evidence(self) -> float:
        """log p(y | X) = log N(y; 0, X Σ₀ Xᵀ + σ² I)."""
        C = self.X @ self.prior.covariance @ self.X.T + self.noise_var * np.eye(self.n_data)
        L = np.linalg.cholesky(C)
        v = np.linalg.solve(L, self.y)
        return float(-0.5 * (v @ v) - np.log(np.diag(L)).sum() - 0.5 * self.n_data * _LOG_2PI)

    def kl(self, mean, cov) -> float:
        """KL(N(mean, cov) ‖ exact posterior)."""
        mu, S = self.posterior()
        return gaussian_kl(mean, cov, mu, S)


# -- logistic regression ---------------------------------------------------------------------------


def _softplus(xp: B.Backend, t):
    if xp.name == "torch":
        import torch

        return torch.nn.functional.softplus(t)
    return np.logaddexp(0.0, t)


def _sigmoid(t):
    return 0.5 * (1.0 + np.tanh(0.5 * t))


class BayesianLogisticRegression(_Model):
    """P(yᵢ = 1 | xᵢ, θ) = s(xᵢᵀθ) (s the logistic sigmoid), θ ~ N(0, Σ₀); labels y ∈ {0, 1}.

    log p(y | θ) = Σᵢ [yᵢ tᵢ − log(1 + e^{tᵢ})], tᵢ = xᵢᵀθ (computed with a stable softplus).
    Gradient Xᵀ(y − s(t)) − Σ₀⁻¹θ, Hessian −Xᵀ diag(s(t)(1 − s(t))) X − Σ₀⁻¹ (numpy helpers for users
    without torch).  Add a column of ones to X for a bias.
    """

    def __init__(self, X, y, prior_var=1.0):
        X_, y_ = _as_data(X, y, name="BayesianLogisticRegression")
        if not np.all((y_ == 0) | (y_ == 1)):
            raise ValueError("BayesianLogisticRegression: y must contain only the labels 0 and 1")
        super().__init__(X, y, prior_var, X_.shape[1])

    def _loglik(self, theta, X, y):
        t = theta @ X.mT  # (n, batch)
        return (y * t - _softplus(B.namespace(theta), t)).sum(-1)

    def grad_log_joint(self, theta) -> np.ndarray:
        theta = np.asarray(self._theta(theta))
        s = _sigmoid(theta @ self.X.T)
        return (self.y - s) @ self.X + self.prior.grad(theta)

    def hess_log_joint(self, theta) -> np.ndarray:
        theta = np.asarray(self._theta(theta))
        s = _sigmoid(theta @ self.X.T)  # (n, N)
        w = s * (1.0 - s)
        return -np.einsum("nk,ki,kj->nij", w, self.X, self.X) - self.prior.precision

    def predict_proba(self, theta, X_new) -> np.ndarray:
        """P(y = 1 | x, θ) for parameter rows θ (n, dim) and inputs X_new (m, dim) → (n, m)."""
        theta = np.asarray(self._theta(theta))
        return _sigmoid(theta @ np.asarray(X_new, dtype=np.float64).T)


# -- one-hidden-layer Bayesian neural network --------------------------------------------------------


class BayesianNeuralNetwork(_Model):
    """Regression with one hidden layer: f(x) = w₂ᵀ tanh(W₁ᵀx + b₁) + b₂, y ~ N(f(x), noise_var).

    θ = (vec W₁ (p×H, row-major), b₁ (H), w₂ (H), b₂) has dim = p H + 2 H + 1; prior N(0, Σ₀).
    The posterior is multi-modal (hidden units can be permuted and their signs flipped), so a Gaussian
    fits one mode: use it to check that VI runs and predicts, not against an exact answer.
    """

    def __init__(self, X, y, hidden: int = 10, prior_var=1.0, noise_var=0.1):
        X_, _ = _as_data(X, y, name="BayesianNeuralNetwork")
        if isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)) or hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        self.n_features, self.hidden = X_.shape[1], int(hidden)
        super().__init__(X, y, prior_var, self.n_features * self.hidden + 2 * self.hidden + 1)
        self.noise_var = positive(noise_var, "noise_var")

    def unpack(self, theta):
        """(W₁ (n, p, H), b₁ (n, H), w₂ (n, H), b₂ (n,)) from parameter rows θ (n, dim)."""
        p, H = self.n_features, self.hidden
        n = theta.shape[0]
        W1 = theta[:, :p * H].reshape(n, p, H)
        b1 = theta[:, p * H:p * H + H]
        w2 = theta[:, p * H + H:p * H + 2 * H]
        b2 = theta[:, -1]
        return W1, b1, w2, b2

    def _forward(self, theta, X):
        xp = B.namespace(theta)
        W1, b1, w2, b2 = self.unpack(theta)
        hidden = xp.tanh(xp.einsum("mp,nph->nmh", X, W1) + b1[:, None, :])  # (n, m, H)
        return xp.einsum("nmh,nh->nm", hidden, w2) + b2[:, None]

    def _loglik(self, theta, X, y):
        r = y - self._forward(theta, X)
        m = X.shape[0]
        return -0.5 * (r * r).sum(-1) / self.noise_var - 0.5 * m * (_LOG_2PI + math.log(self.noise_var))

    def predict(self, theta, X_new):
        """Network outputs f(x) for parameter rows θ (n, dim) and inputs X_new (m, p) → (n, m)."""
        theta = self._theta(theta)
        xp = B.namespace(theta)
        X_new = xp.asarray(X_new, dtype=theta.dtype, device=xp.device_of(theta))
        return self._forward(theta, X_new)
