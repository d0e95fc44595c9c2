"""Symmetric low rank ("lowrank-cov", "lowrank-precision") against dense references of its formulas.

The family is not a group: the natural gradient is the ε-damped first-order local step of the module
docstring, so the FactorTests checks that assume a group (Fisher projection onto an algebra, A·expm(tM))
are replaced by dense d×d references of the same formulas, written here independently of the compact
O(d k) code.
"""

import math

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from natgrad_es.structures import LowRankCov, LowRankPrecision, from_state_dict, make
from natgrad_es.structures.symmetric_lowrank import random_frame
from natgrad_es.testing.factor_tests import SETTINGS, FactorTests, assert_close, random_seed, to_numpy

CLASSES = {"lowrank-cov": LowRankCov, "lowrank-precision": LowRankPrecision}


# -- dense references ------------------------------------------------------------------------------


def dense_local(Q, a, G, eps, rho=1.0, machine_eps=2.0**-52):
    """(ν, μ, K, C) of the module docstring, from dense d×d matrices (ρ: ``diagonal_rate``)."""
    d, k = Q.shape
    P = Q @ Q.T
    Ic = np.eye(d) - P
    Gt, Bm, Gc = Q.T @ G @ Q, Ic @ G @ Q, Ic @ G @ Ic
    den = np.diag(Ic)
    nu = np.diag(Gc) * den / (den**2 + machine_eps)
    nu = nu.mean() + rho * (nu - nu.mean())
    mu = np.array([Gt[j, j] - Q[:, j] @ np.diag(nu) @ Q[:, j] for j in range(k)])
    lam = (1 + a) ** 2
    K = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            den_ij = (lam[j] - lam[i]) ** 2 + eps * lam[i] * lam[j]
            if den_ij > 0:
                K[i, j] = Gt[i, j] * np.sqrt(lam[i] * lam[j]) * (lam[j] - lam[i]) / den_ij
    C = np.zeros((d, k))
    for j in range(k):
        den_j = (lam[j] - 1) ** 2 + eps * lam[j]
        if den_j > 0:
            C[:, j] = Bm[:, j] * np.sqrt(lam[j]) * (lam[j] - 1) / den_j
    return nu, mu, K, C


def dense_tangent(Q, a, nu, mu, K, C):
    """M with Σ ← Σ + 2t A M Aᵀ + O(t²): S⁻¹ ½(N S² + S² N + dS²) S⁻¹, dS² the move of S² by (μ, K, C)."""
    d, k = Q.shape
    s, lam = 1 + a, (1 + a) ** 2
    S = np.eye(d) + Q @ np.diag(a) @ Q.T
    S2, N, Si = S @ S, np.diag(nu), np.linalg.inv(S)
    gap = lam[None, :] - lam[:, None]
    dS2 = 2 * (Q @ np.diag(mu * lam) @ Q.T + Q @ (K * gap) @ Q.T
               + C @ np.diag(lam - 1) @ Q.T + Q @ np.diag(lam - 1) @ C.T)
    assert np.all(np.isfinite(s))
    return Si @ (0.5 * (N @ S2 + S2 @ N + dS2)) @ Si


def polish(Q):
    return Q @ (1.5 * np.eye(Q.shape[1]) - 0.5 * Q.T @ Q)


def series(X, p):
    return sum(np.linalg.matrix_power(X, j) / math.factorial(j) for j in range(p + 1))


def dense_retract(factor, T, t, method="expm", order=2):
    """δ e^{tν}, (1 + a) e^{tμ} clipped, Q ← h(2tΩ) Q with Ω = QKQᵀ + CQᵀ − QCᵀ (d×d)."""
    delta, Q, a = (to_numpy(x) for x in (factor.delta, factor.Q, factor.a))
    nu, mu, K, C = (to_numpy(x) for x in (T.nu, T.mu, T.K, T.C))
    X = 2 * t * (Q @ K @ Q.T + C @ Q.T - Q @ C.T)
    if method == "expm":
        Qn = scipy.linalg.expm(X) @ Q
    else:
        norm = np.linalg.norm(X)
        s = max(0, math.ceil(math.log2(norm / 0.25))) if norm > 0.25 else 0
        Qn = Q
        for _ in range(2**s):
            Qn = polish(polish(series(X / 2**s, order) @ Qn))
    an = (1 + a) * np.exp(t * mu) - 1
    an = np.maximum(an, 0) if factor.side > 0 else np.clip(an, -1 + 16 * np.finfo(float).eps, 0)
    delta = delta * np.exp(t * nu)
    return delta[:, None] * (np.eye(len(delta)) + Qn @ np.diag(an) @ Qn.T)


