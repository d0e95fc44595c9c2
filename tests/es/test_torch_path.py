"""The device-resident torch path of NaturalES: no host round-trip per generation, ranking on the
device, ``check_every``, float32 torch following the numpy float64 run, bfloat16, and batched
objectives on a device."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

import problems
from natgrad_es import backend as B
from natgrad_es.es import NaturalES, NaturalESWarning, rules
from natgrad_es.es.shaping import assign, recombination_weights, xnes_utilities
from natgrad_es.structures import base

torch = pytest.importorskip("torch")

SYNCS = ("item", "cpu", "numpy", "tolist", "__float__", "__bool__", "__int__", "__index__")


@contextlib.contextmanager
def no_host_sync(monkeypatch):
    """Every tensor-to-host conversion raises inside the block.

    ``structures.base.check_finite`` is given its accelerator behaviour (skip): on a CPU tensor it
    reads a bool, which is free there and skipped on a GPU (see its docstring).
    """
    with monkeypatch.context() as m:
        def forbidden(*args, **kwargs):
            raise AssertionError("host round-trip in the device path")

        for name in SYNCS:
            m.setattr(torch.Tensor, name, forbidden)
        m.setattr(base, "check_finite", lambda xp, x, name: None)
        yield


def _run(es, f, k):
    for _ in range(k):
        X = es.ask()
        es.tell(X, f(X))


class Feed:
    """Stands in for a strategy's RandomStream: the same float64 numpy normals for every backend
    (converted to the asked torch dtype), so two backends see the same Z."""

    def __init__(self, seed: int, dtype=None):
        self.rng, self.dtype = np.random.default_rng(seed), dtype

    def normal(self, shape, dtype=None):
        z = self.rng.standard_normal(shape)
        return z if self.dtype is None else torch.as_tensor(z, dtype=self.dtype)


# -- ranking ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 7, 24])
def test_device_ranking_equals_numpy_with_ties_and_inf(n):
    rng = np.random.default_rng(n)
    f = rng.integers(0, n // 2 + 1, n).astype(float)  # many ties
    f[rng.integers(n)] = np.inf
    for table in (recombination_weights(n).positive, recombination_weights(n).negative,
                  xnes_utilities(n), recombination_weights(n).table):
        expected = assign(f, table)
        for dtype in (torch.float64, torch.float32, torch.int64):
            got = assign(torch.as_tensor(f if dtype != torch.int64 else np.minimum(f, 99),
                                         dtype=dtype), table)
            ref = expected if dtype != torch.int64 else assign(np.minimum(f, 99), table)
            assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
            np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-15)


# -- no host round-trip -------------------------------------------------------------------------------

NO_SYNC = [
    pytest.param("full", {}, id="dense-expm"),
    pytest.param("full", {"method": "xnes"}, id="dense-xnes"),
    pytest.param("diagonal", {}, id="diagonal"),
    pytest.param("diagonal", {"step_size": "tpa", "mirrored": True}, id="diagonal-tpa"),
    pytest.param("lowrank", {"rank": 3, "retraction": "truncated"}, id="lowrank-truncated"),
    pytest.param("kronecker", {"shape": (4, 5), "retraction": "truncated"},
                 id="kronecker-truncated"),
    pytest.param("diagonal", {"dtype": "bfloat16"}, id="diagonal-bf16"),
    pytest.param("lowrank", {"rank": 3, "dtype": "bfloat16"}, id="lowrank-bf16"),
    pytest.param("kronecker", {"shape": (4, 5), "dtype": "bfloat16"}, id="kronecker-bf16"),
    pytest.param("full", {"dtype": "bfloat16", "retraction": "expm"}, id="dense-bf16-expm"),
    pytest.param("full", {"momentum": 0.5}, id="dense-momentum"),
    pytest.param("diagonal", {"method": "xnes", "momentum": 0.9}, id="diagonal-xnes-momentum"),
    pytest.param("spectral", {"momentum": 0.5}, id="spectral-momentum"),
]


@pytest.mark.parametrize("structure, kw", NO_SYNC)
def test_generation_needs_no_host_sync(monkeypatch, structure, kw):
    f = problems.get("rosenbrock", 20)
    ref = NaturalES(torch.full((20,), 0.5), 0.5, structure, seed=3, **kw)
    es = NaturalES(torch.full((20,), 0.5), 0.5, structure, seed=3, check_every=1000, **kw)
    with no_host_sync(monkeypatch):
        _run(es, f, 6)
    _run(ref, f, 6)  # checks every generation: the same update, bookkeeping aside
    assert torch.equal(es.mean, ref.mean) and es.sigma == ref.sigma
    assert torch.equal(es.factor.to_dense(), ref.factor.to_dense())
    assert es.result.fbest == ref.result.fbest and torch.equal(es.result.xbest, ref.result.xbest)
    assert es.result.evaluations == 6 * es.popsize


def test_phi_on_the_device_matches_numpy_and_needs_no_sync(monkeypatch):
    rng = np.random.default_rng(0)
    for norm in (1e-3, 0.2, 3.0, 40.0, 200.0):
        K = rng.standard_normal((6, 6))
        K *= norm / np.linalg.norm(K)
        expected = B.phi(K)
        with no_host_sync(monkeypatch):
            got = B.phi(torch.as_tensor(K))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-12 * np.abs(
            expected).max())
    too_big = torch.as_tensor(K * 300.0 / np.linalg.norm(K))  # beyond 2^10 squarings: NaN
    assert torch.isnan(B.phi(too_big)).all()


def test_expm_on_an_accelerator_matches_scipy_and_needs_no_sync(monkeypatch):
    """``expm`` of a small matrix on a GPU goes by ``_expm_device`` (matrix_exp syncs there):
    checked here by calling it on CPU tensors, single and batched, against scipy."""
    import scipy.linalg

    rng = np.random.default_rng(1)
    for norm in (0.0, 1e-3, 0.2, 3.0, 40.0, 200.0):
        K = rng.standard_normal((2, 3, 5, 5))
        K *= norm / np.linalg.norm(K, axis=(-2, -1), keepdims=True).clip(1e-300)
        K[0, 1] *= 0.01  # a different number of squarings within the batch
        expected = np.stack([[scipy.linalg.expm(k) for k in ks] for ks in K])
        with no_host_sync(monkeypatch):
            got = B._expm_device(torch.as_tensor(K))
            single = B._expm_device(torch.as_tensor(K[1, 2]))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10,
                                   atol=1e-13 * np.abs(expected).max())
        np.testing.assert_allclose(single.numpy(), expected[1, 2], rtol=1e-10,
                                   atol=1e-13 * np.abs(expected).max())
    half = B._expm_device(torch.as_tensor(K[0, 0] / 100, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16
    assert torch.isnan(B._expm_device(torch.as_tensor(K[0, 0] * 2.0))).all()  # beyond 2^10 squarings


# -- check_every --------------------------------------------------------------------------------------


def test_check_every_fires_criteria_at_checks_and_tracks_the_best_on_the_device():
    f = problems.get("sphere", 6)
    es = NaturalES(torch.full((6,), 1.0, dtype=torch.float64), 0.5, seed=0, ftarget=1e-6,
                   check_every=7)
    ref = NaturalES(torch.full((6,), 1.0, dtype=torch.float64), 0.5, seed=0, ftarget=1e-6)
    while not ref.stop():
        _run(ref, f, 1)
    while not es.stop():
        _run(es, f, 1)
        if es.iterations % 7:
            assert es._fbest == math.inf or es._fbest > 1e-6 or es.iterations % 7 == 0
    assert es.stop() == ref.stop() == {"ftarget": 1e-6}
    assert es.iterations % 7 == 0 and ref.iterations <= es.iterations < ref.iterations + 7
    _run(ref, f, es.iterations - ref.iterations)
    assert es.result.fbest == ref.result.fbest  # ``result`` syncs the device record
    assert torch.equal(es.result.xbest, ref.result.xbest)
    assert list(es._history.best) == list(ref._history.best)
    assert list(es._history.median) == list(ref._history.median)
    np.testing.assert_array_equal(es.last_fvalues, ref.last_fvalues)


@pytest.mark.filterwarnings("ignore::natgrad_es.es.NaturalESWarning")
def test_non_finite_update_goes_back_to_the_last_checked_state(monkeypatch):
    f = problems.get("sphere", 5)
    es = NaturalES(torch.full((5,), 1.0, dtype=torch.float64), 0.5, seed=0, check_every=3)
    _run(es, f, 3)
    checked = es.mean.clone()
    real = rules.update

    def broken(state, *args, **kw):
        new = real(state, *args, **kw)
        return rules.State(new.mean * math.nan, new.sigma, new.factor, new.p_sigma, new.p_c,
                           new.iteration, new.tpa_s, new.zbar) if new.iteration == 5 else new

    monkeypatch.setattr(rules, "update", broken)
    _run(es, f, 2)
    assert torch.isnan(es.mean).all() and es.stop() == {}  # not checked yet
    _run(es, f, 1)
    assert es.stop() == {"nonfinite": True} and torch.equal(es.mean, checked)
    assert es.iterations == 6


def test_non_finite_f_warns_at_the_check_and_ranks_worst():
    es = NaturalES(torch.full((4,), 1.0), 0.5, seed=0, check_every=2)
    X = es.ask()
    f = (X * X).sum(-1)
    f[1] = math.nan
    es.tell(X, f)
    with pytest.warns(NaturalESWarning, match="non-finite"):
        X = es.ask()
        es.tell(X, (X * X).sum(-1))
    raising = NaturalES(torch.full((4,), 1.0), 0.5, seed=0, nan_policy="raise")
    with pytest.raises(ValueError, match="non-finite"):
        X = raising.ask()
        raising.tell(X, torch.full((len(X),), math.inf))


def test_changed_or_copied_solutions_take_the_host_path_like_numpy():
    f = problems.get("sphere", 5)
    a = NaturalES(np.full(5, 0.5), 0.5, seed=0)
    b = NaturalES(torch.full((5,), 0.5, dtype=torch.float64), 0.5, seed=0)
    a._rng, b._rng = Feed(1), Feed(1, torch.float64)
    for g in range(6):
        Xa, Xb = a.ask(), b.ask()
        if g % 3 == 1:
            Xa[0] = 0.1
            Xb[0] = 0.1  # in place: the version counter changes
        elif g % 3 == 2:
            Xb = Xb.clone()  # another tensor with the same values
        a.tell(Xa, f(Xa))
        b.tell(Xb, f(Xb))
    np.testing.assert_allclose(b.mean.numpy(), a.mean, rtol=1e-12)
    np.testing.assert_allclose(b.factor.to_dense().numpy(), a.factor.to_dense(), rtol=1e-12)


def test_checkpoint_with_check_every_continues_identically():
    f = problems.get("ellipsoid", 6)
    a = NaturalES(torch.full((6,), 0.5, dtype=torch.float64), 0.5, seed=4, check_every=4)
    _run(a, f, 6)
    b = NaturalES.from_state_dict(a.state_dict())
    _run(a, f, 10)
    _run(b, f, 10)
    assert torch.equal(a.mean, b.mean) and a.sigma == b.sigma
    assert a.result.fbest == b.result.fbest and a.stop() == b.stop()


# -- float32 torch follows numpy float64 --------------------------------------------------------------

SAME_RUN = [
    pytest.param("full", {}, id="full"),
    pytest.param("full", {"method": "xnes"}, id="xnes"),
    pytest.param("diagonal", {"step_size": "tpa"}, id="diagonal-tpa"),
    pytest.param("lowrank", {"rank": 3}, id="lowrank"),
    pytest.param("kronecker", {"shape": (2, 5)}, id="kronecker"),
    pytest.param("full", {"retraction": "truncated", "popsize": 6}, id="full-truncated"),
]


@pytest.mark.parametrize("structure, kw", SAME_RUN)
def test_torch_float32_follows_numpy_float64(structure, kw):
    """The same Z (``Feed``) and the same objective: after 40 generations m, σ and A agree to
    float32 accuracy.

    Tolerance: float32 rounds at 6e-8; a generation applies O(10) rounding steps per entry and the
    differences grow at most linearly over the run (measured: 2e-7–1.3e-6 after 40 generations
    at d = 10), so 2e-5 leaves a margin of 15 while any difference in the formulas (a weight,
    the identity shift of the one-row form in ``rules``) is of order c_μ ≈ 1e-2.  torch float64
    must agree to 1e-9 (exactly the same maths; Kronecker's expm is torch's, not scipy's)."""
    f = problems.get("rosenbrock", 10)
    ref = NaturalES(np.full(10, 0.5), 0.3, structure, seed=0, **kw)
    ref._rng = Feed(5)
    runs = {}
    for dtype in (torch.float64, torch.float32):
        es = NaturalES(torch.full((10,), 0.5, dtype=dtype), 0.3, structure, seed=0, **kw)
        es._rng = Feed(5, dtype)
        runs[dtype] = es
    for _ in range(40):
        for es in (ref, *runs.values()):
            _run(es, f, 1)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 2e-5)):
        es = runs[dtype]
        A, A_ref = es.factor.to_dense().double().numpy(), ref.factor.to_dense()
        assert np.abs(es.mean.double().numpy() - ref.mean).max() <= tol * np.abs(ref.mean).max()
        assert np.abs(A - A_ref).max() <= tol * np.abs(A_ref).max()
        assert abs(es.sigma - ref.sigma) <= tol * ref.sigma


