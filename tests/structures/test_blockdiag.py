"""Block-diagonal factor against dense references (the FactorTests mixin)."""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import strategies as st

from natgrad_es.structures import BlockDiagonal, Dense, Diagonal, Kronecker, make
from natgrad_es.testing.factor_tests import FactorTests, entry_basis, random_seed


class TestBlockDiagonal(FactorTests):
    def draw_factor(self, data, backend, dtype):
        sizes = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=4), label="sizes")
        rng = random_seed(data)
        blocks = []
        for i, s in enumerate(sizes):
            if i % 3 == 2:  # mix structures: blocks are any Factor
                blocks.append(Diagonal(np.exp(0.3 * rng.standard_normal(s)), backend=backend,
                                       dtype=dtype))
            else:
                A = np.eye(s) + 0.4 * rng.standard_normal((s, s)) / np.sqrt(s)
                blocks.append(Dense(A, backend=backend, dtype=dtype))
        return BlockDiagonal(blocks)

    def algebra_basis(self, factor):
        d = factor.dim
        mask = np.zeros((d, d), dtype=bool)
        o = 0
        for b in factor.blocks:
            s = b.dim
            mask[o:o + s, o:o + s] = True if isinstance(b, Dense) else np.eye(s, dtype=bool)
            o += s
        return entry_basis(mask)

    def large_factor(self, dim):
        return make("blockdiag", dim, blocks=max(1, dim // 4))


def test_blockdiag_of_kronecker_blocks_matches_dense():
    rng = np.random.default_rng(0)
    k = Kronecker(np.eye(2) + 0.1 * rng.standard_normal((2, 2)), np.diag([1.0, 2.0, 3.0]))
    f = BlockDiagonal([k, Dense(np.eye(2) * 2)])
    Z = rng.standard_normal((4, 8))
    dense = scipy.linalg.block_diag(k.to_dense(), 2 * np.eye(2))
    np.testing.assert_allclose(f.apply(Z), Z @ dense.T, atol=1e-12)


@pytest.mark.parametrize("blocks, message", [([3, 3], "sum to 6, not to dim=7"),
                                             ([3, 0, 4], "positive integer"),
                                             (0, "between 1 and dim"), (8, "between 1 and dim"),
                                             ([], "must not be empty")])
def test_block_sizes_must_sum_to_dim(blocks, message):
    with pytest.raises(ValueError, match=message):
        make("blockdiag", 7, blocks=blocks)


def test_block_count_splits_evenly():
    assert make("blockdiag", 10, blocks=3).sizes == (4, 3, 3)