def random_a(rng, side, k, boundary=True):
    """a on the side, with (sometimes) a few columns at the boundary a = 0."""
    mag = rng.uniform(0.3, 1.5, k)
    a = np.expm1(mag) if side > 0 else np.expm1(-mag)
    if boundary:
        a[rng.random(k) < 0.25] = 0.0
    return a


def random_factor(cls, rng, d, k, eps=1e-2, boundary=True, diagonal_rate=0.05, **kw):
    delta = np.exp(0.4 * rng.standard_normal(d))
    Q = random_frame(d, k, int(rng.integers(2**31)))
    return cls(delta, Q, random_a(rng, cls.side, k, boundary), eps=eps, diagonal_rate=diagonal_rate, **kw)


# -- the FactorTests mixin, adapted ----------------------------------------------------------------


class _SymmetricLowRankTests(FactorTests):
    cls = LowRankCov

    def draw_factor(self, data, backend, dtype):
        d = data.draw(st.integers(2, 8), label="d")
        k = data.draw(st.integers(1, d - 1), label="rank")
        eps = data.draw(st.sampled_from([0.0, 1e-2]), label="eps")
        rho = data.draw(st.sampled_from([1.0, 0.05]), label="diagonal_rate")
        return random_factor(self.cls, random_seed(data), d, k, eps=eps, diagonal_rate=rho, backend=backend,
                             dtype=dtype)

    def algebra_basis(self, factor):
        raise NotImplementedError("not a group: the references are dense formulas")

    def large_factor(self, dim):
        return make(self.cls.name, dim, rank=3)

    def retract_reference(self, factor, T, t, method, order):
        return dense_retract(factor, T, t, method, order)

    def assert_in_group(self, factor, dense):
        Q, a = to_numpy(factor.Q), to_numpy(factor.a)
        assert Q.shape == (factor.dim, factor.rank)
        assert np.abs(Q.T @ Q - np.eye(factor.rank)).max() < 1e-3
        assert np.all(a >= 0) if factor.side > 0 else np.all((a <= 0) & (a > -1))
        S = dense / to_numpy(factor.delta)[:, None]
        assert np.allclose(S, S.T, atol=1e-4 * (1 + np.abs(S).max()))

    @SETTINGS
    @given(data=st.data())
    def test_natural_gradient_is_fisher_projection(self, config, data):
        # replaced: the dense reference of the first-order local step (module docstring)
        factor, n, Zx, w, G = self._sample_gradient(data, config)
        dtype = config[1]
        Q, a = to_numpy(factor.Q), to_numpy(factor.a)
        nu, mu, K, C = dense_local(Q, a, G, factor.eps, factor.diagonal_rate, factor.xp.eps(factor.dtype))
        expected = dense_tangent(Q, a, nu, mu, K, C)
        for T in (factor.natural_gradient(Zx, factor.xp.asarray(w, dtype=factor.dtype)),
                  factor.project(factor.xp.asarray(G, dtype=factor.dtype))):
            assert isinstance(T, factor.tangent_type)
            scale = n * (1 + np.abs(C).max() + np.abs(K).max())
            for got, ref, what in ((T.nu, nu, "ν"), (T.mu, mu, "μ"), (T.K, K, "K"), (T.C, C, "C")):
                assert_close(got, ref, dtype, scale=scale, what=what)
            assert_close(T.to_dense(), expected, dtype, scale=scale, what="to_dense")

    @SETTINGS
    @given(data=st.data())
    def test_traceless_step_keeps_determinant(self, config, data):
        # away from the side's boundary (no clipping), a traceless step keeps |det A| exactly
        dtype = config[1]
        rng = random_seed(data)
        d = data.draw(st.integers(2, 8), label="d")
        factor = random_factor(self.cls, rng, d, data.draw(st.integers(1, d - 1)), boundary=False,
                               backend=config[0], dtype=dtype)
        T = factor.natural_gradient(*self._weighted(factor, rng, 5))
        _, T0 = factor.split_trace(T)
        T0 = T0 * (0.5 / max(1e-12, float(np.abs(to_numpy(T0.mu)).max())))  # |tμ| ≤ 0.25 < 0.3
        new = factor.retract(T0, 0.5)
        assert_close(new.logdet(), factor.logdet(), dtype, scale=10 * factor.dim, what="log|det A|")

    @settings(SETTINGS, max_examples=6)
    @given(data=st.data())
    def test_truncated_error_shrinks_with_order(self, data):
        # the Newton–Schulz polish removes the symmetric part of the error: at least t^(p+1)
        rng = random_seed(data)
        d = data.draw(st.integers(3, 8), label="d")
        factor = random_factor(self.cls, rng, d, data.draw(st.integers(1, d - 1)), boundary=False)
        T = factor.natural_gradient(rng.standard_normal((4, d)), rng.standard_normal(4))
        # unit generator norm √(‖K‖² + 2‖C‖²): at t ≤ 0.04 no scaling-and-squaring step, whose
        # 2^s factors of equal length would make the error grow like t, not t^(p+1)
        T = T * (1.0 / float(np.sqrt((to_numpy(T.K) ** 2).sum() + 2 * (to_numpy(T.C) ** 2).sum())))
        exact = {t: factor.retract(T, t).Q for t in (0.02, 0.04)}
        for order in (1, 2, 3, 4):
            err = {t: np.linalg.norm(factor.retract(T, t, "truncated", order).Q - exact[t]) for t in exact}
            if err[0.02] < 1e-13:
                continue  # below round-off
            assert math.log2(err[0.04] / err[0.02]) > order + 0.65