# -- bfloat16 -----------------------------------------------------------------------------------------


def test_bfloat16_keeps_the_mean_paths_and_sigma_in_float32():
    es = NaturalES(torch.ones(8), 0.5, "full", backend="torch", dtype=torch.bfloat16, seed=0)
    assert es.options.retraction == "truncated" and es.factor.dtype == torch.bfloat16
    X = es.ask()
    assert X.dtype == torch.float32 and es._pending[0][0].dtype == torch.bfloat16
    es.tell(X, (X * X).sum(-1))
    st = es._state
    for x in (st.mean, st.sigma, st.p_sigma, st.p_c, st.zbar):
        assert x.dtype == torch.float32
    assert NaturalES(torch.ones(8), 0.5, dtype=torch.bfloat16,
                     retraction="expm").options.retraction == "expm"


def _invertible(factor) -> bool:
    A = factor.to_dense().double()
    sv = torch.linalg.svdvals(A)
    return bool(torch.isfinite(A).all()) and float(sv.min()) > 1e-6 * float(sv.max())


BF16_RUNS = [  # (function, structure, target f/f(x0), evaluations budget, popsize)
    pytest.param("sphere", "full", 1e-8, 15_000, None, id="sphere-dense"),
    pytest.param("sphere", "diagonal", 1e-8, 15_000, None, id="sphere-diagonal"),
    pytest.param("ellipsoid", "diagonal", 1e-8, 15_000, None, id="ellipsoid-diagonal"),
    pytest.param("ellipsoid", "full", 1e-4, 120_000, 50, id="ellipsoid-dense"),
]


