"""Evolution strategies on structured Gaussians N(m, σ² A Aᵀ), updated by natural-gradient steps.

* ``NaturalES(x0, sigma0, structure="full", …)`` — ask / tell / stop; the default rule is the
  path-based rule of algorithms.md §2b (CSA, rank-one path, active weights in local coordinates),
  with constants that follow the structure; ``method="xnes"`` gives the textbook rule.
* ``XNES`` (dense, Glasmachers et al. 2010) and ``SNES`` (diagonal, Schaul et al. 2011): the
  published algorithms with their published defaults.
* ``minimize(fun, x0, sigma0, …)`` — a scipy-style driver returning an ``OptimizeResult``, with
  box ``bounds``, IPOP ``restarts`` and parallel evaluation through an ``executor``.
* ``IPOP`` — restarts with a doubling population, with the same ask / tell interface.
* ``GraphedGeneration(es, f)`` — on a GPU, a whole generation of a torch ``NaturalES`` replayed
  as one CUDA graph (the launches of small generations cost more than their work).

Modules: ``strategy`` (the loop), ``rules`` (the two update rules), ``shaping`` (rank utilities),
``defaults`` (every constant, with its source), ``options``, ``termination``, ``bounds`` (box
constraints), ``restarts`` (IPOP), ``minimize``.
"""

from . import bounds, defaults, graphs, restarts, shaping, termination
from .graphs import GraphedGeneration
from .minimize import minimize
from .options import Options
from .restarts import IPOP
from .strategy import SNES, XNES, NaturalES, NaturalESWarning, Result

__all__ = ["NaturalES", "XNES", "SNES", "IPOP", "GraphedGeneration", "minimize", "Options",
           "Result", "NaturalESWarning", "bounds", "defaults", "graphs", "restarts", "shaping",
           "termination"]