class TestLowRankCov(_SymmetricLowRankTests):
    cls = LowRankCov


class TestLowRankPrecision(_SymmetricLowRankTests):
    cls = LowRankPrecision


# -- properties of the local step --------------------------------------------------------------


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("eps", [0.0, 1e-2])
def test_tangent_is_first_order_step_of_covariance(name, eps):
    # Σ(t) = Σ + 2t A M Aᵀ + O(t²) for the actual retraction, M = T.to_dense()
    rng = np.random.default_rng(1)
    f = random_factor(CLASSES[name], rng, 7, 3, eps=eps)
    T = f.natural_gradient(rng.standard_normal((9, 7)), rng.standard_normal(9))
    A, M = f.to_dense(), T.to_dense()
    Sigma = A @ A.T
    errs = []
    for t in (1e-4, 2e-4):
        An = f.retract(T, t).to_dense()
        errs.append(np.abs(An @ An.T - (Sigma + 2 * t * A @ M @ A.T)).max())
    assert errs[1] / errs[0] > 3.5  # the remainder is O(t²)


@pytest.mark.parametrize("name", list(CLASSES))
def test_aligned_directions_give_the_exact_dense_step(name):
    # with B = 0 (G = Q G̃ Qᵀ + c(I − P)) and ε = 0, M = G and the retraction matches A·expm(tG) to O(t²)
    rng = np.random.default_rng(2)
    f = random_factor(CLASSES[name], rng, 8, 3, eps=0.0, boundary=False)
    Q = f.Q
    Gt = rng.standard_normal((3, 3))
    Gt = Gt + Gt.T
    G = Q @ Gt @ Q.T + 0.7 * (np.eye(8) - Q @ Q.T)
    T = f.project(G)
    np.testing.assert_allclose(T.to_dense(), G, atol=1e-12)
    np.testing.assert_allclose(T.nu, 0.7, atol=1e-12)
    assert np.abs(T.C).max() < 1e-12
    A = f.to_dense()
    errs = []
    for t in (1e-3, 2e-3):
        exact = A @ scipy.linalg.expm(t * G)
        An = f.retract(T, t).to_dense()
        errs.append(np.abs(An @ An.T - exact @ exact.T).max())
    assert errs[1] / errs[0] > 3.5


def test_diagonal_rate_scales_only_the_shape_of_the_diagonal():
    rng = np.random.default_rng(8)
    Z, w = rng.standard_normal((6, 9)), rng.standard_normal(6)
    f1 = random_factor(LowRankPrecision, np.random.default_rng(9), 9, 2, diagonal_rate=1.0)
    f2 = LowRankPrecision(f1.delta, f1.Q, f1.a, eps=f1.eps, diagonal_rate=0.1)
    T1, T2 = f1.natural_gradient(Z, w), f2.natural_gradient(Z, w)
    np.testing.assert_allclose(T2.nu - T2.nu.mean(), 0.1 * (T1.nu - T1.nu.mean()), atol=1e-12)
    np.testing.assert_allclose(T2.nu.mean(), T1.nu.mean(), atol=1e-12)
    # μ compensates the change of ν on the Q block: μⱼ = G̃ⱼⱼ − qⱼᵀ diag(ν) qⱼ
    np.testing.assert_allclose(T2.mu - T1.mu, -(f1.Q**2).T @ (T2.nu - T1.nu), atol=1e-12)
    np.testing.assert_array_equal(T2.C, T1.C)


