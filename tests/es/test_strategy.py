"""NaturalES: reproducibility, checkpoints, ties, NaN policy, bad input, changed solutions, the
update rules against dense reference formulas, backends and termination."""

from __future__ import annotations

import copy
import importlib.util
import math
import pickle
import warnings

import numpy as np
import pytest
import scipy.linalg

import problems
from natgrad_es import structures
from natgrad_es.backend import RandomStream
from natgrad_es.es import SNES, XNES, NaturalES, NaturalESWarning, defaults, minimize
from natgrad_es.es.shaping import assign, recombination_weights, xnes_utilities

SPHERE = problems.get("sphere", 5)


def _generations(es, k, f=SPHERE):
    for _ in range(k):
        X = es.ask()
        es.tell(X, f(X))


def _same_state(a, b, exact=True):
    xp = a.factor.xp
    pairs = [(a.mean, b.mean), (a.factor.to_dense(), b.factor.to_dense()),
             (a._state.p_sigma, b._state.p_sigma), (a._state.p_c, b._state.p_c)]
    for x, y in pairs:
        x, y = xp.to_numpy(x), xp.to_numpy(y)
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)
    assert (a.sigma == b.sigma) if exact else math.isclose(a.sigma, b.sigma, rel_tol=1e-12)


STRATEGIES = [
    pytest.param({}, id="path-full"),
    pytest.param({"structure": "diagonal"}, id="path-diagonal"),
    pytest.param({"structure": "lowrank", "rank": 2}, id="path-lowrank"),
    pytest.param({"structure": "diagonal", "step_size": "tpa"}, id="path-diagonal-tpa"),
    pytest.param({"method": "xnes"}, id="xnes-full"),
    pytest.param({"method": "xnes", "structure": "diagonal", "mirrored": True}, id="snes-mirrored"),
]


# -- reproducibility and checkpoints ----------------------------------------------------------------


@pytest.mark.parametrize("kw", STRATEGIES)
def test_same_seed_same_run(kw):
    a = NaturalES(np.full(5, 0.5), 0.5, seed=7, **kw)
    b = NaturalES(np.full(5, 0.5), 0.5, seed=7, **kw)
    _generations(a, 20)
    _generations(b, 20)
    _same_state(a, b)
    c = NaturalES(np.full(5, 0.5), 0.5, seed=8, **kw)
    _generations(c, 20)
    assert not np.array_equal(a.mean, c.mean)


@pytest.mark.parametrize("kw", STRATEGIES)
def test_state_dict_continues_identically(kw):
    a = NaturalES(np.full(5, 0.5), 0.5, seed=7, **kw)
    _generations(a, 15)
    state = pickle.loads(pickle.dumps(a.state_dict()))
    b = NaturalES(np.zeros(5), 2.0, seed=123, **kw)  # another start: everything comes from state
    b.load_state_dict(state)
    c = NaturalES.from_state_dict(copy.deepcopy(state))
    for es in (a, b, c):
        _generations(es, 15)
    _same_state(a, b)
    _same_state(a, c)
    assert a.result.evaluations == b.result.evaluations == c.result.evaluations
    assert a.result.fbest == b.result.fbest == c.result.fbest
    assert a.stop() == b.stop() == c.stop()


def test_state_dict_between_ask_and_tell():
    a = NaturalES(np.full(5, 0.5), 0.5, seed=7)
    _generations(a, 3)
    X = a.ask()
    b = NaturalES.from_state_dict(a.state_dict())
    a.tell(X, SPHERE(X))
    b.tell(X, SPHERE(X))  # the pending Z travels with the state
    _same_state(a, b)
    _generations(a, 5)
    _same_state(a, NaturalES.from_state_dict(a.state_dict()))


def test_state_dict_does_not_alias():
    a = NaturalES(np.full(5, 0.5), 0.5, seed=7)
    _generations(a, 3)
    state = a.state_dict()
    mean = state["mean"].copy()
    _generations(a, 3)
    np.testing.assert_array_equal(state["mean"], mean)