@pytest.mark.parametrize("name, structure, target, budget, popsize", BF16_RUNS)
def test_bfloat16_converges_at_d100(name, structure, target, budget, popsize):
    """bf16 factor and samples, float32 mean: d = 100 from x0 = 1, σ0 = 0.5 (seed 1).  Measured:
    sphere 8.7e3 (dense) / 8.2e3 (diagonal) evaluations to 1e-8·f(x0); diagonal ellipsoid
    (condition 1e6) 1.0e4; dense ellipsoid 1e-4·f(x0) after 8.7e4 at popsize 50 (float32: 5.1e4)
    — the dense bf16 factor learns the shape more slowly (an 8-bit mantissa drops updates of A
    below 2⁻⁹ relative), so it gets the looser target."""
    f = problems.get(name, 100)
    x0 = torch.ones(100)
    f0 = float(f(x0))
    es = NaturalES(x0, 0.5, structure, dtype=torch.bfloat16, seed=1, popsize=popsize,
                   check_every=10, ftarget=target * f0, maxfevals=budget)
    while not es.stop():
        _run(es, f, 1)
    assert es.stop() == {"ftarget": target * f0}, (es.result.fbest / f0, es.stop())
    assert es.factor.dtype == torch.bfloat16 and _invertible(es.factor)


# -- objectives on the device -------------------------------------------------------------------------


def test_objectives_run_batched_on_the_device(monkeypatch):
    """Every problem (and variant) evaluates a batch on the device it is given: on torch's
    ``meta`` device any numpy round-trip of x would fail; on CPU tensors no host conversion is
    called (after the first call, which caches the constants on the device)."""
    for name in problems.names(variants=True):
        p = problems.get(name, 12)
        out = p(torch.zeros(5, 12, device="meta"))
        assert out.device.type == "meta" and out.shape == (5,)
        X = torch.rand(5, 12, dtype=torch.float32)
        p(X)
        with no_host_sync(monkeypatch):
            out = p(X)
        assert out.dtype == torch.float32 and out.shape == (5,)
