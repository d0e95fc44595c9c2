"""Diagonal factor against dense references (the FactorTests mixin)."""

import numpy as np
import pytest
from hypothesis import strategies as st

from natgrad_es.structures import Diagonal, make
from natgrad_es.testing.factor_tests import FactorTests, entry_basis, random_seed


class TestDiagonal(FactorTests):
    def draw_factor(self, data, backend, dtype):
        d = data.draw(st.integers(1, 9), label="d")
        rng = random_seed(data)
        signs = np.where(rng.random(d) < 0.2, -1.0, 1.0)
        return Diagonal(signs * np.exp(0.5 * rng.standard_normal(d)), backend=backend, dtype=dtype)

    def algebra_basis(self, factor):
        return entry_basis(np.eye(factor.dim, dtype=bool))

    def large_factor(self, dim):
        return make("diagonal", dim)


def test_diagonal_rejects_zero_and_bad_shape():
    with pytest.raises(ValueError, match="zero entry"):
        Diagonal([1.0, 0.0])
    with pytest.raises(ValueError, match="1-D"):
        Diagonal(np.ones((2, 2)))