def test_load_state_dict_rejects_other_dimension():
    a = NaturalES(np.full(5, 0.5), 0.5, seed=7)
    b = NaturalES(np.full(4, 0.5), 0.5, seed=7)
    with pytest.raises(ValueError, match="dimension"):
        b.load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="state_dict"):
        b.load_state_dict({"mean": 1})


# -- ties and shaping -------------------------------------------------------------------------------


def test_assign_averages_tied_utilities():
    table = np.array([0.5, 0.3, 0.2, 0.0, -1.0])
    u = assign([2.0, 1.0, 2.0, 0.0, 5.0], table)
    np.testing.assert_allclose(u, [0.1, 0.3, 0.1, 0.5, -1.0])
    assert math.isclose(u.sum(), table.sum())
    np.testing.assert_allclose(assign([1.0] * 5, table), np.full(5, table.mean()))
    np.testing.assert_allclose(assign([np.inf, 1.0, np.inf], np.array([1.0, 0.0, -1.0])),
                               [-0.5, 1.0, -0.5])
    with pytest.raises(ValueError, match="NaN"):
        assign([np.nan, 1.0], np.array([1.0, 0.0]))


@pytest.mark.parametrize("f", [[3.0, 1.0, 2.0, 0.5], [2.0, 1.0, 2.0, np.inf], [1.0] * 4],
                         ids=["distinct", "ties", "all-tied"])
def test_assign_ranks_stacked_tables_like_each_table(f):
    tables = np.array([[0.6, 0.3, 0.1, 0.0], [0.0, 0.0, -0.25, -0.75]])
    np.testing.assert_allclose(assign(f, tables), [assign(f, t) for t in tables], rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="shape"):
        assign(f, np.ones((2, 3)))


def test_tell_records_the_largest_step_of_the_generation():
    """tell's max |x − m| (tolx) comes from ask's A·z when the rows are unchanged, and from the
    rows themselves otherwise; both equal the direct computation."""
    es = NaturalES(np.full(6, 0.5), 0.3, "diagonal", seed=3)
    _generations(es, 3)
    for change in (False, True):
        m = es.mean.copy()
        X = es.ask()
        if change:
            X = X.copy()
            X[0] += 5.0
        es.tell(X, (X * X).sum(1))
        assert math.isclose(es._max_step, np.abs(X - m).max(), rel_tol=1e-12)


@pytest.mark.parametrize("n", [2, 3, 6, 10, 17])
def test_weight_tables(n):
    u = xnes_utilities(n)
    assert math.isclose(u.sum(), 0.0, abs_tol=1e-12) and np.all(np.diff(u) <= 0)
    w = recombination_weights(n)
    assert math.isclose(w.positive.sum(), 1.0) and w.mu == n // 2
    assert np.count_nonzero(w.positive) == n // 2
    assert math.isclose(w.negative.sum(), -1.0)
    assert math.isclose(w.mu_eff, 1 / (w.positive ** 2).sum())


@pytest.mark.parametrize("kw", [p for p in STRATEGIES if "tpa" not in p.id])
def test_tied_fitness_is_order_independent(kw):
    """Permuting rows with tied f values gives the same update (up to summation order).
    (Not for TPA, whose pair must stay in rows 0 and 1.)"""
    a = NaturalES(np.full(5, 0.5), 0.5, seed=3, **kw)
    _generations(a, 5)
    b = NaturalES.from_state_dict(a.state_dict())
    X = a.ask()
    f = np.round(SPHERE(X), 0)  # many ties
    f[:3] = f[0]
    perm = np.random.default_rng(0).permutation(len(f))
    a.tell(X, f)
    b.ask()
    b.tell(X[perm], f[perm])
    _same_state(a, b, exact=False)


