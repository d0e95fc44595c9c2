"""IPOP restarts: a multi-modal function one run cannot solve, the shared budget, the limits."""

from __future__ import annotations

import numpy as np
import pytest

import problems
from natgrad_es.es import IPOP, minimize

#: 10 d + Σ (xᵢ² − 10 cos 2πxᵢ): minimum 0 at 0, a local minimum near every integer point
rastrigin = problems.get("rastrigin", 5)
X0, SIGMA0 = np.full(5, 3.0), 2.0


def test_ipop_solves_rastrigin_where_one_run_fails():
    single = minimize(rastrigin, X0, SIGMA0, vectorized=True, seed=4, ftarget=1e-8, budget=20000)
    assert single.fun > 1, single.fun  # a local minimum
    res = minimize(rastrigin, X0, SIGMA0, vectorized=True, seed=4, ftarget=1e-8, budget=20000,
                   restarts="ipop")
    assert res.fun < 1e-8 and res.success and res.status == 0, (res.fun, res.message)
    assert res.restarts >= 1 and len(res.runs) == res.restarts + 1
    assert "ftarget" in res.stop and "restart" in res.message
    n0 = res.runs[0]["popsize"]
    assert [r["popsize"] for r in res.runs] == [n0 * 2 ** k for k in range(len(res.runs))]
    assert all(r["stop"] and "ftarget" not in r["stop"] for r in res.runs[:-1])
    assert "ftarget" in res.runs[-1]["stop"]
    assert res.nfev == sum(r["nfev"] for r in res.runs) <= 20000
    assert res.nit == sum(r["nit"] for r in res.runs)
    # run 0 is the single run with the same seed
    assert res.runs[0]["nfev"] == single.nfev and res.runs[0]["fun"] == single.fun
    assert rastrigin(res.x) == res.fun


def test_ipop_is_reproducible():
    kw = dict(vectorized=True, seed=11, budget=6000, restarts="ipop")
    a = minimize(rastrigin, X0, SIGMA0, **kw)
    b = minimize(rastrigin, X0, SIGMA0, **kw)
    assert a.fun == b.fun and a.nfev == b.nfev and np.array_equal(a.x, b.x)
    assert [r["stop"] for r in a.runs] == [r["stop"] for r in b.runs]


def test_budget_is_shared_across_restarts():
    res = minimize(rastrigin, X0, SIGMA0, vectorized=True, seed=1, budget=3000, restarts="ipop")
    assert not res.success and res.status == 1
    assert "maxfevals" in res.stop and res.restarts >= 1
    assert res.nfev <= 3000 + res.runs[-1]["popsize"] - 1
    assert res.fun == min(r["fun"] for r in res.runs)  # the best over all runs


def test_max_restarts_ends_the_restarts():
    res = minimize(rastrigin, X0, SIGMA0, vectorized=True, seed=1, restarts="ipop",
                   max_restarts=1, ftarget=1e-8)
    assert res.restarts == 1 and len(res.runs) == 2
    assert res.stop.get("maxrestarts") == 1
    assert not res.success  # ftarget was given and missed
    none = minimize(rastrigin, X0, SIGMA0, vectorized=True, seed=1, restarts="ipop",
                    max_restarts=0)
    assert none.restarts == 0 and "maxrestarts" in none.stop


def test_callback_stops_all_runs():
    seen = []
    res = minimize(rastrigin, X0, SIGMA0, vectorized=True, seed=1, restarts="ipop",
                   callback=lambda es: seen.append(es.restarts) or es.restarts == 1)
    assert res.restarts == 1 and "callback" in res.stop and seen[-1] == 1


def test_ipop_ask_tell_and_bounds():
    """The IPOP object works like NaturalES; bounds hold in every run."""
    f = problems.get("rastrigin", 4)
    es = IPOP(np.full(4, 0.5), 0.3, seed=2, bounds=(-1, 1), maxfevals=8000, ftarget=1e-8,
              max_restarts=3)
    while not es.stop():
        X = es.ask()
        assert np.all(X >= -1) and np.all(X <= 1)
        es.tell(X, f(X))
    r = es.result
    assert r.evaluations == es.evaluations <= 8000 + es.popsize
    assert r.fbest == min(run.fbest for run in es.runs)
    assert np.all(r.xbest >= -1) and np.all(r.xbest <= 1)


def test_ipop_on_a_unimodal_function_is_the_single_run():
    f = problems.get("rosenbrock", 4)
    one = minimize(f, np.zeros(4), 0.5, vectorized=True, seed=3, ftarget=1e-8, budget=10000)
    ipop = minimize(f, np.zeros(4), 0.5, vectorized=True, seed=3, ftarget=1e-8, budget=10000,
                    restarts="ipop")
    assert ipop.restarts == 0 and ipop.nfev == one.nfev and ipop.fun == one.fun
    assert one.restarts == 0 and one.runs[0]["nfev"] == one.nfev


def test_bad_restart_arguments():
    with pytest.raises(ValueError, match="restarts"):
        minimize(rastrigin, X0, SIGMA0, restarts="bipop")
    with pytest.raises(ValueError, match="max_restarts"):
        minimize(rastrigin, X0, SIGMA0, restarts="ipop", max_restarts=-1)
    with pytest.raises(ValueError, match="incpopsize"):
        IPOP(X0, SIGMA0, incpopsize=0.5)


def test_ipop_state_dict_resumes_the_same_restarts():
    import pickle

    from natgrad_es.es.restarts import IPOP
    from problems.functions import rastrigin

    ipop = IPOP(np.full(4, 3.0), 2.0, "full", seed=3, maxfevals=6000, tolfun=1e-3)
    while ipop.restarts < 1 and not ipop.stop():  # past the first restart
        X = ipop.ask()
        ipop.tell(X, rastrigin(X))
    assert ipop.restarts == 1
    copy = IPOP.from_state_dict(pickle.loads(pickle.dumps(ipop.state_dict())))
    for _ in range(40):
        if ipop.stop():
            break
        Xa, Xb = ipop.ask(), copy.ask()
        np.testing.assert_array_equal(Xa, Xb)
        ipop.tell(Xa, rastrigin(Xa))
        copy.tell(Xb, rastrigin(Xb))
    assert copy.restarts == ipop.restarts and copy.evaluations == ipop.evaluations
    assert copy.result.fbest == ipop.result.fbest
    np.testing.assert_array_equal(copy.mean, ipop.mean)
    with pytest.raises(ValueError, match="IPOP state_dict"):
        IPOP.from_state_dict({"class": "NaturalES"})
