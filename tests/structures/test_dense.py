"""Dense factor against dense references (the FactorTests mixin), plus the Gram-matrix update."""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import strategies as st

from natgrad_es.structures import Dense, DenseTangent, make
from natgrad_es.testing.factor_tests import FactorTests, random_seed


class TestDense(FactorTests):
    dense_structure = True

    def draw_factor(self, data, backend, dtype):
        d = data.draw(st.integers(1, 7), label="d")
        rng = random_seed(data)
        A = np.eye(d) + 0.4 * rng.standard_normal((d, d)) / np.sqrt(d)
        return Dense(A, backend=backend, dtype=dtype)

    def algebra_basis(self, factor):
        d = factor.dim
        return np.eye(d * d).reshape(d * d, d, d)

    def large_factor(self, dim):
        return make("full", dim)


@pytest.mark.parametrize("n, d", [(3, 12), (6, 7), (12, 5)])  # Gram path when n < d, dense otherwise
@pytest.mark.parametrize("method", ["expm", "truncated"])
def test_gram_update_equals_dense_exponential(n, d, method):
    rng = np.random.default_rng(n * d)
    A = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    Z = rng.standard_normal((n, d))
    w = rng.standard_normal(n)
    w -= w.mean()
    factor = Dense(A)
    T = factor.natural_gradient(Z, w)
    assert T.matrix is None and T.rows.shape == (n, d)  # kept as scalar + rank n, no d×d
    g, T0 = factor.split_trace(T)
    G = Z.T @ np.diag(w) @ Z - w.sum() * np.eye(d)
    c = 0.35
    M = c * (G - np.trace(G) / d * np.eye(d))
    for order in (1, 2, 3, 4):
        if method == "expm":
            expected, got = A @ scipy.linalg.expm(M), factor.retract(T0, c)
        else:
            expected = A @ sum(np.linalg.matrix_power(M, j) / np.prod(range(1, j + 1))
                               for j in range(order + 1))
            got = factor.retract(T0, c, method="truncated", order=order)
        np.testing.assert_allclose(got.to_dense(), expected, atol=1e-10, rtol=0)


def test_dense_tangent_from_project_uses_matrix():
    factor = make("full", 4)
    G = np.arange(16.0).reshape(4, 4)
    T = factor.project(G)
    assert isinstance(T, DenseTangent) and T.rows is None
    np.testing.assert_allclose(T.to_dense(), 0.5 * (G + G.T))


def test_dense_rejects_non_square_and_non_finite():
    with pytest.raises(ValueError, match="square"):
        Dense(np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        Dense(np.array([[1.0, np.inf], [0.0, 1.0]]))


def test_sums_of_many_tangents_fold_into_a_matrix():
    rng = np.random.default_rng(5)
    factor = make("full", 6)
    total, dense = None, np.zeros((6, 6))
    for _ in range(5):  # 5 × 3 rows > d = 6: the sum must switch to the d×d form
        Z, w = rng.standard_normal((3, 6)), rng.standard_normal(3)
        T = factor.natural_gradient(Z, w)
        dense += T.to_dense()
        total = T if total is None else total + T
    assert total.rows is None and total.matrix.shape == (6, 6)
    np.testing.assert_allclose(total.to_dense(), dense, atol=1e-12)
    np.testing.assert_allclose(factor.retract(total, 0.1).to_dense(), scipy.linalg.expm(0.1 * dense),
                               atol=1e-12)
