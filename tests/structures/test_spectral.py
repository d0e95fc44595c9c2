"""Spectral factor S = Q diag(λ) Qᵀ: the FactorTests mixin plus power, first-order and drift checks."""

import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from natgrad_es.structures import Spectral, make
from natgrad_es.structures.spectral import newton_schulz
from natgrad_es.testing.factor_tests import SETTINGS, FactorTests, random_seed, to_numpy


def _random_spectral(rng, d, eps=0.0, **kw):
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    lam = np.exp(np.linspace(-1.0, 1.0, d) + 0.05 * rng.standard_normal(d)) if d > 1 else np.ones(1)
    return Spectral(Q, lam, eps=eps, **kw)


def _polish(Q):
    return Q @ (1.5 * np.eye(len(Q)) - 0.5 * Q.T @ Q)


def _series(M, p):
    return sum(np.linalg.matrix_power(M, j) / math.factorial(j) for j in range(p + 1))


class TestSpectral(FactorTests):
    dense_structure = True  # Q is d×d: the structure is dense by nature

    def draw_factor(self, data, backend, dtype):
        d = data.draw(st.integers(1, 7), label="d")
        # ε = 0: the exact Fisher projection, which for the full SPD family is G itself
        return _random_spectral(random_seed(data), d, backend=backend, dtype=dtype)

    def algebra_basis(self, factor):
        d = factor.dim
        return np.eye(d * d).reshape(d * d, d, d)

    def large_factor(self, dim):
        return make("spectral", dim)

    def retract_reference(self, factor, T, t, method, order):
        Q, lam = to_numpy(factor.Q), to_numpy(factor.lam)
        X = 2 * t * to_numpy(T.K)
        if method == "expm":
            Qn = Q @ scipy.linalg.expm(X)
        else:  # h_p of X/2^s polished twice, squared s times, product polished once
            s = max(0, math.ceil(math.log2(np.linalg.norm(X) / 0.25))) if np.linalg.norm(X) > 0.25 else 0
            R = _polish(_polish(_series(X / 2**s, order)))
            for _ in range(s):
                R = R @ R
            Qn = _polish(Q @ R)
        lam = lam * np.exp(2 * t * to_numpy(T.mu))
        return (Qn * np.sqrt(lam)) @ Qn.T

    def assert_in_group(self, factor, dense):
        Q = to_numpy(factor.Q)
        assert np.abs(Q.T @ Q - np.eye(factor.dim)).max() < 1e-3
        assert np.allclose(dense, dense.T, atol=1e-4 * (1 + np.abs(dense).max()))

    @settings(SETTINGS, max_examples=6)
    @given(data=st.data())
    def test_truncated_error_shrinks_with_order(self, data):
        # the Newton–Schulz polish removes the symmetric part of the series' error, so an odd order
        # can gain one power: require *at least* t^(p+1)
        factor = _random_spectral(random_seed(data), data.draw(st.integers(2, 6)))
        rng = random_seed(data)
        T = factor.natural_gradient(rng.standard_normal((4, factor.dim)), rng.standard_normal(4))
        T = T * (1.0 / float(T.norm()))
        exact = {t: factor.retract(T, t).to_dense() for t in (0.02, 0.04)}
        for order in (1, 2, 3, 4):
            err = {t: np.linalg.norm(factor.retract(T, t, "truncated", order).to_dense() - exact[t])
                   for t in exact}
            if err[0.02] < 1e-13:
                continue  # below round-off: nothing to measure
            assert math.log2(err[0.04] / err[0.02]) > order + 0.65


@pytest.mark.parametrize("p", [-1, -0.5, 0.5, 1, 2])
def test_power_matches_eigh(p):
    rng = np.random.default_rng(0)
    f = _random_spectral(rng, 6)
    S = to_numpy(f.power(1))
    w, V = np.linalg.eigh(S)
    ref = (V * w**p) @ V.T
    np.testing.assert_allclose(f.power(p), ref, atol=1e-10)
    X = rng.standard_normal((4, 6))
    np.testing.assert_allclose(f.power(p, X), X @ ref, atol=1e-10)
    np.testing.assert_allclose(f.to_dense() @ f.to_dense(), S, atol=1e-10)


