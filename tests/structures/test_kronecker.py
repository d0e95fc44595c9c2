"""Kronecker factor against dense references (the FactorTests mixin)."""

import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import strategies as st

from natgrad_es.structures import Kronecker, make
from natgrad_es.testing.factor_tests import FactorTests, random_seed, to_numpy


def _random_dense(rng, d):
    return np.eye(d) + 0.4 * rng.standard_normal((d, d)) / np.sqrt(d)


class TestKronecker(FactorTests):
    def draw_factor(self, data, backend, dtype):
        d1 = data.draw(st.integers(1, 4), label="d1")
        d2 = data.draw(st.integers(1, 4), label="d2")
        rng = random_seed(data)
        return Kronecker(_random_dense(rng, d1), _random_dense(rng, d2), backend=backend,
                         dtype=dtype)

    def algebra_basis(self, factor):
        d1, d2 = factor.shape
        e1 = np.eye(d1 * d1).reshape(-1, d1, d1)
        e2 = np.eye(d2 * d2).reshape(-1, d2, d2)
        return np.concatenate([np.stack([np.kron(E, np.eye(d2)) for E in e1]),
                               np.stack([np.kron(np.eye(d1), E) for E in e2])])

    def large_factor(self, dim):
        d1 = max(r for r in range(1, math.isqrt(dim) + 1) if dim % r == 0)
        return make("kronecker", dim, shape=(d1, dim // d1))

    def retract_reference(self, factor, T, t, method, order):
        # the truncated retraction acts on each Kronecker factor: A₁h_p(t(M₁+s/2)) ⊗ A₂h_p(t(M₂+s/2))
        if method == "expm":
            return super().retract_reference(factor, T, t, method, order)
        M = to_numpy(T.to_dense())
        d1, d2 = factor.shape
        d = factor.dim
        s = np.trace(M) / d
        M4 = M.reshape(d1, d2, d1, d2)
        M1 = np.einsum("ajbj->ab", M4) / d2 - s * np.eye(d1)
        M2 = np.einsum("iaib->ab", M4) / d1 - s * np.eye(d2)

        def h(X):
            return sum(np.linalg.matrix_power(X, j) / math.factorial(j) for j in range(order + 1))

        A1, A2 = to_numpy(factor.A1), to_numpy(factor.A2)
        return np.kron(A1 @ h(t * (M1 + s / 2 * np.eye(d1))), A2 @ h(t * (M2 + s / 2 * np.eye(d2))))

    def assert_in_group(self, factor, dense):
        # Van Loan's rearrangement of a Kronecker product A₁ ⊗ A₂ is the rank-one matrix vec A₁ vec A₂ᵀ
        d1, d2 = factor.shape
        R = dense.reshape(d1, d2, d1, d2).transpose(0, 2, 1, 3).reshape(d1 * d1, d2 * d2)
        sv = np.linalg.svd(R, compute_uv=False)
        assert sv[1:].sum() <= 1e-4 * sv[0], "retraction left the Kronecker group"


def test_kronecker_acts_on_matrix_shaped_rows():
    rng = np.random.default_rng(0)
    A1, A2 = _random_dense(rng, 3), _random_dense(rng, 4)
    X = rng.standard_normal((5, 3, 4))
    out = Kronecker(A1, A2).apply(X.reshape(5, 12)).reshape(5, 3, 4)
    np.testing.assert_allclose(out, A1 @ X @ A2.T, atol=1e-12)


def test_kronecker_expm_is_exact_for_large_steps():
    rng = np.random.default_rng(3)
    f = make("kronecker", 6, shape=(2, 3))
    T = f.natural_gradient(rng.standard_normal((9, 6)), rng.standard_normal(9))
    np.testing.assert_allclose(f.retract(T, 2.0).to_dense(), scipy.linalg.expm(2.0 * T.to_dense()),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shape", [(2, 4), (3, 4), (9,), "3x3", (0, 9), (9, 1, 1)])
def test_kronecker_shape_must_multiply_to_dim(shape):
    with pytest.raises(ValueError, match="shape"):
        make("kronecker", 9, shape=shape)
