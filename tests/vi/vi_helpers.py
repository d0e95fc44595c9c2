"""Targets shared by the VI tests (imported as ``vi_helpers``; pytest puts this folder on sys.path)."""

import numpy as np

from problems.regression import BayesianLinearRegression


def make_linear_regression(d=5, n=50, seed=0, noise_var=0.25, prior_var=1.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    theta = rng.standard_normal(d)
    y = X @ theta + np.sqrt(noise_var) * rng.standard_normal(n)
    return BayesianLinearRegression(X, y, prior_var=prior_var, noise_var=noise_var)


class GaussianTarget:
    """log p(x) = −½ (x − μ)ᵀ P (x − μ) in numpy or torch, with numpy derivatives."""

    def __init__(self, mu, P):
        self.mu, self.P = np.asarray(mu, float), np.asarray(P, float)
        self.dim = self.mu.shape[0]

    def __call__(self, X):
        from natgrad_es.backend import namespace

        xp = namespace(X)
        mu = xp.asarray(self.mu, dtype=X.dtype)
        P = xp.asarray(self.P, dtype=X.dtype)
        R = X - mu
        return -0.5 * ((R @ P) * R).sum(-1)

    def grad(self, X):
        return -(np.asarray(X) - self.mu) @ self.P

    def hess(self, X):
        return np.broadcast_to(-self.P, (len(X), self.dim, self.dim)).copy()


def correlated_target(d=6, seed=3, scale=20.0):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    P = Q @ np.diag(np.geomspace(1.0, scale, d)) @ Q.T
    return GaussianTarget(rng.standard_normal(d), P)