@pytest.mark.parametrize("eps", [0.0, 1e-2, 1.0])
def test_tangent_is_first_order_step_of_covariance(eps):
    # S ← S + 2t A M A + O(t²) with M = T.to_dense(), damped or not
    rng = np.random.default_rng(1)
    f = _random_spectral(rng, 5, eps=eps)
    T = f.natural_gradient(rng.standard_normal((7, 5)), rng.standard_normal(7))
    A, M, S = f.to_dense(), T.to_dense(), f.power(1)
    errs = []
    for t in (1e-3, 2e-3):
        new = f.retract(T, t).power(1)
        errs.append(np.abs(new - (S + 2 * t * A @ M @ A)).max())
    assert errs[1] / errs[0] > 3.5  # the remainder is O(t²)


def test_damping_shrinks_rotations_between_close_eigenvalues():
    Q = np.eye(3)
    G = np.ones((3, 3))
    near = Spectral(Q, [1.0, 1.0 + 1e-6, 2.0], eps=1e-2).project(G)
    assert abs(near.K[0, 1]) < 1e-3 and abs(near.K[0, 2]) > 0.1
    flat = Spectral(Q, np.ones(3), eps=0.0).project(G)  # S = I: rotations are meaningless, not NaN
    assert np.all(flat.K == 0) and np.all(np.isfinite(flat.mu))


@pytest.mark.parametrize("method", ["expm", "cayley", "truncated"])
def test_q_stays_orthogonal_over_many_steps_float64(method):
    rng = np.random.default_rng(2)
    f = _random_spectral(rng, 8, eps=1e-2)
    Z = rng.standard_normal((10_000, 6, 8))
    w = np.linspace(0.3, -0.3, 6)
    for i in range(10_000):
        _, T0 = f.split_trace(f.natural_gradient(Z[i], w))
        f = f.retract(T0, 0.02, method=method)
    Q = f.Q
    assert np.abs(Q.T @ Q - np.eye(8)).max() < 1e-6
    assert np.all(np.isfinite(f.lam)) and np.all(f.lam > 0)


def test_q_drift_is_bounded_in_float32():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    f = make("spectral", 8, backend="torch", dtype="float32")
    w = torch.linspace(0.3, -0.3, 6)
    for _ in range(3000):
        _, T0 = f.split_trace(f.natural_gradient(torch.randn(6, 8, generator=gen), w))
        f = f.retract(T0, 0.02, method="truncated", order=2)
    err = (f.Q.mT @ f.Q - torch.eye(8)).abs().max().item()
    assert err < 1e-5


def test_newton_schulz_squares_the_error():
    rng = np.random.default_rng(3)
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0] @ (np.eye(6) + 1e-4 * rng.standard_normal((6, 6)))
    before = np.abs(Q.T @ Q - np.eye(6)).max()
    after = np.abs(newton_schulz(Q).T @ newton_schulz(Q) - np.eye(6)).max()
    assert after < 10 * before**2


def test_bad_spectral_input():
    with pytest.raises(ValueError, match="orthogonal"):
        Spectral(np.ones((3, 3)), np.ones(3))
    with pytest.raises(ValueError, match="positive"):
        Spectral(np.eye(3), np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="lam must have shape"):
        Spectral(np.eye(3), np.ones(2))
    with pytest.raises(ValueError, match="eps"):
        Spectral(np.eye(2), np.ones(2), eps=-1.0)
    with pytest.raises(TypeError, match="different points"):
        f, g = make("spectral", 2), make("spectral", 2)
        f.project(np.eye(2)) + g.project(np.eye(2))
