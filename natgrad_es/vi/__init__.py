"""Variational inference with structured Gaussians (and Wishart precisions) by natural-gradient steps.

* ``GaussianVI``: q = N(m, A Aᵀ) with a structured factor A, moved by the Bayesian learning rule —
  additive (Newton / VON, full and diagonal) or multiplicative in local coordinates (inverse-free,
  every structure) — with Hessian, Stein, zeroth-order or delta estimators (algorithms.md §4).
* ``WishartVI``: a Wishart q over a precision matrix, moved in the local coordinates of its scale
  factor (algorithms.md §5).
"""

from .estimators import ESTIMATORS
from .gaussian import UPDATES, GaussianVI, default_lr, default_mc_samples
from .oracle import LogJoint, VIWarning
from .wishart import Wishart, WishartVI

__all__ = ["GaussianVI", "WishartVI", "Wishart", "LogJoint", "VIWarning", "ESTIMATORS", "UPDATES",
           "default_lr", "default_mc_samples"]
