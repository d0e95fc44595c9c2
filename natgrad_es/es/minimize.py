"""``minimize``: run a ``NaturalES`` on a function, scipy.optimize style.

    >>> import numpy as np
    >>> from natgrad_es.es import minimize
    >>> res = minimize(lambda x: float((x ** 2).sum()), np.ones(3), 0.5, seed=1, ftarget=1e-10)
    >>> res.success, bool(res.fun <= 1e-10)
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import OptimizeResult

from .. import backend as B
from . import termination
from .strategy import NaturalES

__all__ = ["minimize"]


def minimize(fun: Callable, x0, sigma0: float = 1.0, structure="full", *,
             budget: int | None = None, ftarget: float | None = None, vectorized: bool = False,
             seed=None, bounds=None, callback: Callable | None = None, verbose: int = 0,
             **options) -> OptimizeResult:
    """Minimise ``fun`` with a natural-gradient evolution strategy (``NaturalES``).

    Args:
        fun: the objective. ``fun(x)`` for x of shape (d,) returns a real number; with
            ``vectorized=True``, ``fun(X)`` for X of shape (n, d) returns n values.  x and X are
            numpy arrays, or torch tensors when x0 is one.
        x0: the initial mean, shape (d,).
        sigma0: the initial step size (about a quarter of the range where the optimum may lie).
        structure: the covariance structure: a name for ``structures.make`` or a Factor.
        budget: the largest number of evaluations (``maxfevals``); None: no limit (the other
            criteria stop the run).
        ftarget: stop once f ≤ ftarget.
        vectorized: see ``fun``.
        seed: the random seed.
        bounds: not implemented yet (NotImplementedError unless None).
        callback: ``callback(es)`` after every generation, with the ``NaturalES``; returning True
            stops the run (criterion ``"callback"``).
        verbose: 0 silent; k > 0 prints a progress line (``es.disp()``) every k generations and at
            the end.
        **options: ``NaturalES`` options (``popsize``, ``method``, ``rank``, ``tolfun``, …).

    Returns:
        ``scipy.optimize.OptimizeResult`` with x (the best solution), fun, nfev, nit, success
        (True when ftarget, tolfun or tolx fired), status (0 success, 1 otherwise), message,
        stop (the fired criteria, ``{name: threshold}``), xmean, sigma and ``es`` (the strategy,
        for ``es.state_dict()`` or further ``ask``/``tell``).
    """
    if budget is not None:
        options["maxfevals"] = budget
    if ftarget is not None:
        options["ftarget"] = ftarget
    if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
        raise ValueError(f"verbose must be an integer >= 0, got {verbose!r}")
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    es = NaturalES(x0, sigma0, structure, seed=seed, bounds=bounds, **options)
    while not es.stop():
        X = es.ask()
        es.tell(X, _evaluate(fun, X, vectorized))
        if callback is not None and callback(es):
            es._add_stop("callback", True)
        if verbose and es.iterations % verbose == 0:
            es.disp()
    if verbose and es.iterations % verbose:
        es.disp()
    res = es.result
    stop = res.stop
    ok = termination.success(stop)
    return OptimizeResult(
        x=res.xbest if res.xbest is not None else res.xmean, fun=res.fbest,
        nfev=res.evaluations, nit=res.iterations, success=ok, status=0 if ok else 1,
        message=termination.message(stop), stop=stop, xmean=res.xmean, sigma=res.sigma, es=es)


def _evaluate(fun: Callable, X, vectorized: bool) -> Any:
    """The f values of the rows of X, as given by ``fun`` (validated by ``tell``)."""
    if vectorized:
        return fun(X)
    values = [fun(x) for x in X]
    if values and B.is_torch(values[0]):
        return [float(v) for v in values]
    return np.asarray(values, dtype=np.float64) if all(
        isinstance(v, (int, float, np.floating, np.integer)) for v in values) else values
