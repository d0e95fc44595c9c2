"""Box bounds: parsing and errors, the reflection, and runs that never leave the box."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy.optimize import Bounds

import problems
from natgrad_es.es import NaturalES, minimize
from natgrad_es.es.bounds import Box, parse_bounds

# -- parsing --------------------------------------------------------------------------------------


def test_parse_scalars_arrays_and_unbounded_sides():
    box = parse_bounds((0, [1, None, np.inf]), 3)
    np.testing.assert_array_equal(box.lower, [0, 0, 0])
    np.testing.assert_array_equal(box.upper, [1, np.inf, np.inf])
    box = parse_bounds(([None, -1, -np.inf], 2.5), 3)
    np.testing.assert_array_equal(box.lower, [-np.inf, -1, -np.inf])
    np.testing.assert_array_equal(box.upper, [2.5] * 3)
    assert parse_bounds(None, 3) is None
    assert parse_bounds((None, None), 3) is None
    assert parse_bounds((-np.inf, [np.inf] * 3), 3) is None
    assert parse_bounds(Bounds([0, 0], [1, 2]), 2) == Box(np.zeros(2), np.array([1.0, 2.0]))
    assert parse_bounds((np.float32(0), np.array(1.0)), 2) == Box(np.zeros(2), np.ones(2))


@pytest.mark.parametrize("bounds,match", [
    (([0, 0, 2], [1, 1, 1]), r"lower\[2\] = 2.0 is not smaller than upper\[2\] = 1.0"),
    ((1, 1), r"lower\[0\] = 1.0 is not smaller than upper\[0\] = 1.0 \(and 2 more"),
    ((np.inf, None), r"lower\[0\] = inf"),
    (([0, np.nan, 0], 1), r"lower\[1\] is NaN"),
    (([0, 0], 1), "lower has 2 entries, x0 has 3"),
    ((0, [[1, 1, 1]]), r"upper must be a scalar or 1-D, got shape \(1, 3\)"),
    ([(0, 1)] * 3, "pair"),
    ((0, 1, 2), "pair"),
    (5, "pair"),
    ("ab", "pair"),
    ((0, "x"), "upper"),
])
def test_bad_bounds(bounds, match):
    with pytest.raises(ValueError, match=match):
        parse_bounds(bounds, 3)
    with pytest.raises(ValueError, match=match):
        NaturalES(np.full(3, 0.5), 0.1, bounds=bounds)


def test_x0_outside_the_box_names_the_coordinate():
    with pytest.raises(ValueError, match=r"x0\[1\] = 2.0 lies outside the bounds \[0.0, 1.0\]"):
        NaturalES([0.5, 2.0, 0.5], 0.1, bounds=(0, 1))
    NaturalES([0.0, 1.0, 0.5], 0.1, bounds=(0, 1))  # on the faces is inside


# -- the maps -------------------------------------------------------------------------------------


BOX = Box(np.array([0.0, -1.0, -np.inf, -np.inf, 2.0]), np.array([1.0, np.inf, 3.0, np.inf, 2.5]))


def test_reflection_is_the_identity_inside_and_lands_in_the_box():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (200, 5)), rng.normal(0, 1e3, (200, 5)),
                        rng.normal(0, 1e12, (20, 5))])
    R = BOX.reflect(X)
    assert np.all(R >= BOX.lower) and np.all(R <= BOX.upper)
    inside = BOX.contains(X)
    assert inside.any() and not inside.all()
    np.testing.assert_array_equal(R[inside], X[inside])  # bit for bit
    np.testing.assert_array_equal(R[:, 3], X[:, 3])      # the unbounded coordinate
    np.testing.assert_array_equal(BOX.reflect(R), R)
    inner = X[inside]
    assert BOX.reflect(inner) is inner                    # nothing to do: no copy


def test_reflection_mirrors_at_each_face():
    x = np.array([[-0.25, -1.5, 3.5, 7.0, 2.6], [1.25, -4.0, 2.0, 0.0, 3.4],
                  [2.25, 0.0, 13.0, 0.0, 1.9]])
    np.testing.assert_allclose(BOX.reflect(x), [[0.25, -0.5, 2.5, 7.0, 2.4],
                                                [0.75, 2.0, 2.0, 0.0, 2.4],
                                                [0.25, 0.0, -7.0, 0.0, 2.1]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(BOX.project(x), [[0, -1, 3, 7, 2.5], [1, -1, 2, 0, 2.5],
                                                [1, 0, 3, 0, 2]])
    np.testing.assert_allclose(BOX.squared_violation(x)[0], [0.0625, 0.25, 0.25, 0, 0.01],
                               atol=1e-12)
    np.testing.assert_array_equal(BOX.contains(x), [False, False, False])
    assert BOX.contains(np.array([0.5, 0, 0, 0, 2.2]))


def test_reflection_in_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    X = np.random.default_rng(1).normal(0, 3, (50, 5))
    Rt = BOX.reflect(torch.as_tensor(X))
    assert isinstance(Rt, torch.Tensor) and Rt.dtype == torch.float64
    np.testing.assert_allclose(Rt.numpy(), BOX.reflect(X), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(BOX.contains(torch.as_tensor(X)), BOX.contains(X))


# -- strategies with bounds ------------------------------------------------------------------------


def _inside(X, lo, hi):
    return bool(np.all(np.asarray(X) >= lo) and np.all(np.asarray(X) <= hi))


@pytest.mark.parametrize("structure,kw", [("full", {}), ("diagonal", {}), ("lowrank", {"rank": 2}),
                                          ("full", {"method": "xnes"})])
def test_optimum_on_a_face_is_reached_without_leaving_the_box(structure, kw):
    """f = Σ (x + 1)² on [0, 10]^5: the optimum is the corner 0, f* = 5; σ0 far larger than
    needed, so many samples fall outside and are reflected."""
    calls = []

    def f(x):
        assert _inside(x, 0, 10), x
        calls.append(1)
        return float(((x + 1) ** 2).sum())

    res = minimize(f, np.full(5, 0.5), 2.0, structure, seed=1, bounds=(0, 10), ftarget=5 + 1e-8,
                   budget=12000, **kw)
    assert res.fun - 5 < 1e-8, (res.fun, res.nfev, res.message)
    assert _inside(res.x, 0, 10) and _inside(res.xmean, 0, 10)
    assert len(calls) == res.nfev


def test_optimum_inside_with_a_large_sigma0():
    """Rosenbrock (optimum 1) in [−2, 2]^5 from σ0 = 3 (wider than the box)."""
    f = problems.get("rosenbrock", 5)
    res = minimize(f, np.zeros(5), 3.0, vectorized=True, seed=2, bounds=(-2, 2), ftarget=1e-8,
                   budget=20000)
    assert res.fun < 1e-8, (res.fun, res.nfev, res.message)


def test_per_coordinate_and_one_sided_bounds():
    """Optimum x* = (1, −2, 3, …) of Σ (x − x*)² clipped by bounds on a few coordinates."""
    d = 6
    xstar = np.array([1.0, -2.0, 3.0, 0.5, -0.5, 2.0])
    lower = [None, -1.0, -np.inf, 0.0, -1.0, None]
    upper = [0.5, np.inf, 2.0, None, 1.0, None]
    lo = np.array([-np.inf, -1, -np.inf, 0, -1, -np.inf])
    hi = np.array([0.5, np.inf, 2, np.inf, 1, np.inf])
    best = np.clip(xstar, lo, hi)
    fstar = float(((best - xstar) ** 2).sum())

    def f(X):
        assert np.all(X >= lo) and np.all(X <= hi)
        return ((X - xstar) ** 2).sum(-1)

    res = minimize(f, np.zeros(d), 1.0, "diagonal", vectorized=True, seed=3,
                   bounds=(lower, upper), ftarget=fstar + 1e-8, budget=15000)
    assert res.fun - fstar < 1e-8, (res.fun - fstar, res.nfev, res.message)
    np.testing.assert_allclose(res.x, best, atol=1e-4)


def test_ask_is_in_the_box_and_tell_learns_from_the_raw_samples():
    es = NaturalES(np.full(4, 0.9), 0.5, seed=4, bounds=(0, 1))
    X = es.ask()
    Z, Xa, Xraw = es._pending[-1]
    assert _inside(X, 0, 1) and not _inside(Xraw, 0, 1)
    np.testing.assert_array_equal(X, es.bounds.reflect(Xraw))
    np.testing.assert_allclose(Xraw, 0.9 + 0.5 * Z, rtol=1e-15)
    m, s = es.mean, es.sigma
    f = (X ** 2).sum(1)
    es.tell(X, f)
    # the mean moved by σ Σ w⁺ z of the raw z, ranked by f + penalty, then projected on the box
    from natgrad_es.es.shaping import assign

    ranked = f + es._penalty.box.squared_violation(Xraw) @ np.ones(4) / 4  # γ = 1 before update
    w = assign(ranked, es.parameters.weights.positive)
    np.testing.assert_allclose(es.mean, np.clip(m + s * (w @ Z), 0, 1), rtol=1e-12)


def test_bounds_far_away_change_nothing():
    """Bounds that no sample reaches give the unbounded run bit for bit."""
    f = problems.get("ellipsoid", 4)
    a = NaturalES(np.full(4, 0.5), 0.3, seed=5)
    b = NaturalES(np.full(4, 0.5), 0.3, seed=5, bounds=(-1e3, 1e3))
    for _ in range(40):
        Xa, Xb = a.ask(), b.ask()
        np.testing.assert_array_equal(Xa, Xb)
        a.tell(Xa, f(Xa))
        b.tell(Xb, f(Xb))
    np.testing.assert_array_equal(a.mean, b.mean)
    assert a.sigma == b.sigma and a.result.fbest == b.result.fbest


def test_changed_rows_are_accepted_and_xbest_stays_in_the_box():
    """The user may change what ask returned (here: rounding); a row told outside the box is
    ranked with its penalty but never becomes xbest."""
    es = NaturalES(np.full(3, 0.8), 0.4, seed=6, bounds=(0, 1))
    for _ in range(30):
        X = np.round(es.ask(), 2)
        X[0] = 1.5  # outside: told anyway
        f = ((X - 2) ** 2).sum(1)
        es.tell(X, f)
    assert _inside(es.result.xbest, 0, 1) and _inside(es.mean, 0, 1)
    assert es.result.fbest < 3.5


def test_state_dict_with_bounds_continues_identically():
    f = problems.get("sphere", 4)

    def shifted(X):
        return f(X + 1)

    a = NaturalES(np.full(4, 0.5), 0.5, seed=7, bounds=(0, [1, 1, 2, None]))
    for _ in range(10):
        X = a.ask()
        a.tell(X, shifted(X))
    X = a.ask()  # a pending generation with reflected rows travels too
    b = NaturalES.from_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    assert b.bounds == a.bounds
    for es in (a, b):
        es.tell(X, shifted(X))
        for _ in range(10):
            Y = es.ask()
            es.tell(Y, shifted(Y))
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a._penalty.gamma, b._penalty.gamma)
    assert a.sigma == b.sigma and a.result.fbest == b.result.fbest


def test_torch_with_bounds():
    torch = pytest.importorskip("torch")
    es = NaturalES(torch.full((4,), 0.5, dtype=torch.float32), 0.5, "diagonal", seed=0,
                   bounds=(0, [1, 1, 1, None]))
    for _ in range(60):
        X = es.ask()
        assert isinstance(X, torch.Tensor) and X.dtype == torch.float32
        assert bool((X >= 0).all()) and bool((X[:, :3] <= 1).all())
        es.tell(X, ((X + 1) ** 2).sum(-1))
    assert isinstance(es.result.xbest, torch.Tensor)
    assert math.isclose(es.result.fbest, 4.0, abs_tol=1e-2)


def test_penalty_weights_grow_while_the_mean_is_outside():
    from natgrad_es.es.bounds import BoundPenalty

    box = Box(np.zeros(2), np.ones(2))
    pen = BoundPenalty(box)
    f = np.arange(10.0)
    pen.update(f, np.array([0.5, 0.5]), 0.1, np.ones(2), 3.0, 10)
    g0 = pen.gamma.copy()
    assert pen.initialized and np.all(g0 > 0)
    for _ in range(20):
        pen.update(f, np.array([0.5, -5.0]), 0.1, np.ones(2), 3.0, 10)
    assert pen.gamma[1] > 2 * g0[1] and pen.gamma[0] == pytest.approx(g0[0])
