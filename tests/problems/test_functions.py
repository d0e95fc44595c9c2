"""problems.functions: optimum values, batched vs single point, numpy vs torch."""

from __future__ import annotations

import numpy as np
import pytest

import problems
from problems.functions import ellipsoid_coefficients, rotation

CASES = [(name, d) for name in problems.names() for d in (2, 5, 10)]


@pytest.mark.parametrize("name,d", CASES)
def test_value_at_optimum_is_fopt(name, d):
    p = problems.get(name, d)
    assert p.dim == d and p.xopt.shape == (d,)
    assert float(p(p.xopt)) == p.fopt
    assert np.all(p(p.xopt + 1e-3 * np.ones((3, d))) > p.fopt)


@pytest.mark.parametrize("name,d", CASES)
def test_batched_equals_single_point(name, d):
    p = problems.get(name, d)
    X = np.random.default_rng(0).standard_normal((7, d))
    batched = p(X)
    assert batched.shape == (7,)
    np.testing.assert_allclose(batched, [p(x) for x in X], rtol=1e-14)
    assert np.ndim(p(X[0])) == 0


@pytest.mark.parametrize("name,d", CASES)
def test_numpy_equals_torch(name, d):
    torch = pytest.importorskip("torch")
    p = problems.get(name, d)
    X = np.random.default_rng(1).standard_normal((6, d))
    out = p(torch.as_tensor(X))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (6,)
    np.testing.assert_allclose(out.numpy(), p(X), rtol=1e-12)
    out32 = p(torch.as_tensor(X, dtype=torch.float32))
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), p(X), rtol=1e-4)


def test_known_values():
    np.testing.assert_allclose(problems.sphere(np.array([[1.0, 2.0], [0.0, 3.0]])), [5.0, 9.0])
    np.testing.assert_allclose(problems.ellipsoid(np.array([1.0, 1.0])), 1 + 1e6)
    np.testing.assert_allclose(ellipsoid_coefficients(3), [1.0, 1e3, 1e6])
    assert problems.rosenbrock(np.zeros(2)) == 1.0
    assert problems.rosenbrock(np.array([1.0, 0.0])) == 100.0
    assert problems.sphere([1, 2]) == 5.0  # lists and integers are accepted


def test_rotated_ellipsoid_rotation():
    R = rotation(6, seed=3)
    np.testing.assert_allclose(R @ R.T, np.eye(6), atol=1e-12)
    np.testing.assert_array_equal(R, rotation(6, seed=3))
    assert not np.allclose(R, rotation(6, seed=4))
    f = problems.RotatedEllipsoid(6, seed=3)
    x = np.random.default_rng(2).standard_normal(6)
    np.testing.assert_allclose(f(x), problems.ellipsoid(R @ x), rtol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown problem"):
        problems.get("rastrigin", 3)
    with pytest.raises(ValueError, match="dim"):
        problems.get("sphere", 0)
    with pytest.raises(ValueError, match="d >= 2|dim >= 2"):
        problems.get("rosenbrock", 1)
    with pytest.raises(ValueError, match="last axis"):
        problems.RotatedEllipsoid(3)(np.zeros(4))
