"""``GraphedGeneration``: the graphed run is the ask/tell run (checked here without capture, on the
CPU: the same steps a replay runs; the capture itself is checked on a GPU by
benchmarks/gpu_check.py), its bookkeeping, and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import problems
from natgrad_es import backend as B
from natgrad_es.es import GraphedGeneration, NaturalES, NaturalESWarning, graphs, rules

torch = pytest.importorskip("torch")

CASES = [
    pytest.param("full", {}, id="dense-expm"),
    pytest.param("full", {"method": "xnes"}, id="dense-xnes"),
    pytest.param("full", {"momentum": 0.5}, id="dense-momentum"),
    pytest.param("diagonal", {}, id="diagonal"),
    pytest.param("diagonal", {"step_size": "tpa", "mirrored": True}, id="diagonal-tpa-mirrored"),
    pytest.param("diagonal", {"dtype": torch.bfloat16}, id="diagonal-bf16"),
    pytest.param("lowrank", {"rank": 3, "retraction": "truncated"}, id="lowrank"),
    pytest.param("kronecker", {"shape": (4, 5)}, id="kronecker"),
    pytest.param("blockdiag", {"blocks": 2}, id="blockdiag"),
    pytest.param("lowrank-cov", {"rank": 2, "curvature": "ranks"}, id="lowrank-cov"),
    pytest.param("spectral", {"momentum": 0.5}, id="spectral-momentum"),
]


def _pair(structure="diagonal", d=20, check_every=7, **kw):
    dtype = kw.pop("dtype", torch.float64)
    return [NaturalES(torch.full((d,), 0.5, dtype=torch.float64), 0.5, structure, seed=3,
                      check_every=check_every, dtype=dtype, **kw) for _ in range(2)]


def _run(es, f, k):
    for _ in range(k):
        X = es.ask()
        es.tell(X, f(X))


def _assert_same_run(a, b):
    assert torch.equal(a.mean, b.mean) and a.sigma == b.sigma
    assert torch.equal(a.factor.to_dense(), b.factor.to_dense())
    ra, rb = a.result, b.result
    assert (ra.fbest, ra.evaluations, ra.iterations) == (rb.fbest, rb.evaluations, rb.iterations)
    assert torch.equal(ra.xbest, rb.xbest)
    assert list(a._history.best) == list(b._history.best)
    assert list(a._history.median) == list(b._history.median)
    assert a.stop() == b.stop()
    assert (a._current_range, a._max_step) == (b._current_range, b._max_step)


@pytest.mark.parametrize("structure, kw", CASES)
def test_the_graphed_steps_make_the_ask_tell_run(structure, kw):
    f = problems.get("rosenbrock", 20)
    eager, graphed = _pair(structure, **kw)
    step = GraphedGeneration(graphed, f, capture=False)
    _run(eager, f, 30)
    step(30)
    _assert_same_run(graphed, eager)
    assert step._buffers is not None  # the steps after the first ones ran on the buffers


def test_a_check_stops_the_graphed_run_where_tell_stops():
    f = problems.get("sphere", 10)
    eager, graphed = _pair("full", d=10, check_every=5, ftarget=1e-6)
    step = GraphedGeneration(graphed, f, capture=False)
    while not eager.stop():
        _run(eager, f, 1)
    while not graphed.stop():
        step(1)
    assert graphed.stop() == eager.stop() == {"ftarget": 1e-6}
    assert graphed.iterations == eager.iterations and graphed.iterations % 5 == 0
    _assert_same_run(graphed, eager)


def test_ask_tell_and_checkpoints_between_graphed_steps():
    f = problems.get("ellipsoid", 12)
    eager, graphed = _pair("lowrank", d=12, rank=2)
    step = GraphedGeneration(graphed, f, capture=False)
    step(10)
    _run(graphed, f, 5)  # the strategy's own ask/tell in between
    saved = graphed.state_dict()
    step(10)
    _run(eager, f, 25)
    _assert_same_run(graphed, eager)
    graphed.load_state_dict(saved)  # back 10 generations: the buffers are refilled
    step(10)
    _assert_same_run(graphed, eager)


def test_the_device_record_wraps_and_is_read_in_order(monkeypatch):
    monkeypatch.setattr(graphs, "RECORD_ROWS", 4)
    f = problems.get("sphere", 8)
    eager, graphed = _pair("diagonal", d=8, check_every=10)
    step = GraphedGeneration(graphed, f, capture=False)
    assert graphs.record_rows(10) == 4
    step(23)
    _run(eager, f, 23)
    _assert_same_run(graphed, eager)
    assert len(list(graphed._history.best)) == 23


@pytest.mark.filterwarnings("ignore::natgrad_es.es.NaturalESWarning")
def test_a_non_finite_state_goes_back_to_the_last_checked_one(monkeypatch):
    f = problems.get("sphere", 5)
    es = NaturalES(torch.full((5,), 1.0, dtype=torch.float64), 0.5, seed=0, check_every=3)
    step = GraphedGeneration(es, f, capture=False)
    step(3)
    checked = es.mean.clone()
    real = rules.update

    def broken(state, *args, **kw):
        new = real(state, *args, **kw)
        return rules.State(new.mean * math.nan, new.sigma, new.factor, new.p_sigma, new.p_c,
                           new.iteration, new.tpa_s, new.zbar) if int(new.iteration) == 5 else new

    monkeypatch.setattr(rules, "update", broken)
    step(2)
    assert torch.isnan(es.mean).all() and es.stop() == {}  # not checked yet
    step(1)
    assert es.stop() == {"nonfinite": True} and torch.equal(es.mean, checked)
    assert es.iterations == 6
    monkeypatch.setattr(rules, "update", real)
    step(1)  # the buffers take the state put back
    assert torch.isfinite(es.mean).all() and es.iterations == 7


def test_non_finite_f_ranks_worst_and_warns_at_a_check():
    def f(X):
        out = (X * X).sum(-1)
        return torch.where(torch.arange(len(X)) == 1, torch.full_like(out, math.nan), out)

    eager, graphed = _pair("diagonal", d=6, check_every=4)
    step = GraphedGeneration(graphed, f, capture=False)
    with pytest.warns(NaturalESWarning, match="non-finite"):
        step(8)
    with pytest.warns(NaturalESWarning, match="non-finite"):
        _run(eager, f, 8)
    _assert_same_run(graphed, eager)


def test_bad_uses_get_clear_errors():
    f = problems.get("sphere", 4)
    with pytest.raises(ValueError, match="torch without bounds"):
        GraphedGeneration(NaturalES(np.ones(4), 0.5), f)
    with pytest.raises(ValueError, match="torch without bounds"):
        GraphedGeneration(NaturalES(torch.ones(4), 0.5, bounds=[-2, 2]), f)
    with pytest.raises(ValueError, match="nan_policy"):
        GraphedGeneration(NaturalES(torch.ones(4), 0.5, nan_policy="raise"), f)
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedGeneration(NaturalES(torch.ones(4), 0.5), f, capture=True)
    with pytest.raises(TypeError, match="callable"):
        GraphedGeneration(NaturalES(torch.ones(4), 0.5), "sphere")
    es = NaturalES(torch.ones(4), 0.5)
    step = GraphedGeneration(es, f)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="positive integer"):
            step(bad)
    es.ask()
    with pytest.raises(RuntimeError, match="pending"):
        step(1)


def test_the_torch_stream_fills_a_buffer_with_the_numbers_it_would_return():
    a = B.RandomStream(7, backend="torch")
    b = B.RandomStream(7, backend="torch")
    for dtype in (torch.float32, torch.float64):
        buf = torch.empty((3, 5), dtype=dtype)
        assert a.normal((3, 5), dtype=dtype, out=buf) is buf
        assert torch.equal(buf, b.normal((3, 5), dtype=dtype))
    for shape, dtype in (((3, 4), torch.float32), ((3, 5), torch.bfloat16)):
        with pytest.raises(ValueError, match="out must be"):
            a.normal((3, 5), dtype=dtype, out=torch.empty(shape, dtype=dtype))


def test_the_path_row_enters_by_its_own_call_for_a_large_z(monkeypatch):
    """``rules.SEPARATE_PATH_ROW``: the p_c row appended to Z, or its own natural gradient added
    (linearity): the same run to rounding, for every structure."""
    f = problems.get("rosenbrock", 24)
    for structure, kw in (("full", {}), ("diagonal", {}), ("lowrank", {"rank": 3}),
                          ("kronecker", {"shape": (4, 6)}), ("blockdiag", {"blocks": 3}),
                          ("lowrank-cov", {"rank": 2, "curvature": "ranks"}), ("spectral", {})):
        runs = []
        n = 4 + int(3 * np.log(24))
        # appended, separate, and at n·d + 1, where the appended row would cross the limit: once
        for limit in (2 ** 40, 1, n * 24 + 1):
            monkeypatch.setattr(rules, "SEPARATE_PATH_ROW", limit)
            es = NaturalES(np.full(24, 0.5), 0.5, structure, seed=3, **kw)
            _run(es, f, 25)
            runs.append(es)
        a = runs[0]
        for b in runs[1:]:
            np.testing.assert_allclose(b.mean, a.mean, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(b.factor.to_dense(), a.factor.to_dense(), rtol=1e-11,
                                       atol=1e-13)
            assert b.sigma == pytest.approx(a.sigma, rel=1e-12)


def test_no_reference_cycle_keeps_a_dropped_step_alive():
    """A captured graph must be freed when its last user goes, not by the garbage collector at a
    random time (inside another capture that breaks the capture): the strategy's record holds
    the buffers, never the ``GraphedGeneration``."""
    import gc
    import weakref

    f = problems.get("sphere", 6)
    es = NaturalES(torch.ones(6, dtype=torch.float64), 0.5, seed=2, check_every=4)
    step = GraphedGeneration(es, f, capture=False)
    step(6)
    alive = weakref.ref(step)
    gc.disable()
    try:
        del step
        assert alive() is None
    finally:
        gc.enable()
    eager = NaturalES(torch.ones(6, dtype=torch.float64), 0.5, seed=2, check_every=4)
    _run(eager, f, 6)
    assert es.result.fbest == eager.result.fbest  # the record read after the step is gone
    _run(es, f, 2)  # and the strategy goes on by itself
    _run(eager, f, 2)
    _assert_same_run(es, eager)


def test_an_error_in_a_step_leaves_the_strategy_usable(monkeypatch):
    f = problems.get("sphere", 6)
    es = NaturalES(torch.ones(6, dtype=torch.float64), 0.5, seed=2, check_every=4)
    step = GraphedGeneration(es, f, capture=False)
    step(5)

    def failing(*args, **kw):
        raise FloatingPointError("planted")

    with monkeypatch.context() as m:
        m.setattr(rules, "update", failing)
        with pytest.raises(FloatingPointError, match="planted"):
            step(1)
    assert isinstance(es.iterations, int) and es.iterations == 5
    _run(es, f, 1)  # ask/tell go on from the last good state
    step(2)
    assert es.iterations == 8 and torch.isfinite(es.mean).all()
