"""Block-triangular low-rank factor against dense references (the FactorTests mixin)."""

import numpy as np
import pytest
from hypothesis import strategies as st

from natgrad_es.structures import LowRank, make
from natgrad_es.testing.factor_tests import FactorTests, entry_basis, random_seed


class TestLowRank(FactorTests):
    def draw_factor(self, data, backend, dtype):
        d = data.draw(st.integers(2, 9), label="d")
        k = data.draw(st.integers(1, d - 1), label="rank")
        rng = random_seed(data)
        A11 = np.eye(k) + 0.4 * rng.standard_normal((k, k)) / np.sqrt(k)
        A21 = 0.5 * rng.standard_normal((d - k, k))
        D = np.exp(0.4 * rng.standard_normal(d - k))
        return LowRank(A11, A21, D, backend=backend, dtype=dtype)

    def algebra_basis(self, factor):
        d, k = factor.dim, factor.rank
        mask = np.zeros((d, d), dtype=bool)
        mask[:k, :k] = True
        mask[k:, :k] = True
        mask[np.arange(k, d), np.arange(k, d)] = True
        return entry_basis(mask)

    def large_factor(self, dim):
        return make("lowrank", dim, rank=3)


def test_lowrank_one_sided_block_weighs_twice():
    # algorithms.md §3: M = [[G11, 0], [2 G21, diag G22]] in the expm(η/2 · M) convention
    rng = np.random.default_rng(1)
    Z, w = rng.standard_normal((5, 6)), rng.standard_normal(5)
    G = Z.T @ np.diag(w) @ Z - w.sum() * np.eye(6)
    M = make("lowrank", 6, rank=2).natural_gradient(Z, w).to_dense()
    np.testing.assert_allclose(M[:2, :2], G[:2, :2], atol=1e-12)
    np.testing.assert_allclose(M[2:, :2], 2 * G[2:, :2], atol=1e-12)
    np.testing.assert_allclose(np.diag(M)[2:], np.diag(G)[2:], atol=1e-12)
    assert np.all(M[:2, 2:] == 0) and np.all(M[2:, 2:][~np.eye(4, dtype=bool)] == 0)


def test_lowrank_large_step_expm_is_accurate():
    rng = np.random.default_rng(2)
    factor = make("lowrank", 8, rank=3)
    T = factor.natural_gradient(rng.standard_normal((20, 8)), rng.standard_normal(20))
    import scipy.linalg
    np.testing.assert_allclose(factor.retract(T, 3.0).to_dense(),
                               scipy.linalg.expm(3.0 * T.to_dense()), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rank", [0, 5, 6, -1, 2.5, True])
def test_rank_out_of_range(rank):
    with pytest.raises(ValueError, match="rank"):
        make("lowrank", 5, rank=rank)


def test_lowrank_shape_errors():
    with pytest.raises(ValueError, match="A21 must have shape"):
        LowRank(np.eye(2), np.zeros((3, 3)), np.ones(3))
    with pytest.raises(ValueError, match="zero entry"):
        LowRank(np.eye(2), np.zeros((2, 2)), np.array([1.0, 0.0]))
