"""problems.regression (linear, logistic, one-hidden-layer network) and problems.datasets."""

import math

import numpy as np
import pytest
import scipy.stats

from problems.datasets import load, load_breast_cancer, load_diabetes, load_wine
from problems.regression import (
    BayesianLinearRegression,
    BayesianLogisticRegression,
    BayesianNeuralNetwork,
    GaussianPrior,
    gaussian_kl,
)


def _data(n=30, p=3, seed=0, binary=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    if binary:
        return X, (rng.random(n) < 1 / (1 + np.exp(-X @ np.ones(p)))).astype(float)
    return X, X @ rng.standard_normal(p) + 0.3 * rng.standard_normal(n)


# -- linear regression ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prior_var", [2.0, np.array([1.0, 2.0, 0.5]), np.array([[2.0, 0.3, 0.0],
                                                                                  [0.3, 1.0, 0.1],
                                                                                  [0.0, 0.1, 0.5]])])
def test_linear_posterior_is_the_normalised_joint(prior_var):
    X, y = _data()
    model = BayesianLinearRegression(X, y, prior_var=prior_var, noise_var=0.09)
    mean, cov = model.posterior()
    post = scipy.stats.multivariate_normal(mean, cov)
    thetas = np.random.default_rng(1).standard_normal((5, 3))
    # log p(θ, y) − log p(θ | y) = log p(y) for every θ
    np.testing.assert_allclose(model.log_joint(thetas) - post.logpdf(thetas), model.log_evidence(),
                               rtol=1e-10)
    # and the evidence is the marginal N(y; 0, XΣ₀Xᵀ + σ²I)
    prior_cov = np.diag(np.broadcast_to(prior_var, (3,))) if np.ndim(prior_var) < 2 else prior_var
    marginal = scipy.stats.multivariate_normal(np.zeros(30), X @ prior_cov @ X.T + 0.09 * np.eye(30))
    assert model.log_evidence() == pytest.approx(marginal.logpdf(y), rel=1e-10)
    assert model.kl(mean, cov) == pytest.approx(0.0, abs=1e-10)


def test_linear_derivatives_match_autograd():
    torch = pytest.importorskip("torch")
    X, y = _data()
    model = BayesianLinearRegression(X, y, prior_var=1.5, noise_var=0.2)
    theta = np.random.default_rng(2).standard_normal((4, 3))
    t = torch.tensor(theta, requires_grad=True)
    out = model.log_joint(t)
    np.testing.assert_allclose(out.detach().numpy(), model.log_joint(theta), rtol=1e-12)
    (g,) = torch.autograd.grad(out.sum(), t)
    np.testing.assert_allclose(g.numpy(), model.grad_log_joint(theta), rtol=1e-10)
    H = torch.autograd.functional.hessian(lambda v: model.log_joint(v[None])[0], t[0].detach())
    np.testing.assert_allclose(H.numpy(), model.hess_log_joint(theta)[0], rtol=1e-10)


def test_gaussian_kl_helper_matches_scipy_entropy_identity():
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((2, 3, 3))
    S1, S2 = A @ A.T + np.eye(3), B @ B.T + np.eye(3)
    m1, m2 = rng.standard_normal((2, 3))
    x = scipy.stats.multivariate_normal(m1, S1).rvs(200000, random_state=4)
    q1, q2 = scipy.stats.multivariate_normal(m1, S1), scipy.stats.multivariate_normal(m2, S2)
    mc = q1.logpdf(x) - q2.logpdf(x)
    assert gaussian_kl(m1, S1, m2, S2) == pytest.approx(mc.mean(), rel=0.02)
    assert gaussian_kl(m1, S1, m1, S1) == pytest.approx(0.0, abs=1e-12)


# -- logistic regression ---------------------------------------------------------------------------------


def test_logistic_log_joint_and_derivatives():
    X, y = _data(binary=True)
    model = BayesianLogisticRegression(X, y, prior_var=2.0)
    theta = np.random.default_rng(5).standard_normal((4, 3))
    t = X @ theta.T  # (N, n)
    ref = (y[:, None] * np.log(1 / (1 + np.exp(-t))) + (1 - y[:, None]) * np.log(1 / (1 + np.exp(t)))).sum(0)
    ref += scipy.stats.multivariate_normal(np.zeros(3), 2.0 * np.eye(3)).logpdf(theta)
    np.testing.assert_allclose(model.log_joint(theta), ref, rtol=1e-12)
    h = 1e-6
    for i in range(3):
        e = np.zeros(3)
        e[i] = h
        fd = (model.log_joint(theta + e) - model.log_joint(theta - e)) / (2 * h)
        np.testing.assert_allclose(model.grad_log_joint(theta)[:, i], fd, rtol=1e-6, atol=1e-6)
        fdg = (model.grad_log_joint(theta + e) - model.grad_log_joint(theta - e)) / (2 * h)
        np.testing.assert_allclose(model.hess_log_joint(theta)[:, :, i], fdg, rtol=1e-5, atol=1e-6)
    # overflow-safe at huge logits
    assert np.all(np.isfinite(model.log_joint(1e4 * np.ones((1, 3)))))
    probs = model.predict_proba(theta, X[:5])
    assert probs.shape == (4, 5) and np.all((probs > 0) & (probs < 1))


def test_logistic_rejects_labels_outside_0_1():
    X, _ = _data()
    with pytest.raises(ValueError, match="only the labels 0 and 1"):
        BayesianLogisticRegression(X, np.sign(X[:, 0]))


# -- neural network ------------------------------------------------------------------------------------