@pytest.mark.parametrize("name", list(CLASSES))
def test_identity_projects_to_the_scaling(name):
    f = random_factor(CLASSES[name], np.random.default_rng(3), 9, 2)
    T = f.project(1.3 * np.eye(9))
    np.testing.assert_allclose(T.nu, 1.3, atol=1e-12)
    np.testing.assert_allclose(T.mu, 0.0, atol=1e-12)
    assert np.abs(T.K).max() < 1e-12 and np.abs(T.C).max() < 1e-12
    np.testing.assert_allclose(T.to_dense(), 1.3 * np.eye(9), atol=1e-12)


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("method", ["expm", "truncated"])
def test_rank_orthonormality_and_side_kept_over_1000_steps(name, method):
    rng = np.random.default_rng(4)
    d, k = 20, 4
    f = make(name, d, rank=k, seed=5)
    w = np.linspace(0.4, -0.4, 8)
    side = f.side
    for _ in range(1000):
        T = f.natural_gradient(rng.standard_normal((8, d)), w + 0.05)
        f = f.retract(T, 0.3, method=method)
        assert f.Q.shape == (d, k) and f.a.shape == (k,)
        assert np.all(f.a >= 0) if side > 0 else np.all((f.a <= 0) & (f.a > -1))
    assert np.abs(f.Q.T @ f.Q - np.eye(k)).max() < 1e-10
    assert np.all(np.isfinite(f.delta)) and np.all(f.delta > 0)
    assert np.any(f.a != 0)  # the steps did move a off the boundary


def test_initial_frame_is_seeded_and_identity():
    f, g = make("lowrank-cov", 10, rank=3, seed=7), make("lowrank-cov", 10, rank=3, seed=7)
    assert np.array_equal(f.Q, g.Q) and not np.array_equal(f.Q, make("lowrank-cov", 10, rank=3).Q)
    np.testing.assert_array_equal(f.to_dense(), np.eye(10))
    assert f.num_parameters == 10 + 3 + 30 - 6


@pytest.mark.parametrize("name", list(CLASSES))
def test_side_is_the_right_one(name):
    # cov adds variance along Q (Σ ⪰ D²), precision removes it (Σ ⪯ D²)
    f = random_factor(CLASSES[name], np.random.default_rng(6), 6, 2, boundary=False)
    A, D = f.to_dense(), np.diag(f.delta)
    eig = np.linalg.eigvalsh(np.linalg.solve(D, A @ A.T) @ np.linalg.inv(D))
    assert (eig.min() > 1 - 1e-12) if f.side > 0 else (eig.max() < 1 + 1e-12)
    assert np.sum(np.abs(eig - 1) > 1e-9) == 2


