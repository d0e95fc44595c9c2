"""Gaussian(mean, factor, sigma) against scipy's dense multivariate normal."""

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from natgrad_es.backend import RandomStream
from natgrad_es.distribution import Gaussian
from natgrad_es.structures import make


def _moved(name, d, rng, **kw):
    f = make(name, d, **kw)
    Z = rng.standard_normal((3 * d, d))
    w = rng.standard_normal(3 * d) / d
    return f.retract(f.natural_gradient(Z, w), 0.5)


STRUCTS = [("full", {}), ("diagonal", {}), ("lowrank", {"rank": 2}), ("kronecker", {"shape": (2, 3)}),
           ("blockdiag", {"blocks": [2, 4]}), ("spectral", {})]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), which=st.sampled_from(range(len(STRUCTS))))
def test_log_prob_entropy_kl_match_dense(seed, which):
    name, kw = STRUCTS[which]
    rng = np.random.default_rng(seed)
    d = 6
    q1 = Gaussian(rng.standard_normal(d), _moved(name, d, rng, **kw), 0.7)
    q2 = Gaussian(rng.standard_normal(d), _moved(name, d, rng, **kw), 1.3)
    S1, S2 = q1.covariance(), q2.covariance()
    ref = scipy.stats.multivariate_normal(q1.mean, S1)
    X = rng.standard_normal((5, d))
    np.testing.assert_allclose(q1.log_prob(X), ref.logpdf(X), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(q1.entropy(), ref.entropy(), rtol=1e-10)
    dm = q2.mean - q1.mean
    P2 = np.linalg.inv(S2)
    kl = 0.5 * (np.trace(P2 @ S1) + dm @ P2 @ dm - d + np.linalg.slogdet(S2)[1]
                - np.linalg.slogdet(S1)[1])
    np.testing.assert_allclose(q1.kl(q2), kl, rtol=1e-9)
    assert abs(q1.kl(q1)) < 1e-10


def test_samples_have_the_right_moments():
    rng = np.random.default_rng(0)
    q = Gaussian(np.arange(4.0), _moved("full", 4, rng), 0.5)
    X, Z = q.sample(200_000, RandomStream(1), return_z=True)
    np.testing.assert_allclose(X.mean(0), q.mean, atol=0.01)
    np.testing.assert_allclose(np.cov(X.T), q.covariance(), atol=0.01)
    np.testing.assert_allclose(q.whiten(X[:10]), Z[:10], atol=1e-12)


def test_state_dict_round_trip_and_errors():
    q = Gaussian(np.zeros(3), make("diagonal", 3), 2.0)
    r = Gaussian.from_state_dict(q.state_dict())
    assert r.sigma == 2.0 and np.array_equal(r.factor.to_dense(), q.factor.to_dense())
    with pytest.raises(ValueError, match="mean must have shape"):
        Gaussian(np.zeros(4), make("full", 3))
    with pytest.raises(ValueError, match="sigma must be"):
        Gaussian(np.zeros(3), make("full", 3), -1.0)
    with pytest.raises(ValueError, match="non-finite"):
        Gaussian(np.array([0.0, np.nan, 0.0]), make("full", 3))