def test_flat_fitness_runs_and_stops_on_tolfun():
    es = NaturalES(np.zeros(3), 1.0, seed=0)
    for _ in range(30):
        if es.stop():
            break
        X = es.ask()
        es.tell(X, np.ones(len(X)))
    assert "tolfun" in es.stop()
    assert np.all(np.isfinite(es.mean)) and es.sigma > 0


# -- NaN policy and bad input -----------------------------------------------------------------------


def test_nan_is_worst_with_one_warning():
    a = NaturalES(np.full(5, 0.5), 0.5, seed=3)
    b = NaturalES.from_state_dict(a.state_dict())
    Xa, Xb = a.ask(), b.ask()
    f = SPHERE(Xa)
    fa, fb = f.copy(), f.copy()
    fa[2], fb[2] = np.nan, 1e300
    with pytest.warns(NaturalESWarning, match="non-finite"):
        a.tell(Xa, fa)
    b.tell(Xb, fb)
    _same_state(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second NaN generation does not warn again
        X = a.ask()
        g = SPHERE(X)
        g[0] = np.inf
        a.tell(X, g)
    assert a.result.fbest < 1e300 and np.isfinite(a.result.fbest)


def test_nan_policy_raise():
    es = NaturalES(np.full(5, 0.5), 0.5, seed=3, nan_policy="raise")
    X = es.ask()
    f = SPHERE(X)
    f[1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        es.tell(X, f)
    with pytest.raises(ValueError, match="nan_policy"):
        NaturalES(np.zeros(2), 1.0, nan_policy="ignore")


def test_fvals_length_mismatch_names_both():
    es = NaturalES(np.full(5, 0.5), 0.5, seed=3)
    X = es.ask()
    with pytest.raises(ValueError, match=rf"len\(fvals\) = {len(X) - 1}.*len\(X\) = {len(X)}"):
        es.tell(X, SPHERE(X)[:-1])


@pytest.mark.parametrize("x0", [[0.0, np.nan], [np.inf, 1.0], [], [[1.0, 2.0]], ["a", "b"]])
def test_bad_x0(x0):
    with pytest.raises(ValueError, match="x0"):
        NaturalES(x0, 1.0)


@pytest.mark.parametrize("sigma0", [0.0, -1.0, np.nan, np.inf, "1", [1.0, 2.0], True])
def test_bad_sigma0(sigma0):
    with pytest.raises(ValueError, match="sigma0"):
        NaturalES(np.zeros(3), sigma0)


def test_bad_options_and_arguments():
    with pytest.raises(TypeError, match="unknown option"):
        NaturalES(np.zeros(3), 1.0, sigma=2)
    with pytest.raises(ValueError, match="popsize"):
        NaturalES(np.zeros(3), 1.0, popsize=1)
    with pytest.raises(ValueError, match="method"):
        NaturalES(np.zeros(3), 1.0, method="cma")
    with pytest.raises(ValueError, match=r"lower\[1\] = 1.0 is not smaller than upper\[1\]"):
        NaturalES(np.zeros(3), 1.0, bounds=([0, 1, 0], [1, 1, 1]))
    with pytest.raises(ValueError, match="pair"):
        minimize(SPHERE, np.zeros(3), 1.0, bounds=[(0, 1)] * 3)
    with pytest.raises(TypeError, match="fixes method"):
        XNES(np.zeros(3), 1.0, method="path")
    with pytest.raises(ValueError, match="dim"):
        NaturalES(np.zeros(3), 1.0, structures.make("full", 4))
    es = NaturalES(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="shape"):
        es.tell(np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        es.tell(np.full((4, 3), np.nan), np.zeros(4))
    with pytest.raises(ValueError, match="n must be"):
        es.ask(0)


# -- changed solutions in tell ----------------------------------------------------------------------


def test_changed_solutions_recover_z():
    """With c_m = 1 the new mean is the weighted recombination Σ w⁺ᵢ xᵢ of the told X — also for
    rows the user changed (z recovered as A⁻¹(x − m)/σ)."""
    es = NaturalES(np.full(5, 0.5), 0.5, seed=3)
    _generations(es, 10)
    X = es.ask()
    X[0] += 0.01
    X[3] = np.round(X[3], 1)
    f = SPHERE(X)
    w = assign(f, recombination_weights(len(X)).positive)
    es.tell(X, f)
    np.testing.assert_allclose(es.mean, w @ X, rtol=1e-12, atol=1e-14)


def test_far_injected_solution_is_shortened():
    es = NaturalES(np.zeros(5), 1.0, seed=3)
    X = es.ask()
    X[0] = 1e3  # best after the sign flip below, and far outside the distribution
    f = -np.abs(X).sum(1)
    es.tell(X, f)
    step = np.linalg.solve(es.factor.to_dense(), es.mean) / 1.0
    assert np.linalg.norm(step) <= defaults.repair_length(5) + 1e-9


def test_unchanged_copy_of_asked_solutions():
    a = NaturalES(np.full(5, 0.5), 0.5, seed=3)
    b = NaturalES.from_state_dict(a.state_dict())
    Xa, Xb = a.ask(), b.ask()
    a.tell(Xa, SPHERE(Xa))
    b.tell(Xb.tolist(), SPHERE(Xb).tolist())  # a list copy is recognised as the asked rows
    _same_state(a, b)


# -- the rules against dense reference formulas ------------------------------------------------------


def test_path_rule_matches_dense_formula():
    """One generation of the default rule on a non-trivial dense A equals algorithms.md §2b."""
    d = 4
    rng = np.random.default_rng(5)
    A0 = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    es = NaturalES(np.zeros(d), 0.7, structures.Dense(A0), seed=1)
    _generations(es, 3)  # non-zero paths
    m, s, A = es.mean, es.sigma, es.factor.to_dense()
    ps, pc, t = es._state.p_sigma.copy(), es._state.p_c.copy(), es.iterations + 1
    p = es.parameters
    X = es.ask()
    f = SPHERE.f(X @ np.diag([1, 2, 3, 4.0]))
    es.tell(X, f)

    Z = np.linalg.solve(A, ((X - m) / s).T).T
    wp = assign(f, p.weights.positive)
    wn = assign(f, p.weights.negative)
    zbar = wp @ Z
    ps = (1 - p.c_sigma) * ps + math.sqrt(p.c_sigma * (2 - p.c_sigma) * p.weights.mu_eff) * zbar
    h = (ps @ ps) / (1 - (1 - p.c_sigma) ** (2 * t)) / d < 2 + 4 / (d + 1)
    pc = (1 - p.c_c) * pc + h * math.sqrt(p.c_c * (2 - p.c_c) * p.weights.mu_eff) * zbar
    I = np.eye(d)
    M = p.c_1 * (np.outer(pc, pc) - I) + (0 if h else p.c_1 * p.c_c * (2 - p.c_c)) * I
    for i in range(len(f)):
        M += p.c_mu * wp[i] * (np.outer(Z[i], Z[i]) - I)
        zh = Z[i] * math.sqrt(d) / np.linalg.norm(Z[i])
        M += p.c_mu * p.alpha_minus * wn[i] * (np.outer(zh, zh) - I)
    sigma = s * math.exp(min(1, p.c_sigma / p.d_sigma * (np.linalg.norm(ps) / p.expected_norm - 1)))
    np.testing.assert_allclose(es.mean, m + s * A @ zbar, rtol=1e-12)
    np.testing.assert_allclose(es._state.p_sigma, ps, rtol=1e-12)
    np.testing.assert_allclose(es._state.p_c, pc, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(es.factor.to_dense(), A @ scipy.linalg.expm(M / 2), rtol=1e-10)
    assert math.isclose(es.sigma, sigma, rel_tol=1e-12)


def test_xnes_matches_dense_formula():
    d = 3
    es = XNES(np.zeros(d), 0.7, seed=1)
    _generations(es, 2)
    m, s, A = es.mean, es.sigma, es.factor.to_dense()
    X = es.ask()
    f = SPHERE.f(X @ np.diag([1, 5, 25.0]))
    es.tell(X, f)
    p = es.parameters
    assert math.isclose(p.eta_A, 0.6 * (3 + math.log(d)) / d ** 1.5)
    Z = np.linalg.solve(A, ((X - m) / s).T).T
    u = assign(f, xnes_utilities(len(f)))
    G = (Z.T * u) @ Z
    g = np.trace(G) / d
    np.testing.assert_allclose(es.mean, m + s * A @ (u @ Z), rtol=1e-12)
    assert math.isclose(es.sigma, s * math.exp(p.eta_sigma / 2 * g), rel_tol=1e-12)
    np.testing.assert_allclose(es.factor.to_dense(),
                               A @ scipy.linalg.expm(p.eta_A / 2 * (G - g * np.eye(d))),
                               rtol=1e-10)


def test_snes_matches_published_update():
    """SNES: per-coordinate σⱼ ← σⱼ exp(η/2 Σ uᵢ(zᵢⱼ² − 1)), η = (3 + ln d)/(5√d)."""
    d = 6
    es = SNES(np.full(d, 0.5), 0.5, seed=1)
    _generations(es, 2)
    m, scales = es.mean, es.sigma * es.factor.to_dense().diagonal()
    X = es.ask()
    f = problems.ellipsoid(X)
    es.tell(X, f)
    eta = (3 + math.log(d)) / (5 * math.sqrt(d))
    assert math.isclose(es.parameters.eta_A, eta) and es.popsize == 4 + int(3 * math.log(d))
    Z = (X - m) / scales
    u = assign(f, xnes_utilities(len(f)))
    np.testing.assert_allclose(es.mean, m + scales * (u @ Z), rtol=1e-12)
    np.testing.assert_allclose(es.sigma * es.factor.to_dense().diagonal(),
                               scales * np.exp(eta / 2 * (u @ (Z * Z - 1))), rtol=1e-12)


def test_constants_match_pycma():
    cma = pytest.importorskip("cma")
    for d in (3, 10, 40):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = cma.CMAEvolutionStrategy(np.zeros(d), 1.0, {"verbose": -9})
        full = NaturalES(np.zeros(d), 1.0, rate_multiplier=1).parameters
        diag = NaturalES(np.zeros(d), 1.0, "diagonal", rate_multiplier=1).parameters
        assert full.n == ref.sp.popsize
        assert math.isclose(full.weights.mu_eff, ref.sp.weights.mueff)
        assert math.isclose(full.c_1, ref.sm.parameters(ref.sp.weights.mueff, ref.sp.popsize)["c1"])
        assert math.isclose(full.c_mu, ref.sm.parameters(ref.sp.weights.mueff,
                                                         ref.sp.popsize)["cmu"])
        assert math.isclose(full.c_c, ref.sp.cc)
        assert math.isclose(full.c_sigma, ref.adapt_sigma.cs)
        assert math.isclose(full.d_sigma, ref.adapt_sigma.damps)
        assert math.isclose(diag.c_1, ref.sp.c1_sep)
        assert math.isclose(diag.c_mu, ref.sp.cmu_sep)
        assert math.isclose(diag.c_c, ref.sp.cc_sep)
        w = np.asarray(ref.sp.weights)
        assert math.isclose(full.alpha_minus * full.weights.negative.sum(), w[w < 0].sum())


def test_options_override_defaults():
    p = NaturalES(np.zeros(5), 1.0, c_1=0.1, c_mu=0.2, c_sigma=0.3, d_sigma=2.0, c_c=0.4,
                  popsize=12).parameters
    assert (p.c_1, p.c_mu, p.c_sigma, p.d_sigma, p.c_c, p.n) == (0.1, 0.2, 0.3, 2.0, 0.4, 12)
    q = NaturalES(np.zeros(5), 1.0).parameters  # default: CMA's c₁, c_μ × 1.5
    r = NaturalES(np.zeros(5), 1.0, rate_multiplier=1).parameters
    assert math.isclose(q.c_1, 1.5 * r.c_1) and math.isclose(q.c_mu, 1.5 * r.c_mu)
    q = NaturalES(np.zeros(5), 1.0, "diagonal").parameters  # diagonal: × 2
    r = NaturalES(np.zeros(5), 1.0, "diagonal", rate_multiplier=1).parameters
    assert math.isclose(q.c_1, 2 * r.c_1) and math.isclose(q.c_mu, 2 * r.c_mu)
    assert q.step_size == "csa"
    with pytest.raises(ValueError, match="step_size"):
        NaturalES(np.zeros(5), 1.0, step_size="msr")


def test_tpa_pair_and_step_size_update():
    """TPA: rows 0 and 1 of a generation are ±ℓ z̄_prev/‖z̄_prev‖ around the mean; σ moves by
    exp(s/d_TPA) with s ← 0.7 s + 0.3 sign(r)|r|^½ from their rank difference r."""
    es = NaturalES(np.full(6, 0.5), 0.5, "diagonal", seed=2, step_size="tpa")
    X = es.ask()
    es.tell(X, SPHERE(X))  # no pair in the first generation: σ unchanged
    assert es.sigma == 0.5 and es._state.tpa_s == 0.0
    m, s, a, zbar = es.mean, es.sigma, es.factor.to_dense().diagonal(), es._state.zbar
    X = es.ask()
    z0, z1 = (X[0] - m) / (s * a), (X[1] - m) / (s * a)
    np.testing.assert_allclose(z0, -z1, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(z0 / np.linalg.norm(z0), zbar / np.linalg.norm(zbar), rtol=1e-10)
    f = SPHERE(X)
    es.tell(X, f)
    p = es.parameters
    r = (np.sum(f < f[1]) - np.sum(f < f[0])) / (len(f) - 1)
    s_new = 0.3 * np.sign(r) * abs(r) ** 0.5
    assert math.isclose(es._state.tpa_s, s_new)
    assert math.isclose(es.sigma, s * math.exp(s_new / p.tpa_damp), rel_tol=1e-12)
    # a reordered generation is no TPA pair: s stays
    X = es.ask()
    es.tell(X[::-1], SPHERE(X[::-1]))
    assert es._state.tpa_s == s_new


# -- backends -----------------------------------------------------------------------------------------


def test_numpy_in_numpy_out():
    es = NaturalES([0.5] * 4, 0.5, seed=0)
    X = es.ask()
    assert isinstance(X, np.ndarray) and X.dtype == np.float64 and X.shape == (es.popsize, 4)
    es.tell(X, SPHERE.f(X))
    r = es.result
    assert isinstance(r.xbest, np.ndarray) and isinstance(r.xmean, np.ndarray)
    assert isinstance(es.covariance(), np.ndarray) and es.covariance().shape == (4, 4)


@pytest.mark.parametrize("method", ["path", "xnes"])
def test_torch_in_torch_out(method):
    torch = pytest.importorskip("torch")
    es = NaturalES(torch.full((4,), 0.5, dtype=torch.float32), 0.5, "diagonal", seed=0,
                   method=method)
    X = es.ask()
    assert isinstance(X, torch.Tensor) and X.dtype == torch.float32
    es.tell(X, SPHERE.f(X))
    es.tell(es.ask(), [float(v) for v in SPHERE.f(X)])
    r = es.result
    assert isinstance(r.xbest, torch.Tensor) and isinstance(es.mean, torch.Tensor)
    assert r.xbest.dtype == torch.float32
    with pytest.raises(TypeError, match="numpy"):
        NaturalES(np.zeros(4), 1.0).tell(X, np.zeros(len(X)))


def test_backend_option_keeps_precision():
    torch = pytest.importorskip("torch")
    es = NaturalES(np.zeros(3), 1.0, backend="torch")
    assert isinstance(es.ask(), torch.Tensor) and es.ask().dtype == torch.float64
    assert NaturalES(np.zeros(3, dtype=np.float32), 1.0).ask().dtype == np.float32


def test_torch_checkpoint_continues_identically():
    torch = pytest.importorskip("torch")
    a = NaturalES(torch.full((5,), 0.5, dtype=torch.float64), 0.5, seed=4)
    _generations(a, 5)
    b = NaturalES.from_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    _generations(a, 5)
    _generations(b, 5)
    _same_state(a, b)


# -- termination, results, disp ---------------------------------------------------------------------


def test_stop_is_empty_while_running_and_names_criteria():
    es = NaturalES(np.full(5, 0.5), 0.5, seed=0, maxfevals=50, ftarget=1e-30)
    assert es.stop() == {}
    _generations(es, 2)
    assert es.stop() == {}
    while not es.stop():
        _generations(es, 1)
    assert es.stop() == {"maxfevals": 50} and es.result.stop == {"maxfevals": 50}
    es2 = NaturalES(np.full(5, 0.5), 0.5, seed=0, maxiter=3)
    _generations(es2, 3)
    assert "maxiter" in es2.stop()


def test_tolx_and_tolfun_fire_near_the_optimum():
    es = NaturalES(np.full(3, 0.5), 0.5, seed=0, tolx=1e-6)
    while not es.stop():
        _generations(es, 1, problems.get("sphere", 3))
    assert "tolx" in es.stop() or "tolfun" in es.stop()
    assert es.result.fbest < 1e-10


def test_tolcondition_fires():
    f = problems.get("ellipsoid", 4)
    es = NaturalES(np.full(4, 0.5), 0.5, seed=0, tolcondition=1e3)
    while not es.stop():
        _generations(es, 1, f)
    assert "tolcondition" in es.stop(), es.stop()


def test_nonfinite_update_keeps_last_finite_state():
    es = NaturalES(np.full(3, 0.5), 1e5, seed=0, c_m=1e308)
    X = es.ask()
    es.tell(X, SPHERE.f(X) * 0 + np.arange(len(X)))
    assert "nonfinite" in es.stop()
    np.testing.assert_array_equal(es.mean, np.full(3, 0.5))
    assert es.result.evaluations == len(X)


def test_disp_prints_progress(capsys):
    es = NaturalES(np.full(5, 0.5), 0.5, seed=0)
    _generations(es, 2)
    es.disp()
    es.disp()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Iterat") and len(out) == 3
    assert out[1].split()[:2] == ["2", str(2 * es.popsize)]


def test_minimize_result_and_options():
    res = minimize(SPHERE, np.full(5, 0.5), 0.5, seed=1, ftarget=1e-8)
    vec = minimize(SPHERE, np.full(5, 0.5), 0.5, seed=1, ftarget=1e-8, vectorized=True)
    for key in ("x", "fun", "nfev", "nit", "success", "status", "message", "stop"):
        assert key in res
    assert res.success and res.status == 0 and "ftarget" in res.message
    assert res.nfev == vec.nfev and np.array_equal(res.x, vec.x)
    assert math.isclose(SPHERE(res.x), res.fun)
    short = minimize(SPHERE, np.full(5, 0.5), 0.5, seed=1, budget=40)
    assert not short.success and short.status == 1 and short.stop == {"maxfevals": 40}
    calls = []
    cb = minimize(SPHERE, np.full(5, 0.5), 0.5, seed=1, callback=lambda es: calls.append(1) or
                  len(calls) >= 3)
    assert cb.nit == 3 and "callback" in cb.stop


def test_minimize_verbose(capsys):
    minimize(SPHERE, np.full(5, 0.5), 0.5, seed=1, maxiter=25, verbose=10)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 3 and lines[-1].split()[0] == "25"


# -- sampling lanes -----------------------------------------------------------------------------------


def test_sampling_threads_give_a_reproducible_run_of_their_own():
    """t lanes: the same seed and t give the same run (and a checkpoint resumes it); the numbers
    differ from the single stream's; the run still converges."""
    def run(es, k):
        _generations(es, k)
        return es.mean.copy()

    a = NaturalES(np.full(8, 0.5), 0.3, "diagonal", seed=5, popsize=2048, sampling_threads=2)
    b = NaturalES(np.full(8, 0.5), 0.3, "diagonal", seed=5, popsize=2048, sampling_threads=2)
    single = NaturalES(np.full(8, 0.5), 0.3, "diagonal", seed=5, popsize=2048)
    np.testing.assert_array_equal(run(a, 3), run(b, 3))
    assert not np.array_equal(a.mean, run(single, 3))
    state = a.state_dict()
    expected = run(a, 2)
    np.testing.assert_array_equal(run(NaturalES.from_state_dict(state), 2), expected)
    with pytest.raises(ValueError, match="lane"):
        RandomStream(5).load_state_dict(RandomStream(5, threads=2).state_dict())
    assert SPHERE(run(b, 40)[None])[0] < 1e-6


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_sampling_threads_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="sampling_threads"):
        NaturalES(np.zeros(4), 1.0, sampling_threads=bad)


@pytest.mark.parametrize("options", [{}, {"mirrored": True}, {"structure": "lowrank-precision", "rank": 2}])
def test_draw_ahead_gives_the_same_run_and_checkpoints(options):
    """draw_ahead only moves the draw to a background thread: the run and its checkpoints are
    the ones without it, and a checkpoint taken with a block pending resumes the same run."""
    options = {"structure": "diagonal", **options}

    def run(es, k):
        _generations(es, k)
        return es.mean.copy()

    plain = NaturalES(np.full(8, 0.5), 0.3, seed=3, **options)
    ahead = NaturalES(np.full(8, 0.5), 0.3, seed=3, draw_ahead=True, **options)
    np.testing.assert_array_equal(run(ahead, 5), run(plain, 5))
    state = ahead.state_dict()  # a block is pending now
    np.testing.assert_array_equal(run(ahead, 3), run(plain, 3))
    resumed = NaturalES.from_state_dict(state)
    np.testing.assert_array_equal(run(resumed, 3), plain.mean)
    twin = pickle.loads(pickle.dumps(ahead))  # a block is pending: dropped, then redrawn
    copied = copy.deepcopy(ahead)
    np.testing.assert_array_equal(run(twin, 2), run(copied, 2))
    np.testing.assert_array_equal(run(ahead, 2), twin.mean)
    np.testing.assert_array_equal(run(plain, 2), twin.mean)
    if "rank" not in options:  # (the pairs route asks a fixed size)
        X = ahead.ask(5)  # another size than the pending block's: drawn afresh, the same numbers
        np.testing.assert_array_equal(X, plain.ask(5))


def test_draw_ahead_is_for_numpy():
    with pytest.raises(ValueError, match="draw_ahead"):
        NaturalES(np.zeros(4), 1.0, draw_ahead="yes")
    if importlib.util.find_spec("torch") is not None:
        with pytest.raises(ValueError, match="draw_ahead is for the numpy backend"):
            NaturalES(np.zeros(4), 1.0, backend="torch", draw_ahead=True)


def test_reused_copies_never_touch_the_rows_a_user_holds():
    """ask's internal row copies are reused across generations; the arrays ask returned are not."""
    es = NaturalES(np.full(5, 0.5), 0.3, "diagonal", seed=4)
    held = []
    for _ in range(4):
        X = es.ask()
        held.append((X, X.copy()))
        es.tell(X, SPHERE(X))
    for X, snapshot in held:
        np.testing.assert_array_equal(X, snapshot)
    assert not any(np.shares_memory(a[0], b[0]) for i, a in enumerate(held) for b in held[i + 1:])
    X = es.ask()
    X[2] += 1.0  # with a reused copy, a changed row is still seen as changed
    same = es._recover_z(X)[2]
    assert same.tolist() == [i != 2 for i in range(len(X))]
    es.tell(X, SPHERE(X))
