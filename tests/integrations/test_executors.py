"""Parallel evaluation through executors: thread and process pools and a real Dask LocalCluster
(loopback, 2 worker processes), with failing evaluations and a worker killed mid-generation.

Every parallel run is compared with the serial run of the same seed: the values come back in row
order, so the two runs are identical.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

from natgrad_es.es import NaturalES, NaturalESWarning, minimize
from natgrad_es.integrations.executors import EvaluationError, evaluate

D, X0, SIGMA0 = 4, np.full(4, 0.5), 0.5
RUN = dict(seed=3, budget=240, ftarget=1e-12)


# -- objectives (module level: they travel to worker processes) -----------------------------------


def sphere(x):
    return float(np.sum(np.asarray(x) ** 2))


def sphere_rows(X):
    return np.sum(np.asarray(X) ** 2, axis=-1)


def slow_sphere(x, delay=0.0):
    time.sleep(delay)
    return sphere(x)


def failing_where_x0_large(x):
    """Raises for rows with x₀ > 0.6 (a deterministic failure: retries cannot help)."""
    if x[0] > 0.6:
        raise ZeroDivisionError(f"x0 = {x[0]:.3f}")
    return sphere(x)


def inf_where_x0_large(x):
    """The serial twin of ``failing_where_x0_large``: what nan_policy='worst' ranks them as."""
    return np.inf if x[0] > 0.6 else sphere(x)


def _first_time(flag: str) -> bool:
    """True exactly once per flag file, across processes (O_EXCL creation is atomic)."""
    try:
        fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def raise_once(x, flag, armed=None):
    if (armed is None or os.path.exists(armed)) and _first_time(flag):
        raise RuntimeError("a transient failure")
    return sphere(x)


def die_once(x, flag, armed, delay=0.02):
    """Kill the worker process running it, once, after the file ``armed`` appeared."""
    time.sleep(delay)
    if os.path.exists(armed) and _first_time(flag):
        os._exit(13)
    return sphere(x)


def _serial(fun=sphere, **kw):
    return minimize(fun, X0, SIGMA0, **{**RUN, **kw})


def _same_run(a, b):
    assert a.nfev == b.nfev and a.nit == b.nit
    np.testing.assert_array_equal(a.x, b.x)
    assert a.fun == b.fun and a.stop == b.stop
    np.testing.assert_array_equal(a.xmean, b.xmean)


# -- evaluate ----------------------------------------------------------------------------------------


def test_values_come_back_in_row_order():
    X = np.random.default_rng(0).normal(size=(12, D))
    delays = np.linspace(0.03, 0.0, 12)  # the first rows finish last
    with ThreadPoolExecutor(6) as pool:
        out = evaluate(lambda x: slow_sphere(x, delays[int(np.argmin(np.abs(X - x).sum(1)))]),
                       X, pool)
        np.testing.assert_array_equal(out.values, sphere_rows(X))
        assert out.attempts == 12 and out.failures == {} and out.retried == 0
        chunks = evaluate(sphere_rows, X, pool, vectorized=True)  # 6 workers: chunks of 2 rows
        assert chunks.attempts == 6
        np.testing.assert_array_equal(chunks.values, sphere_rows(X))
        odd = evaluate(sphere_rows, X, pool, vectorized=True, chunksize=5)
        assert odd.attempts == 3
        np.testing.assert_array_equal(odd.values, sphere_rows(X))
        rows = evaluate(sphere, X, pool, chunksize=4)  # 3 tasks of 4 rows, f called per row
        assert rows.attempts == 3
        np.testing.assert_array_equal(rows.values, sphere_rows(X))


def test_failed_tasks_are_retried_and_nothing_evaluated_twice(tmp_path):
    calls = []
    lock = threading.Lock()

    def counted(x):
        with lock:
            calls.append(1)
        return raise_once(x, str(tmp_path / "once"))

    X = np.random.default_rng(1).normal(size=(8, D))
    with ThreadPoolExecutor(4) as pool:
        out = evaluate(counted, X, pool, retries=1)
    np.testing.assert_array_equal(out.values, sphere_rows(X))
    assert len(calls) == 9 and out.attempts == 9 and out.retried == 1
    with ThreadPoolExecutor(4) as pool:  # no retry: the row fails
        out = evaluate(functools.partial(raise_once, flag=str(tmp_path / "again")), X, pool,
                       retries=0)
    assert len(out.failures) == 1 and np.isnan(out.values).sum() == 1


def test_bad_arguments():
    with pytest.raises(TypeError, match="executor"):
        minimize(sphere, X0, SIGMA0, executor=object())
    with pytest.raises(ValueError, match="retries"):
        minimize(sphere, X0, SIGMA0, executor=ThreadPoolExecutor(1), retries=-1)
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="chunksize"):
        evaluate(sphere, np.zeros((2, D)), pool, chunksize=0)


# -- thread pool -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"vectorized": True}, {"vectorized": True, "chunksize": 3},
                                {"restarts": "ipop", "bounds": (-1, 1), "budget": 600}])
def test_thread_pool_gives_the_serial_run(kw):
    fun = sphere_rows if kw.get("vectorized") else sphere
    serial = _serial(fun, **{k: v for k, v in kw.items() if k != "chunksize"})
    with ThreadPoolExecutor(4) as pool:
        parallel = _serial(fun, executor=pool, **kw)
    _same_run(serial, parallel)


def test_transient_failures_are_retried(tmp_path):
    with ThreadPoolExecutor(4) as pool, warnings.catch_warnings():
        warnings.simplefilter("error")  # a retried failure warns nothing
        res = _serial(functools.partial(raise_once, flag=str(tmp_path / "f")), executor=pool)
    assert (tmp_path / "f").exists()
    _same_run(_serial(), res)


def test_lasting_failures_rank_worst_with_one_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serial = _serial(inf_where_x0_large)
    with ThreadPoolExecutor(4) as pool, pytest.warns(NaturalESWarning) as record:
        res = _serial(failing_where_x0_large, executor=pool, retries=2)
    assert len(record) == 1 and "ZeroDivisionError" in str(record[0].message)
    assert "retries" in str(record[0].message)
    _same_run(serial, res)


def test_nan_policy_raise_keeps_what_was_evaluated():
    with ThreadPoolExecutor(4) as pool, pytest.raises(EvaluationError) as info:
        minimize(failing_where_x0_large, X0, SIGMA0, seed=3, executor=pool, nan_policy="raise",
                 budget=400)
    err = info.value
    bad = np.flatnonzero(err.X[:, 0] > 0.6)
    assert sorted(err.failures) == bad.tolist() and len(bad)
    assert np.all(np.isnan(err.values[bad]))
    good = np.setdiff1d(np.arange(len(err.X)), bad)
    np.testing.assert_array_equal(err.values[good], sphere_rows(err.X[good]))
    assert isinstance(err.es, NaturalES) and isinstance(err.failures[bad[0]], ZeroDivisionError)
    assert isinstance(err.__cause__, ZeroDivisionError)


def test_a_generation_that_fails_entirely_raises():
    def broken(x):
        raise KeyError("no simulator")

    with ThreadPoolExecutor(2) as pool, pytest.raises(EvaluationError, match="every row"):
        minimize(broken, X0, SIGMA0, executor=pool)


# -- process pool ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def process_pool():
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def test_process_pool_gives_the_serial_run(process_pool):
    _same_run(_serial(), _serial(executor=process_pool))
    _same_run(_serial(sphere_rows, vectorized=True),
              _serial(sphere_rows, vectorized=True, executor=process_pool))


def test_a_dead_process_pool_raises_with_the_values_so_far(tmp_path):
    armed = tmp_path / "armed"
    armed.touch()
    fun = functools.partial(die_once, flag=str(tmp_path / "died"), armed=str(armed), delay=0.0)
    X = np.random.default_rng(2).normal(size=(6, D))
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        with pytest.raises(EvaluationError, match="broke") as info:
            evaluate(fun, X, pool, retries=3)
    assert info.value.failures and (tmp_path / "died").exists()
    done = ~np.isnan(info.value.values)
    np.testing.assert_array_equal(info.value.values[done], sphere_rows(X[done]))


# -- Dask ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    import cloudpickle

    # functions of this test module travel by value: the workers need not import it
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       memory_limit="512MiB", silence_logs=50)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_dask_gives_the_serial_run(dask_client):
    _same_run(_serial(), _serial(executor=dask_client))
    _same_run(_serial(sphere_rows, vectorized=True),
              _serial(sphere_rows, vectorized=True, executor=dask_client.get_executor()))


def test_dask_worker_killed_mid_generation(dask_client, tmp_path):
    """The objective kills its worker process once, from generation 4 on; the scheduler runs the
    lost task again on the other worker (the nanny restarts the dead one) and the run equals the
    serial run."""
    armed, died = tmp_path / "armed", tmp_path / "died"
    fun = functools.partial(die_once, flag=str(died), armed=str(armed))

    def arm(es):
        if es.iterations == 3:
            armed.touch()

    before = set(dask_client.scheduler_info()["workers"])
    res = minimize(fun, X0, SIGMA0, executor=dask_client, callback=arm, retries=2, **RUN)
    assert died.exists()
    _same_run(_serial(), res)
    deadline = time.monotonic() + 20  # the nanny brings a fresh worker back
    while len(dask_client.scheduler_info()["workers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    after = set(dask_client.scheduler_info()["workers"])
    assert after != before


def test_dask_exception_is_retried(dask_client, tmp_path):
    fun = functools.partial(raise_once, flag=str(tmp_path / "once"))
    res = minimize(fun, X0, SIGMA0, executor=dask_client, **RUN)
    assert (tmp_path / "once").exists()
    _same_run(_serial(), res)