def test_bnn_log_joint_matches_a_loop_and_torch():
    X, y = _data(n=12, p=2)
    model = BayesianNeuralNetwork(X, y, hidden=3, prior_var=1.0, noise_var=0.1)
    assert model.dim == 2 * 3 + 2 * 3 + 1
    theta = np.random.default_rng(6).standard_normal((2, model.dim))
    for row, value in zip(theta, model.log_joint(theta)):
        W1, b1, w2, b2 = row[:6].reshape(2, 3), row[6:9], row[9:12], row[12]
        f = np.tanh(X @ W1 + b1) @ w2 + b2
        ll = scipy.stats.norm(f, math.sqrt(0.1)).logpdf(y).sum()
        lp = scipy.stats.norm(0, 1).logpdf(row).sum()
        assert value == pytest.approx(ll + lp, rel=1e-12)
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(model.log_joint(torch.tensor(theta)).numpy(), model.log_joint(theta),
                               rtol=1e-12)
    assert model.predict(theta, X[:4]).shape == (2, 4)


# -- minibatches, validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["linear", "logistic", "bnn"])
def test_minibatch_data_term_is_unbiased(cls):
    X, y = _data(n=20, binary=cls == "logistic")
    make = {"linear": lambda X, y: BayesianLinearRegression(X, y, 1.0, 0.5),
            "logistic": lambda X, y: BayesianLogisticRegression(X, y, 1.0),
            "bnn": lambda X, y: BayesianNeuralNetwork(X, y, hidden=2)}[cls]
    model = make(X, y)
    theta = np.random.default_rng(7).standard_normal((3, model.dim))
    full = model.log_joint(theta)
    # the average over a partition of the data into batches is the full-data value
    parts = np.array_split(np.random.default_rng(8).permutation(20), 4)
    np.testing.assert_allclose(np.mean([model.log_joint(theta, batch=b) for b in parts], axis=0), full,
                               rtol=1e-12)
    # a batch of one row weighs its likelihood N = 20 times; the prior is not scaled
    one = make(X[[3]], y[[3]])
    np.testing.assert_allclose(model.log_joint(theta, batch=np.array([3])) - model.prior.log_prob(theta),
                               20 * one.log_likelihood(theta), rtol=1e-12)
    draws = model.minibatch_log_joint(5, seed=0)
    assert draws(theta).shape == (3,)
    with pytest.raises(ValueError, match="batch_size"):
        model.minibatch_log_joint(0)
    with pytest.raises(ValueError, match="batch indices"):
        model.log_joint(theta, batch=np.array([25]))


def test_bad_input_raises_clear_errors():
    X, y = _data()
    with pytest.raises(ValueError, match="positive definite"):
        BayesianLinearRegression(X, y, prior_var=np.array([[1.0, 2.0, 0], [2.0, 1.0, 0], [0, 0, 1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        GaussianPrior(np.array([[1.0, 0.1], [0.0, 1.0]]), 2)
    with pytest.raises(ValueError, match="prior_var"):
        BayesianLinearRegression(X, y, prior_var=-1.0)
    with pytest.raises(ValueError, match="positive variances|finite positive"):
        BayesianLinearRegression(X, y, prior_var=np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="noise_var"):
        BayesianLinearRegression(X, y, noise_var=0)
    with pytest.raises(ValueError, match=r"y must have shape \(N,\)"):
        BayesianLinearRegression(X, y[:-1])
    with pytest.raises(ValueError, match="finite"):
        BayesianLinearRegression(np.where(X > 2, np.nan, X), y)
    model = BayesianLinearRegression(X, y)
    with pytest.raises(ValueError, match=r"theta must have shape \(n, 3\)"):
        model.log_joint(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="1-D"):
        model.log_joint(np.zeros(3))
    with pytest.raises(ValueError, match="hidden"):
        BayesianNeuralNetwork(X, y, hidden=0)


# -- datasets ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loader, shape, task", [(load_diabetes, (442, 10), "regression"),
                                                 (load_breast_cancer, (569, 30), "binary"),
                                                 (load_wine, (178, 13), "multiclass")])
def test_datasets_are_standardised_and_split_by_seed(loader, shape, task):
    data = loader(seed=3)
    assert data.task == task
    assert data.X_train.shape[0] + data.X_test.shape[0] == shape[0]
    assert data.X_train.shape[1] == shape[1] == len(data.feature_names)
    assert data.X_test.shape[0] == round(0.2 * shape[0])
    np.testing.assert_allclose(data.X_train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(data.X_train.std(0), 1, rtol=1e-12)
    if task == "regression":
        assert abs(data.y_train.mean()) < 1e-12 and data.y_train.std() == pytest.approx(1.0)
    same, other = loader(seed=3), loader(seed=4)
    np.testing.assert_array_equal(same.X_test, data.X_test)
    assert not np.array_equal(other.X_test, data.X_test)


def test_dataset_options():
    data = load_breast_cancer(add_bias=True, test_fraction=0.0)
    assert data.X_train.shape == (569, 31) and data.feature_names[-1] == "bias"
    assert np.all(data.X_train[:, -1] == 1) and data.X_test.shape[0] == 0
    assert set(np.unique(data.y_train)) == {0.0, 1.0}
    wine = load_wine(binary_class=1)
    assert wine.task == "binary" and set(np.unique(wine.y_train)) == {0.0, 1.0}
    with pytest.raises(ValueError, match="unknown dataset"):
        load("iris")
    with pytest.raises(ValueError, match="test_fraction"):
        load("wine", test_fraction=1.0)
    with pytest.raises(ValueError, match="binary_class"):
        load("diabetes", binary_class=1)