@pytest.mark.parametrize("field", ["delta", "Q", "a"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_is_finite_sees_each_parameter_as_the_probe_does(field, bad):
    f = random_factor(LowRankPrecision, np.random.default_rng(3), 6, 2, boundary=False)
    assert f.is_finite() and np.isfinite(f.apply(np.ones(6))).all()
    value = getattr(f, field).copy()
    value.flat[1] = bad
    broken = f._replace(**{field: value})
    assert not broken.is_finite()
    assert not np.isfinite(broken.apply(np.ones(6))).all()  # the default's probe agrees


def test_bad_symmetric_lowrank_input():
    Q = random_frame(5, 2)
    with pytest.raises(ValueError, match=r"1 <= rank < dim=4, got 4"):
        make("lowrank-precision", 4, rank=4)
    with pytest.raises(ValueError, match=r"1 <= rank < dim=4, got 0"):
        make("lowrank-cov", 4, rank=0)
    with pytest.raises(TypeError, match="needs the keyword 'rank'"):
        make("lowrank-cov", 4)
    with pytest.raises(ValueError, match="orthonormal"):
        LowRankCov(np.ones(5), Q * 1.1, np.zeros(2))
    with pytest.raises(ValueError, match="a >= 0"):
        LowRankCov(np.ones(5), Q, np.array([0.1, -0.2]))
    with pytest.raises(ValueError, match="-1 < a <= 0"):
        LowRankPrecision(np.ones(5), Q, np.array([-0.1, 0.2]))
    with pytest.raises(ValueError, match="-1 < a <= 0"):
        LowRankPrecision(np.ones(5), Q, np.array([-1.0, 0.0]))
    with pytest.raises(ValueError, match=r"a must have shape \(2,\)"):
        LowRankCov(np.ones(5), Q, np.zeros(3))
    with pytest.raises(ValueError, match=r"Q must have shape \(5, k\)"):
        LowRankCov(np.ones(5), Q[:4], np.zeros(2))
    with pytest.raises(ValueError, match="delta must be positive"):
        LowRankCov(-np.ones(5), Q, np.zeros(2))
    with pytest.raises(ValueError, match="eps"):
        LowRankCov(np.ones(5), Q, np.zeros(2), eps=-1.0)
    with pytest.raises(ValueError, match=r"diagonal_rate must be in \[0, 1\], got 2"):
        make("lowrank-cov", 5, rank=2, diagonal_rate=2)
    state = make("lowrank-precision", 5, rank=2).state_dict()
    for key, bad, match in (("Q", np.ones((5, 2)), "orthonormal"), ("a", np.array([0.5, 0.0]), "-1 < a"),
                            ("delta", np.ones(4), r"Q must have shape \(4, k\)"),
                            ("a", np.array([np.inf, 0.0]), "non-finite")):
        with pytest.raises(ValueError, match=match):
            from_state_dict({**state, key: bad})
    f, g = make("lowrank-cov", 5, rank=2), make("lowrank-cov", 5, rank=2)
    with pytest.raises(TypeError, match="different points"):
        f.project(np.eye(5)) + g.project(np.eye(5))
    with pytest.raises(TypeError, match="rank 2 does not match the factor's 3"):
        make("lowrank-cov", 5, rank=3).retract(f.project(np.ones((5, 5))), 0.1)


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("angle", [1e-9, 0.3, 3.0])
def test_expm_rotation_without_orthonormalisation_matches_dense(name, angle):
    # the retraction exponentiates Ω in the basis [Q C] (no QR of C): exact for small and for large
    # rotations, and Q stays orthonormal to round-off
    rng = np.random.default_rng(11)
    d, k = 12, 3
    f = random_factor(CLASSES[name], rng, d, k, boundary=False)
    T = f.natural_gradient(rng.standard_normal((6, d)), np.linspace(0.5, -0.5, 6))
    size = 2 * math.sqrt(float((T.K * T.K).sum() + 2 * (T.C * T.C).sum()))
    t = angle / size
    g = f.retract(T, t)
    np.testing.assert_allclose(g.to_dense(), dense_retract(f, T, t), atol=1e-12, rtol=1e-12)
    assert np.abs(g.Q.T @ g.Q - np.eye(k)).max() < 1e-13


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_low_precision_gains_and_rotation_stay_finite_and_orthonormal(dtype):
    # float16: ε λᵢλⱼ rounds to 0 at small 1 + a, so the gains are taken in scale-free form
    # (denominator ≥ ε); float32: the [Q C]-basis rotation is polished by a Newton–Schulz step
    torch = pytest.importorskip("torch")
    dt = getattr(torch, dtype)
    rng = np.random.default_rng(3)
    d, k = 30, 2
    f = LowRankPrecision(np.ones(d), random_frame(d, k, 1), np.array([-0.99, -0.99]), backend="torch",
                         dtype=dt)
    T = f.natural_gradient(torch.tensor(rng.standard_normal((8, d)), dtype=dt),
                           torch.linspace(0.5, -0.5, 8, dtype=dt))
    assert bool(torch.isfinite(T.K).all()) and bool(torch.isfinite(T.C).all())
    size = 2 * float(((T.K.float() ** 2).sum() + 2 * (T.C.float() ** 2).sum()) ** 0.5)
    g = f.retract(T, 5.0 / size)  # a rotation by about 5 radians
    Q = g.Q.double().numpy()
    tol = 1e-5 if dtype == "float32" else 5e-2
    assert np.all(np.isfinite(Q)) and np.abs(Q.T @ Q - np.eye(k)).max() < tol
