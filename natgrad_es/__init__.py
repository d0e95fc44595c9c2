"""natgrad-es: structured Gaussians moved by natural-gradient steps, for black-box optimization
and variational inference.

The core is ``natgrad_es.structures``: one ``Factor`` interface for the square-root factor A of a
covariance σ² A Aᵀ (dense, diagonal, block-diagonal, Kronecker, block-triangular low-rank), each
moved by multiplicative Lie-group steps A ← A · h(t M).  ``natgrad_es.backend`` gives one code path
for numpy and torch.
"""

from . import backend, structures

__version__ = "0.1.0.dev0"

__all__ = ["backend", "structures", "__version__"]
