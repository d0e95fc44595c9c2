"""``minimize``: run a ``NaturalES`` (or IPOP restarts of it) on a function, scipy.optimize style.

    >>> import numpy as np
    >>> from natgrad_es.es import minimize
    >>> res = minimize(lambda x: float((x ** 2).sum()), np.ones(3), 0.5, seed=1, ftarget=1e-10)
    >>> res.success, bool(res.fun <= 1e-10)
    (True, True)

Box bounds, restarts and parallel evaluation combine freely::

    minimize(f, x0, 0.5, bounds=(0, 1), restarts="ipop", budget=10**5,
             executor=ThreadPoolExecutor(8))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import OptimizeResult

from .. import backend as B
from . import termination
from .restarts import IPOP, RESTARTS
from .restarts import success as ipop_success
from .strategy import NaturalES, NaturalESWarning

__all__ = ["minimize"]


def minimize(fun: Callable, x0, sigma0: float = 1.0, structure="full", *,
             budget: int | None = None, ftarget: float | None = None, vectorized: bool = False,
             restarts: str | None = None, max_restarts: int = 9, seed=None, bounds=None,
             callback: Callable | None = None, executor=None, retries: int = 1,
             chunksize: int | None = None, verbose: int = 0, **options) -> OptimizeResult:
    """Minimise ``fun`` with a natural-gradient evolution strategy (``NaturalES``).

    Args:
        fun: the objective. ``fun(x)`` for x of shape (d,) returns a real number; with
            ``vectorized=True``, ``fun(X)`` for X of shape (n, d) returns n values.  x and X are
            numpy arrays, or torch tensors when x0 is one.
        x0: the initial mean, shape (d,).
        sigma0: the initial step size (about a quarter of the range where the optimum may lie).
        structure: the covariance structure: a name for ``structures.make`` or a Factor.
        budget: the largest number of evaluations (``maxfevals``), shared by all runs with
            restarts; None: no limit (the other criteria stop the run).  A run may overshoot it by
            less than one generation.
        ftarget: stop once f ≤ ftarget.
        vectorized: see ``fun``.
        restarts: None (one run) or ``"ipop"``: restart from x0, σ0 with twice the population
            after every stop that is not ftarget, the budget or the callback, and return the
            best over all runs (``restarts.IPOP``).
        max_restarts: the largest number of restarts with ``restarts="ipop"`` (default 9).
        seed: the random seed (with restarts: the first run's; the others derive from it).
        bounds: box constraints ``(lower, upper)`` (scalars or d values; None or ±inf for an
            unbounded side) or a ``scipy.optimize.Bounds``: ``fun`` is only called inside the box
            (see ``NaturalES`` and the ``bounds`` module: reflection plus a penalty).
        callback: ``callback(es)`` after every generation, with the ``NaturalES`` (the ``IPOP``
            with restarts); returning True stops the run (criterion ``"callback"``).
        executor: evaluate each generation in parallel: a ``concurrent.futures.Executor``
            (``ThreadPoolExecutor``, ``ProcessPoolExecutor`` — then ``fun`` must pickle), a Dask
            ``distributed.Client`` (or ``client.get_executor()``), or any object with
            ``submit(fn, *args)`` returning a ``concurrent.futures.Future`` — e.g. for Ray,
            ``submit = lambda fn, *a: ray.remote(fn).remote(*a).future()``
            (``natgrad_es.integrations.executors`` has the details).  One task per row (per chunk
            of rows with ``vectorized=True``); the values come back in row order, so the run is
            the serial run with the same seed.  The executor is not shut down.
        retries: with an executor, how many times a failed evaluation (an exception, a lost
            worker) is submitted again (default 1).  A row that still fails follows the option
            ``nan_policy``: ``"worst"`` (default) ranks it last with one warning; ``"raise"``
            raises ``executors.EvaluationError``, which carries X, the values obtained, the
            failures and the strategy (``err.es``) — nothing evaluated is lost.  A generation in
            which every row fails raises in any case.  Without an executor, an exception in
            ``fun`` propagates at once.
        chunksize: with an executor, rows per task (default: 1; with ``vectorized=True`` the
            generation split evenly over the executor's workers).
        verbose: 0 silent; k > 0 prints a progress line (``es.disp()``) every k generations and at
            the end.
        **options: ``NaturalES`` options (``popsize``, ``method``, ``rank``, ``tolfun``,
            ``nan_policy``, …).

    Returns:
        ``scipy.optimize.OptimizeResult`` with x (the best solution), fun, nfev, nit, success,
        status (0 success, 1 otherwise), message, stop (the fired criteria, ``{name:
        threshold}``; with restarts those of the last run, plus ``maxrestarts`` when the limit
        ended the restarts), xmean, sigma, restarts (the number of restarts made, 0 for one run),
        runs (one dict per run: popsize, nfev, nit, fun, stop) and ``es`` (the ``NaturalES``, or
        the ``IPOP`` with restarts, for ``state_dict`` or further ``ask``/``tell``).
        success: one run — True when ftarget, tolfun or tolx fired; restarts — f ≤ ftarget when
        ftarget is given, else the last run's criteria as for one run.
    """
    if budget is not None:
        options["maxfevals"] = budget
    if ftarget is not None:
        options["ftarget"] = ftarget
    if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
        raise ValueError(f"verbose must be an integer >= 0, got {verbose!r}")
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    if restarts not in RESTARTS:
        raise ValueError(f"restarts must be one of {RESTARTS}, got {restarts!r}")
    if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    if executor is not None:
        from ..integrations import executors as _executors

        executor = _executors.as_executor(executor)

    es: NaturalES | IPOP
    if restarts == "ipop":
        es = IPOP(x0, sigma0, structure, seed=seed, bounds=bounds, max_restarts=max_restarts,
                  **options)
    else:
        es = NaturalES(x0, sigma0, structure, seed=seed, bounds=bounds, **options)
    nan_policy = options.get("nan_policy", "worst")
    warned = False
    while not es.stop():
        X = es.ask()
        if executor is None:
            es.tell(X, _evaluate(fun, X, vectorized))
        else:
            values, failures = _evaluate_parallel(fun, X, executor, es, retries=retries,
                                                  vectorized=vectorized, chunksize=chunksize,
                                                  nan_policy=nan_policy)
            if failures:
                if not warned:
                    first = failures[min(failures)]
                    warnings.warn(
                        f"{len(failures)} evaluation(s) failed after {retries} "
                        f"retr{'y' if retries == 1 else 'ies'} (first: {type(first).__name__}: "
                        f"{first}); ranked worst (nan_policy='worst'). Further failures and "
                        f"non-finite values are not reported.", NaturalESWarning, stacklevel=2)
                    warned = True
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="fvals has non-finite",
                                            category=NaturalESWarning)
                    es.tell(X, values)
            else:
                es.tell(X, values)
        if callback is not None and callback(es):
            es._add_stop("callback", True)
        if verbose and es.iterations % verbose == 0:
            es.disp()
    if verbose and es.iterations % verbose:
        es.disp()
    return _result(es, options.get("ftarget"))


def _result(es: NaturalES | IPOP, ftarget) -> OptimizeResult:
    res = es.result
    stop = res.stop
    if isinstance(es, IPOP):
        ok = ipop_success(stop, res.fbest, ftarget)
        runs = es.runs
        restarts = es.restarts
    else:
        ok = termination.success(stop)
        runs = [es]
        restarts = 0
    message = termination.message(stop)
    if isinstance(es, IPOP):
        message += f" (after {restarts} restart{'s' if restarts != 1 else ''})"
    return OptimizeResult(
        x=res.xbest if res.xbest is not None else res.xmean, fun=res.fbest,
        nfev=res.evaluations, nit=res.iterations, success=ok, status=0 if ok else 1,
        message=message, stop=stop, xmean=res.xmean, sigma=res.sigma, restarts=restarts,
        runs=[_run_dict(r) for r in runs], es=es)


def _run_dict(run) -> dict[str, Any]:
    if isinstance(run, NaturalES):
        r = run.result
        return {"popsize": run.popsize, "nfev": r.evaluations, "nit": r.iterations,
                "fun": r.fbest, "stop": r.stop}
    return {"popsize": run.popsize, "nfev": run.evaluations, "nit": run.iterations,
            "fun": run.fbest, "stop": run.stop}


def _evaluate(fun: Callable, X, vectorized: bool) -> Any:
    """The f values of the rows of X, as given by ``fun`` (validated by ``tell``)."""
    if vectorized:
        return fun(X)
    values = [fun(x) for x in X]
    if values and B.is_torch(values[0]):
        return [float(v) for v in values]
    return np.asarray(values, dtype=np.float64) if all(
        isinstance(v, (int, float, np.floating, np.integer)) for v in values) else values


def _evaluate_parallel(fun, X, executor, es, *, retries, vectorized, chunksize, nan_policy):
    """(values, failures) of one generation through the executor (``integrations.executors``)."""
    from ..integrations import executors as _executors

    try:
        out = _executors.evaluate(fun, X, executor, retries=retries, vectorized=vectorized,
                                  chunksize=chunksize, raise_on_failure=nan_policy == "raise")
    except _executors.EvaluationError as err:
        err.es = es
        raise
    return out.values, out.failures

