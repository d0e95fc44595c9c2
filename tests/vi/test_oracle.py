"""LogJoint: torch autograd and numpy callables give the same ℓ, ∇ℓ and Hessian-vector products."""

import numpy as np
import pytest

from natgrad_es.vi.oracle import LogJoint
from problems.regression import BayesianLogisticRegression

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def logistic():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4))
    y = (rng.random(40) < 0.5).astype(float)
    return BayesianLogisticRegression(X, y, prior_var=2.0)


def test_autograd_matches_the_analytic_derivatives(logistic):
    rng = np.random.default_rng(1)
    theta = rng.standard_normal((3, 4))
    D = rng.standard_normal((2, 4))
    auto = LogJoint(logistic.log_joint, 4)
    manual = LogJoint(logistic.log_joint, 4, grad=logistic.grad_log_joint, hess=logistic.hess_log_joint)
    a = auto(theta, grad=True, directions=D)
    m = manual(theta, grad=True, directions=D)
    assert auto.source == "torch" and manual.source == "callables"
    assert isinstance(a.values, np.ndarray) and isinstance(a.hvps, np.ndarray)
    np.testing.assert_allclose(a.values, -logistic.log_joint(theta), rtol=1e-12)
    np.testing.assert_allclose(a.values, m.values, rtol=1e-12)
    np.testing.assert_allclose(a.grads, m.grads, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.hvps, m.hvps, rtol=1e-10, atol=1e-12)
    H = -logistic.hess_log_joint(theta)
    np.testing.assert_allclose(a.hvps[1, 2], H[2] @ D[1], rtol=1e-10)
    assert auto.n_values == 3 and auto.n_hvps == 6


def test_hvp_callable_and_linear_functions(logistic):
    theta = np.zeros((2, 4))
    H = logistic.hess_log_joint(theta)
    hvp = LogJoint(logistic.log_joint, 4, grad=logistic.grad_log_joint,
                   hvp=lambda X, V: np.einsum("nij,nj->ni", logistic.hess_log_joint(X), V))
    ev = hvp(theta, grad=True, directions=np.eye(4))
    np.testing.assert_allclose(ev.hvps[2], -H[:, :, 2], rtol=1e-12)
    linear = LogJoint(lambda X: X.sum(-1), 4)
    ev = linear(np.ones((3, 4)), grad=True, directions=np.eye(4)[:2])
    np.testing.assert_allclose(ev.grads, -np.ones((3, 4)))
    assert ev.hvps.shape == (2, 3, 4) and not ev.hvps.any()


def test_torch_state_stays_in_torch(logistic):
    theta = torch.zeros((2, 4), dtype=torch.float64)
    ev = LogJoint(logistic.log_joint, 4)(theta, grad=True)
    assert isinstance(ev.values, torch.Tensor) and isinstance(ev.grads, torch.Tensor)


def test_errors_name_the_function(logistic):
    bad_grad = LogJoint(logistic.log_joint, 4, grad=lambda X: np.zeros((len(X), 3)))
    with pytest.raises(ValueError, match=r"grad must return rows of gradients, shape \(2, 4\)"):
        bad_grad(np.zeros((2, 4)), grad=True)
    bad_hess = LogJoint(logistic.log_joint, 4, grad=logistic.grad_log_joint, hess=lambda X: np.zeros((4, 4)))
    with pytest.raises(ValueError, match="hess must return one Hessian per row"):
        bad_hess(np.zeros((2, 4)), directions=np.eye(4))
    with pytest.raises(TypeError, match="callable"):
        LogJoint(logistic.log_joint, 4, grad=3)
    inf_grad = LogJoint(logistic.log_joint, 4, grad=lambda X: np.full((len(X), 4), np.inf))
    with pytest.raises(ValueError, match="non-finite"):
        inf_grad(np.zeros((2, 4)), grad=True)
    values_only = LogJoint(lambda X: np.asarray(X).sum(-1) if isinstance(X, np.ndarray) else 1 / 0, 4)
    values_only.prepare(np.zeros((1, 4)))
    assert values_only.source == "values"
    with pytest.raises(ValueError, match="hvp= or hess="):
        values_only.require("hvp", "hessian")
