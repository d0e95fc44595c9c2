"""Test problems for natgrad-es: batched objective functions for numpy and torch.

See ``problems.functions``; ``get(name, dim)`` returns a ``Problem`` with its optimum.
"""

from .functions import Problem, RotatedEllipsoid, ellipsoid, get, names, rosenbrock, rotation, sphere

__all__ = ["Problem", "get", "names", "sphere", "ellipsoid", "rosenbrock", "RotatedEllipsoid",
           "rotation"]
