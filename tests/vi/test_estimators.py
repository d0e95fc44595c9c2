"""The four estimators of κ(AᵀĤA − I) and Aᵀĝ against their exact values on a Gaussian target."""

import numpy as np
import pytest
from vi_helpers import correlated_target

from natgrad_es.structures import make
from natgrad_es.vi import estimators as E
from natgrad_es.vi.oracle import LogJoint

STRUCTURES = [("full", {}), ("diagonal", {}), ("lowrank", {"rank": 2}), ("kronecker", {"shape": (2, 3)}),
              ("blockdiag", {"blocks": [2, 4]})]


def _moved_factor(name, kw, seed=0):
    """A non-trivial factor of the structure (a few random natural-gradient steps from 0.5·I)."""
    rng = np.random.default_rng(seed)
    f = make(name, 6, **kw)
    f = f.retract(f.natural_gradient(np.zeros((1, 6)), np.zeros(1)).add_identity(np.log(0.5)), 1.0)
    Z = rng.standard_normal((12, 6))
    return f.retract(f.natural_gradient(Z, rng.standard_normal(12) / 12), 0.5)


def _exact(target, mean, factor):
    A = factor.to_dense()
    X = factor.project(A.T @ target.P @ A - np.eye(6))
    u = A.T @ (target.P @ (mean - target.mu))
    return X.to_dense(), u


def _draw(n, seed, antithetic=True):
    rng = np.random.default_rng(seed)
    if antithetic:
        half = rng.standard_normal((n // 2, 6))
        return np.concatenate([half, -half])
    return rng.standard_normal((n, 6))


@pytest.mark.parametrize("name, kw", STRUCTURES)
@pytest.mark.parametrize("estimator", ["hessian", "delta"])
def test_curvature_estimators_are_exact_on_a_quadratic(name, kw, estimator):
    target = correlated_target()
    oracle = LogJoint(target, 6, grad=target.grad, hess=target.hess)
    mean = np.linspace(-1, 1, 6)
    factor = _moved_factor(name, kw)
    est = E.ESTIMATORS[estimator](oracle, mean, factor, _draw(4, 0))
    X, u = _exact(target, mean, factor)
    np.testing.assert_allclose(est.tangent.to_dense(), X, atol=1e-10)
    np.testing.assert_allclose(est.u, u, atol=1e-10)  # mirrored pairs: the mean gradient is exact


@pytest.mark.parametrize("name, kw", STRUCTURES)
@pytest.mark.parametrize("estimator", ["stein", "zeroth"])
@pytest.mark.parametrize("antithetic", [True, False])
def test_sampled_estimators_are_unbiased(name, kw, estimator, antithetic):
    target = correlated_target()
    oracle = LogJoint(target, 6, grad=target.grad)
    mean = np.linspace(-1, 1, 6)
    factor = _moved_factor(name, kw)
    X, u = _exact(target, mean, factor)
    reps = 400
    Xs, us = [], []
    for r in range(reps):
        est = E.ESTIMATORS[estimator](oracle, mean, factor, _draw(16, r, antithetic), antithetic=antithetic)
        Xs.append(est.tangent.to_dense())
        us.append(est.u)
    for samples, exact in ((np.array(Xs), X), (np.array(us), u)):
        err = samples.mean(0) - exact
        se = samples.std(0) / np.sqrt(reps) + 1e-12
        assert np.abs(err / se).max() < 5.0  # unbiased: within 5 standard errors, entry by entry


@pytest.mark.parametrize("name, kw", STRUCTURES)
def test_stein_rows_equal_the_projected_dense_estimate(name, kw):
    """The 2N weighted rows give exactly κ(sym((1/N) Σ zᵢ rᵢᵀ)) — without a d×d matrix."""
    target = correlated_target()
    oracle = LogJoint(target, 6, grad=target.grad)
    mean = np.linspace(-1, 1, 6)
    factor = _moved_factor(name, kw)
    Z = _draw(8, 1)
    est = E.stein(oracle, mean, factor, Z)
    A = factor.to_dense()
    R = (-target.grad(mean + Z @ A.T)) @ A - Z  # rows Aᵀ∇ℓ − z
    G = Z.T @ R / len(Z)
    np.testing.assert_allclose(est.tangent.to_dense(), factor.project(0.5 * (G + G.T)).to_dense(), atol=1e-10)


def test_zeroth_order_estimate_vanishes_at_the_exact_posterior():
    """With the KL integrand ℓ + log q the estimate is exactly zero once q = p (no noise floor)."""
    target = correlated_target()
    oracle = LogJoint(target, 6)
    L = np.linalg.cholesky(np.linalg.inv(target.P))
    from natgrad_es.structures import Dense

    factor = Dense(L)
    for antithetic in (True, False):
        est = E.zeroth(oracle, target.mu, factor, _draw(10, 3, antithetic), antithetic=antithetic)
        assert float(est.tangent.norm()) < 1e-10
        assert np.abs(est.u).max() < 1e-10
        est = E.stein(LogJoint(target, 6, grad=target.grad), target.mu, factor, _draw(10, 3))
        assert float(est.tangent.norm()) < 1e-10


def test_zeroth_order_needs_two_groups():
    target = correlated_target()
    with pytest.raises(ValueError, match="at least 2"):
        E.zeroth(LogJoint(target, 6), target.mu, make("full", 6), _draw(2, 0))
