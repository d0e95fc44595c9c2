"""Wishart family and WishartVI: against scipy, the Fisher by Monte Carlo, and the conjugate posterior."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats

from natgrad_es.vi import VIWarning, Wishart, WishartVI
from natgrad_es.vi.wishart import multi_digamma, multi_trigamma

torch = pytest.importorskip("torch")


def _random_spd(p, rng, scale=1.0):
    G = rng.standard_normal((p, p))
    return scale * (G @ G.T / p + np.eye(p))


def test_wishart_matches_scipy():
    rng = np.random.default_rng(0)
    p, df = 3, 6.5
    V = _random_spd(p, rng)
    q = Wishart.from_scale(df, V)
    ref = scipy.stats.wishart(df=df, scale=V)
    Lam = ref.rvs(size=4, random_state=1)
    np.testing.assert_allclose(q.log_prob(Lam), ref.logpdf(np.moveaxis(Lam, 0, -1)), rtol=1e-10)
    np.testing.assert_allclose(q.entropy(), ref.entropy(), rtol=1e-10)
    np.testing.assert_allclose(q.scale(), V, rtol=1e-10)
    np.testing.assert_allclose(q.mean(), df * V, rtol=1e-10)
    draws = q.sample(40000, rng)
    np.testing.assert_allclose(draws.mean(0), df * V, rtol=0.03, atol=0.03)
    np.testing.assert_allclose(np.linalg.slogdet(draws)[1].mean(), q.mean_logdet(), atol=0.02)


def test_wishart_kl_closed_form():
    rng = np.random.default_rng(2)
    q1 = Wishart.from_scale(5.0, _random_spd(2, rng))
    q2 = Wishart.from_scale(7.5, _random_spd(2, rng))
    assert q1.kl(q1) == pytest.approx(0.0, abs=1e-12)
    draws = q1.sample(200000, rng)
    mc = (q1.log_prob(draws) - q2.log_prob(draws)).mean()
    assert q1.kl(q2) == pytest.approx(mc, rel=0.02)
    assert q1.kl(q2) > 0


def test_local_fisher_matches_monte_carlo():
    """The Fisher in (δ, M) at 0: a δ² + 2n‖M₀‖² + 2np τ² − 2p τ δ (algorithms-sources.md §5), checked
    against E[(δ s_δ + tr(M s_M))²] with s_M = nI − Z, s_δ = ½ log|Z| − (p/2) log 2 − ½ ψ_p(n/2)."""
    rng = np.random.default_rng(3)
    p, n = 3, 7.3
    Z = Wishart(n, np.eye(p)).sample(400000, rng)
    s_delta = 0.5 * np.linalg.slogdet(Z)[1] - 0.5 * p * math.log(2) - 0.5 * multi_digamma(n / 2, p)
    s_M = n * np.eye(p) - Z
    a = 0.25 * multi_trigamma(n / 2, p)
    for _ in range(3):
        delta = rng.standard_normal()
        G = rng.standard_normal((p, p))
        M = 0.5 * (G + G.T)
        tau = np.trace(M) / p
        M0 = M - tau * np.eye(p)
        analytic = a * delta ** 2 + 2 * n * (M0 * M0).sum() + 2 * n * p * tau ** 2 - 2 * p * tau * delta
        mc = np.mean((delta * s_delta + np.einsum("ij,sji->s", M, s_M)) ** 2)
        assert mc == pytest.approx(analytic, rel=0.03)


def _conjugate(p=3, N=40, seed=0):
    """Gaussian data with known mean 0 and unknown precision Λ; prior W(ν₀, V₀)."""
    rng = np.random.default_rng(seed)
    Lam_true = _random_spd(p, rng)
    data = rng.multivariate_normal(np.zeros(p), np.linalg.inv(Lam_true), size=N)
    nu0, V0 = p + 1.0, np.eye(p)
    scatter = data.T @ data
    posterior = Wishart.from_scale(nu0 + N, np.linalg.inv(np.linalg.inv(V0) + scatter))
    Sc, V0inv = torch.as_tensor(scatter), torch.as_tensor(np.linalg.inv(V0))

    def log_joint(Lam):
        ld = torch.logdet(Lam)
        loglik = 0.5 * N * ld - 0.5 * (Sc * Lam).sum((-1, -2)) - 0.5 * N * p * math.log(2 * math.pi)
        logprior = 0.5 * (nu0 - p - 1) * ld - 0.5 * (V0inv * Lam).sum((-1, -2))
        return loglik + logprior

    return log_joint, posterior


def test_natural_gradient_inverts_the_fisher():
    log_joint, _ = _conjugate()
    vi = WishartVI(log_joint, 3, seed=0)
    q = vi.posterior
    rng = np.random.default_rng(1)
    g_delta, G = rng.standard_normal(), rng.standard_normal((3, 3))
    g_M = 0.5 * (G + G.T)
    d, M = vi.natural_gradient(q, g_delta, g_M)
    n, p = q.df, 3
    tau = np.trace(M) / p
    a = 0.25 * multi_trigamma(n / 2, p)
    np.testing.assert_allclose(a * d - p * tau, g_delta, rtol=1e-10)
    np.testing.assert_allclose(2 * n * (M - tau * np.eye(p)) + (2 * n * tau - d) * np.eye(p), g_M, atol=1e-12)


def test_loss_gradient_matches_the_closed_form():
    """Reparameterised (sticking-the-landing) gradient vs finite differences of the closed-form
    L(n, B) = E_q[ℓ] − H[q] of the conjugate model."""
    p, N = 2, 10
    log_joint, post = _conjugate(p=p, N=N, seed=1)
    vi = WishartVI(log_joint, p, seed=0, init_df=6.0)
    q = vi.posterior
    a, Psi = post.df, post.inverse_scale()  # ℓ = −(a − p − 1)/2 log|Λ| + ½ tr(ΨΛ) + const

    def L(df, B):
        w = Wishart(df, B)
        return -(a - p - 1) / 2 * w.mean_logdet() + 0.5 * np.trace(Psi @ w.mean()) - w.entropy()

    h = 1e-6
    fd_delta = (L(q.df + h, q.B) - L(q.df - h, q.B)) / (2 * h)
    fd_M = np.zeros((p, p))
    for i in range(p):
        for j in range(p):
            E = np.zeros((p, p))
            E[i, j] = h
            fd_M[i, j] = (L(q.df, q.B @ (np.eye(p) + E)) - L(q.df, q.B @ (np.eye(p) - E))) / (2 * h)
    fd_M = 0.5 * (fd_M + fd_M.T)
    _, g_delta, g_M = vi.loss_gradient(q, n_samples=200000, seed=5)
    assert g_delta == pytest.approx(fd_delta, rel=0.02, abs=0.02)
    np.testing.assert_allclose(g_M, fd_M, rtol=0.02, atol=0.05)


@pytest.mark.parametrize("seed", [0, 1])
def test_conjugate_model_reaches_the_closed_form_posterior(seed):
    """KL(q ‖ exact Wishart posterior) < 1e-3 within 25 steps at the default β = 0.5 (measured: ~1e-4 at
    10 steps, ~1e-11 at 20), and no noise floor: ℓ + log q is constant at the answer."""
    log_joint, post = _conjugate(seed=seed)
    vi = WishartVI(log_joint, 3, seed=seed)
    assert vi.posterior.kl(post) > 1.0
    vi.fit(25)
    assert vi.posterior.kl(post) < 1e-3
    vi.fit(15)
    assert vi.posterior.kl(post) < 1e-9
    # log p(data) = log p(data, Λ) − log p(Λ | data) at any Λ; the ELBO is exact at the answer
    eye = np.eye(3)
    log_evidence = float(log_joint(torch.as_tensor(eye)[None])[0]) - post.log_prob(eye)
    assert vi.elbo(200) == pytest.approx(log_evidence, abs=1e-6)


def test_state_dict_round_trip_and_seed():
    log_joint, _ = _conjugate()
    vi = WishartVI(log_joint, 3, seed=4, lr=0.3)
    vi.fit(3)
    state = vi.state_dict()
    vi.fit(3)
    other = WishartVI(log_joint, 3, seed=11, lr=0.3)
    other.load_state_dict(state)
    other.fit(3)
    np.testing.assert_array_equal(other.posterior.B, vi.posterior.B)
    assert other.posterior.df == vi.posterior.df and other.history == vi.history
    again = WishartVI(log_joint, 3, seed=4, lr=0.3).fit(6)
    np.testing.assert_array_equal(again.posterior.B, vi.posterior.B)


def test_refused_step_keeps_df_above_dim_minus_one():
    """A prior-only model W(2, I) at p = 2: a full step from df = 40 would take df below p − 1 = 1."""
    p = 2

    def log_joint(Lam):
        return 0.5 * (2.0 - p - 1) * torch.logdet(Lam) - 0.5 * torch.diagonal(Lam, dim1=-2, dim2=-1).sum(-1)

    vi = WishartVI(log_joint, p, seed=0, lr=1.0, init_df=40.0, max_step=50.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vi.fit(30)
    assert any(issubclass(w.category, VIWarning) for w in caught)
    assert any(r["refused"] > 0 for r in vi.history)
    assert all(h["beta"] <= 1.0 for h in vi.history)
    assert vi.posterior.df > p - 1
    assert vi.posterior.kl(Wishart.from_scale(2.0, np.eye(p))) < 1e-9


def test_bad_input_raises():
    log_joint, _ = _conjugate()
    with pytest.raises(ValueError, match="positive definite"):
        WishartVI(log_joint, 3, init_mean=np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="init_df"):
        WishartVI(log_joint, 3, init_df=1.5)
    with pytest.raises(TypeError, match="torch"):
        WishartVI(lambda L: np.zeros(len(L)), 3)
    with pytest.raises(ValueError, match="one value per matrix"):
        WishartVI(lambda L: log_joint(L)[:1], 3)
    with pytest.raises(ValueError, match="lr"):
        WishartVI(log_joint, 3, lr=2.0)
    nan = WishartVI(lambda L: log_joint(L) * float("nan"), 3)
    with pytest.raises(ValueError, match="non-finite"):
        nan.step()
    with pytest.raises(ValueError, match="df must exceed"):
        Wishart(0.5, np.eye(2))
    with pytest.raises(ValueError, match="symmetric"):
        Wishart.from_scale(3.0, np.array([[1.0, 0.5], [0.0, 1.0]]))
