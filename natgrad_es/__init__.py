"""natgrad-es: structured Gaussians moved by natural-gradient steps, for black-box optimization
and variational inference.

* ``natgrad_es.structures`` — one ``Factor`` interface for the square-root factor A of a covariance
  σ² A Aᵀ (dense, diagonal, block-diagonal, Kronecker, block-triangular low-rank, spectral), each
  moved by multiplicative Lie-group steps A ← A · h(t M).
* ``natgrad_es.es`` — evolution strategies on any structure: ``NaturalES`` (ask / tell), ``XNES``,
  ``SNES``, ``IPOP`` restarts, ``minimize`` (box bounds, restarts, parallel evaluation through any
  ``concurrent.futures`` executor or a Dask client), ``GraphedGeneration`` (a whole generation
  replayed as one CUDA graph on a GPU).
* ``natgrad_es.vi`` — variational inference: ``GaussianVI`` (structured Gaussian, Bayesian learning
  rule, Newton-like and stochastic estimators) and ``WishartVI``.
* ``natgrad_es.distribution.Gaussian`` — sampling, densities, entropy and KL on any structure.
* ``natgrad_es.backend`` — one code path for numpy and torch.
"""

from . import backend, distribution, es, structures, vi
from .distribution import Gaussian
from .es import IPOP, SNES, XNES, NaturalES, minimize

__version__ = "0.1.0.dev0"

__all__ = ["NaturalES", "XNES", "SNES", "IPOP", "minimize", "Gaussian", "backend", "distribution", "es",
           "structures", "vi", "__version__"]
