"""Test problems for natgrad-es: batched objective functions for numpy and torch.

* ``problems.functions``: classic, subspace ill-conditioned and Kronecker-structured test functions;
  ``get(name, dim, **params)`` returns a ``Problem`` with its optimum, ``names()`` lists them.
* ``problems.bbob``: COCO's bbob suite driven by any ask/tell optimizer (needs ``cocoex``; imported
  on first use, not here).
* ``problems.regression``, ``problems.datasets``: models and data for variational inference.
"""

from .functions import (
    Problem,
    RotatedEllipsoid,
    cigar,
    describe,
    different_powers,
    discus,
    ellipsoid,
    get,
    names,
    rastrigin,
    rosenbrock,
    rotation,
    sphere,
)

__all__ = ["Problem", "get", "names", "describe", "sphere", "ellipsoid", "cigar", "discus",
           "different_powers", "rosenbrock", "rastrigin", "RotatedEllipsoid", "rotation"]
