"""GaussianVI(mean_step="newton"): m ← m − β Ĥ⁻¹ĝ from the dense AᵀĤA, against the natural step."""

import numpy as np
import pytest
from vi_helpers import correlated_target

from natgrad_es.vi import GaussianVI


def _ill_conditioned_target(d=8, seed=1):
    # correlation in the coordinates: the diagonal family's natural mean step is a slow Jacobi iteration
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((d, d)) / np.sqrt(d)
    P = L @ L.T + 0.05 * np.eye(d)
    target = correlated_target(d=d)
    target.P = P
    return target


@pytest.mark.parametrize("structure, kw", [("diagonal", {}), ("lowrank", {"rank": 2})])
def test_newton_mean_step_lands_on_the_mean_in_one_step(structure, kw):
    # delta on a Gaussian target: Ĥ = P, ĝ = P(m − μ) exactly, so β = 1 puts m on μ at once
    target = _ill_conditioned_target()
    vi = GaussianVI(target, target.dim, structure, estimator="delta", lr=1.0, mean_step="newton",
                    grad=target.grad, hess=target.hess, **kw)
    m0 = vi.posterior.mean
    beta = vi.step()["beta"]  # β = 1, unless the step cap on the factor's move shortened it
    np.testing.assert_allclose(vi.posterior.mean, m0 + beta * (target.mu - m0), atol=1e-10)


def test_newton_mean_step_keeps_the_fixed_point_and_is_faster_on_a_restricted_family():
    target = _ill_conditioned_target()
    runs = {}
    for mean_step in ("natural", "newton"):
        vi = GaussianVI(target, target.dim, "diagonal", estimator="delta", lr=0.2, mean_step=mean_step,
                        grad=target.grad, hess=target.hess)
        steps = 0
        while np.abs(vi.posterior.mean - target.mu).max() > 1e-8 and steps < 5000:
            vi.step()
            steps += 1
        for _ in range(300):  # and on, for the factor
            vi.step()
        runs[mean_step] = (steps, vi)
    assert runs["newton"][0] * 5 < runs["natural"][0], {k: v[0] for k, v in runs.items()}
    # both reach the family's optimum: precision diag(P), mean μ
    for _, vi in runs.values():
        np.testing.assert_allclose(1.0 / np.diag(vi.posterior.covariance()), np.diag(target.P),
                                   rtol=1e-6)


def test_newton_mean_step_with_the_hessian_estimator():
    target = _ill_conditioned_target()
    vi = GaussianVI(target, target.dim, "diagonal", estimator="hessian", mean_step="newton", seed=0,
                    grad=target.grad, hess=target.hess)
    vi.fit(200)
    np.testing.assert_allclose(vi.posterior.mean, target.mu, atol=1e-8)


def test_newton_mean_step_needs_a_curvature_estimator():
    target = correlated_target()
    with pytest.raises(ValueError, match="mean_step='newton' needs"):
        GaussianVI(target, target.dim, "diagonal", estimator="stein", mean_step="newton")
    with pytest.raises(ValueError, match="momentum"):
        GaussianVI(target, target.dim, "diagonal", estimator="delta", mean_step="newton", momentum=0.5,
                   grad=target.grad, hess=target.hess)
    with pytest.raises(ValueError, match="mean_step"):
        GaussianVI(target, target.dim, "diagonal", mean_step="quasi")
