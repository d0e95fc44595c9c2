"""Gaussian N(m, σ² A Aᵀ) with a structured factor A: sampling, densities, entropy, KL.

The free functions of the design notes' layout, written once on top of the ``Factor`` interface, so
that the ES and VI layers share them:

    x = m + σ A z,  z ~ N(0, I)
    log q(x) = −½‖z‖² − d log σ − log|det A| − (d/2) log 2π,   z = A⁻¹(x − m)/σ
    H[q] = (d/2)(1 + log 2π) + d log σ + log|det A|
    KL(q₁‖q₂) = ½[tr(Σ₂⁻¹Σ₁) + ‖A₂⁻¹(m₂ − m₁)‖²/σ₂² − d + 2 log(σ₂^d|det A₂|) − 2 log(σ₁^d|det A₁|)],
    with tr(Σ₂⁻¹Σ₁) = (σ₁/σ₂)² ‖A₂⁻¹A₁‖²_F.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .backend import RandomStream
from .structures import Factor, from_state_dict

__all__ = ["Gaussian"]

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True, eq=False)
class Gaussian:
    """N(mean, sigma² A Aᵀ) with A = ``factor`` (any structure); arrays of the factor's backend."""

    mean: Any
    factor: Factor
    sigma: float = 1.0

    def __post_init__(self):
        xp = self.factor.xp
        mean = xp.asarray(self.mean, dtype=self.factor.dtype, device=self.factor.device)
        if tuple(mean.shape) != (self.factor.dim,):
            raise ValueError(f"mean must have shape ({self.factor.dim},) to match the factor, "
                             f"got {tuple(mean.shape)}")
        if not xp.all_finite(mean):
            raise ValueError("mean has non-finite entries (NaN or inf)")
        sigma = float(self.sigma)
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite positive number, got {self.sigma!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "sigma", sigma)

    @property
    def dim(self) -> int:
        return self.factor.dim

    def sample(self, n: int, rng: RandomStream, *, return_z: bool = False):
        """n samples as rows X = m + σ Z Aᵀ (and Z when ``return_z``)."""
        Z = rng.normal((n, self.dim), dtype=self.factor.dtype)
        X = self.mean + self.sigma * self.factor.apply(Z)
        return (X, Z) if return_z else X

    def whiten(self, X):
        """z = A⁻¹(x − m)/σ for rows of X."""
        X = self.factor.xp.asarray(X, dtype=self.factor.dtype, device=self.factor.device)
        return self.factor.solve((X - self.mean) / self.sigma)

    def log_prob(self, X):
        """log q(x) for rows of X (shape (…,))."""
        Z = self.whiten(X)
        norm = self.dim * (math.log(self.sigma) + 0.5 * _LOG_2PI) + self.factor.logdet()
        return -0.5 * (Z * Z).sum(-1) - norm

    def entropy(self):
        return 0.5 * self.dim * (1.0 + _LOG_2PI) + self.dim * math.log(self.sigma) + self.factor.logdet()

    def covariance(self):
        """σ² A Aᵀ as a dense d×d array (small d)."""
        A = self.factor.to_dense()
        return self.sigma**2 * (A @ A.mT)

    def kl(self, other: Gaussian):
        """KL(self ‖ other); costs d applications of each factor (O(d²) memory)."""
        if other.dim != self.dim:
            raise ValueError(f"dimensions differ: {self.dim} vs {other.dim}")
        xp = self.factor.xp
        eye = xp.eye(self.dim, dtype=self.factor.dtype, device=self.factor.device)
        cross = other.factor.solve(self.factor.apply(eye))  # rows A₂⁻¹A₁eᵢ: the columns of A₂⁻¹A₁
        trace = (self.sigma / other.sigma) ** 2 * (cross * cross).sum()
        dm = other.factor.solve((other.mean - self.mean) / other.sigma)
        logdets = 2 * self.dim * (math.log(other.sigma) - math.log(self.sigma)) + 2 * (
            other.factor.logdet() - self.factor.logdet())
        return 0.5 * (trace + (dm * dm).sum() - self.dim + logdets)

    def state_dict(self) -> dict:
        return {"mean": self.factor.xp.copy(self.mean), "sigma": self.sigma,
                "factor": self.factor.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict) -> Gaussian:
        return cls(state["mean"], from_state_dict(state["factor"]), state["sigma"])
