"""The pairs route's pieces: the low-rank curvature fit, the buffer, the route's update."""

import math

import numpy as np
import pytest

from natgrad_es import structures
from natgrad_es.es import pairs
from natgrad_es.es.pairs import CurvatureModel, PairBuffer, PairsRoute, fit_curvature, whitening_factor


def _planted(d, r, c, n_pairs, side, seed=0):
    rng = np.random.default_rng(seed)
    P, _ = np.linalg.qr(rng.standard_normal((d, r)))
    H = np.eye(d) + (c - 1) * P @ P.T if side == "precision" else c * np.eye(d) - (c - 1) * P @ P.T
    U = rng.standard_normal((n_pairs, d))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    q = np.einsum("ij,jk,ik->i", U, H, U)
    return U, q, H


@pytest.mark.parametrize("side", ["precision", "covariance"])
def test_fit_recovers_a_planted_rank_3_precision_from_isotropic_pairs(side):
    # 8·r·d isotropic pairs determine a rank-3 H of condition 1e4 in d = 60 (algorithms.md §3)
    d, r, c = 60, 3, 1e4
    U, q, H = _planted(d, r, c, 8 * r * d, side)
    model, train, *_ = fit_curvature(U, q, rank=5, side=side, rng=np.random.default_rng(1))
    assert model is not None and model.Q.shape[1] == r  # the two spare directions are dropped
    Hhat = model.s * np.eye(d) + model.Q @ np.diag(model.gamma) @ model.Q.T
    assert np.linalg.norm(Hhat - H) / np.linalg.norm(H) < 1e-5
    assert train < 1e-5
    # whitening by the model leaves a condition number of 1 (to 1e-2; the fit stops at tol = 1e-7)
    w, E = np.linalg.eigh(Hhat)
    W = E @ np.diag(w ** -0.5) @ E.T
    ev = np.linalg.eigvalsh(W @ H @ W)
    assert ev.max() / ev.min() < 1 + 1e-2


def test_fit_keeps_only_directions_of_its_side():
    U, q, _ = _planted(40, 2, 1e3, 8 * 2 * 40, "covariance")
    model = fit_curvature(U, q, rank=4, side="precision", rng=np.random.default_rng(0)).model
    # a valley has no stiff direction: the precision side keeps none
    assert model is not None and model.Q.shape[1] == 0


def test_fit_rejects_a_bad_side():
    U, q, _ = _planted(10, 1, 10.0, 100, "precision")
    with pytest.raises(ValueError, match="side"):
        fit_curvature(U, q, 2, side="upper")


def test_too_few_pairs_do_not_give_an_exact_model():
    # with r·d/2 pairs the problem is underdetermined: the fit must not look exact
    d, r = 60, 3
    U, q, H = _planted(d, r, 1e4, r * d // 2, "precision")
    model = fit_curvature(U, q, rank=3, side="precision", rng=np.random.default_rng(0)).model
    if model is not None:
        Hhat = model.s * np.eye(d) + model.Q @ np.diag(model.gamma) @ model.Q.T
        assert np.linalg.norm(Hhat - H) / np.linalg.norm(H) > 1e-6


def test_buffer_is_a_ring_split_into_train_and_held_out():
    buf = PairBuffer(3, 10)  # 8 train, 2 held out
    for i in range(4):
        buf.add(np.full((4, 3), float(i + 1)), np.arange(4.0) + 4 * i)  # pairs 0…15, q = their number
    assert len(buf) == 10 and buf.total == 16
    assert sorted(buf.held_out.arrays()[2].tolist()) == [9.0, 14.0]  # every 5th pair: 4, 9, 14
    assert sorted(buf.train.arrays()[2].tolist()) == [6.0, 7.0, 8.0, 10.0, 11.0, 12.0, 13.0, 15.0]
    V, inv_norm, _ = buf.train.arrays()
    assert V.dtype == np.float32
    np.testing.assert_allclose(inv_norm[:, None] * V, np.full((8, 3), 3 ** -0.5))  # unit rows
    again = PairBuffer.from_state_dict(buf.state_dict(), 3)
    for fold in ("train", "held_out"):
        for a, b in zip(getattr(again, fold).arrays(), getattr(buf, fold).arrays()):
            np.testing.assert_array_equal(a, b)
    again.add(np.ones((1, 3)), np.array([16.0]))
    buf.add(np.ones((1, 3)), np.array([16.0]))
    np.testing.assert_array_equal(again.train.arrays()[2], buf.train.arrays()[2])


def test_float32_directions_give_the_float64_fit():
    # directions exact in float32, stored so, with 1/‖v‖ in float64: every product is float64
    d, r = 60, 3
    _, _, H = _planted(d, r, 1e4, 1, "precision")
    V = (0.3 * np.random.default_rng(4).standard_normal((8 * r * d, d))).astype(np.float32)
    norm = np.linalg.norm(V.astype(np.float64), axis=1)
    U = V / norm[:, None]
    q = np.einsum("ij,jk,ik->i", U, H, U)
    fits = [fit_curvature(V, q, 5, "precision", inv_norm=1 / norm, rng=np.random.default_rng(1)),
            fit_curvature(U, q, 5, "precision", rng=np.random.default_rng(1))]
    Hs = [f.model.s * np.eye(d) + f.model.Q @ np.diag(f.model.gamma) @ f.model.Q.T for f in fits]
    assert np.linalg.norm(Hs[0] - Hs[1]) / np.linalg.norm(H) < 1e-8
    assert all(np.linalg.norm(Hh - H) / np.linalg.norm(H) < 1e-5 for Hh in Hs)


def test_a_hopeless_fit_stops_early_and_a_good_one_does_not():
    d, r = 60, 3
    U, q, _ = _planted(d, r, 1e4, 8 * r * d, "precision")
    good = fit_curvature(U, q, 3, "precision", rng=np.random.default_rng(0))
    assert good.stop == "tol" and good.train < 1e-6 and good.iterations <= 6
    # r·d pairs, about one per unknown: the residual cannot converge
    bad = fit_curvature(U[:r * d], q[:r * d], 3, "precision", rng=np.random.default_rng(0))
    assert bad.stop in ("hopeless", "stall") and bad.iterations <= pairs._HOPELESS_AFTER
    # passes: the spectral start (at most _KRYLOV_BLOCKS, fewer once the Krylov space fills R^d, and
    # one for U Y), then per step at most the gradient, the CG iterations and the points of the step
    # fractions tried (5)
    start = pairs._KRYLOV_BLOCKS + 1
    assert 2 + 2 * bad.iterations <= bad.passes <= start + bad.iterations * (1 + pairs._CG_MAX + 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gauss_newton_recovers_from_two_pairs_per_unknown(seed):
    # 2·r·d pairs (≈ 2 per unknown of s I + Y C Yᵀ): exact recovery, in few quadratically converging steps
    d, r = 60, 3
    U, q, H = _planted(d, r, 1e4, 2 * r * d, "precision", seed=seed)
    fit = fit_curvature(U, q, r, "precision", rng=np.random.default_rng(0))
    assert fit.stop == "tol" and fit.iterations <= 8
    Hhat = fit.model.s * np.eye(d) + fit.model.Q @ np.diag(fit.model.gamma) @ fit.model.Q.T
    assert np.linalg.norm(Hhat - H) / np.linalg.norm(H) < 1e-6


def _dense_jacobian(U, x):
    """The Jacobian of the curvatures at the fit's point x, written out: columns for θ (the
    features), then for Z = B W (B an orthonormal basis of Y⊥, W row-major).  Returns (J, B)."""
    d, r = x.Y.shape
    B = np.linalg.svd(np.eye(d) - x.Y @ x.Y.T)[0][:, :d - r]
    cols = [x.F]
    for i in range(d - r):
        for j in range(r):
            E = np.outer(B[:, i], x.Y[:, j])
            cols.append(np.einsum("ni,ij,nj->n", U, E + E.T, U)[:, None])
    return np.concatenate(cols, axis=1), B


def test_the_gauss_newton_direction_solves_the_dense_linearised_least_squares():
    # at a point x off the solution, the CG direction (tight tolerance) against the dense
    # least squares over the tangent space (δs, δC, Z ⊥ Y) written out with d×d matrices
    d, r = 12, 2
    U, q, H = _planted(d, r, 50.0, 200, "precision", seed=3)
    rng = np.random.default_rng(5)
    Y, _ = np.linalg.qr(rng.standard_normal((d, r)))
    rows = pairs._Rows(U, None)
    x = pairs._point(rows, Y, q, float(np.linalg.norm(q - q.mean())))
    delta, Z = pairs._gauss_newton_direction(rows, x, 1e-12)
    assert np.allclose(Y.T @ Z, 0, atol=1e-10)
    J, B = _dense_jacobian(U, x)
    sol = np.linalg.lstsq(J, -x.r, rcond=None)[0]
    m = x.F.shape[1]
    np.testing.assert_allclose(delta, sol[:m], rtol=1e-6, atol=1e-8 * np.abs(sol[:m]).max())
    np.testing.assert_allclose(Z, B @ sol[m:].reshape(d - r, r), atol=1e-8 * np.abs(sol).max())


@pytest.mark.parametrize("blocks", [3, 16])
def test_block_krylov_gives_the_top_eigenvectors_by_absolute_value(blocks):
    # a symmetric A with eigenvalues of both signs, the largest |λ| negative; 16 blocks of 5 columns
    # close the space in R^40 (the early stop), 3 blocks leave it a proper subspace
    rng = np.random.default_rng(3)
    d, k = 40, 3
    E = np.linalg.qr(rng.standard_normal((d, d)))[0]
    lam = np.concatenate([[-9.0, 8.0, 7.0], rng.uniform(-1, 1, d - 3)])
    A = (E * lam) @ E.T
    X = np.linalg.qr(rng.standard_normal((d, k + 2)))[0]
    Y = pairs._block_krylov(lambda X: A @ X, X, k, blocks)
    assert np.allclose(Y.T @ Y, np.eye(k), atol=1e-10)
    top = E[:, :3]
    cos = np.linalg.svd(top.T @ Y, compute_uv=False)
    assert cos.min() > (1 - 1e-10 if blocks == 16 else 0.99)


@pytest.mark.parametrize("d", [64, 300])
def test_block_krylov_stays_orthonormal_when_the_space_nearly_closes(d):
    # rank 30 plus a tail near 3e-10: after a few blocks a new block sees almost nothing new.  A
    # pivot judged against that block's own image (not ‖A‖) let round-off grow until YᵀY was far
    # from I, and dropping a whole block for one small pivot lost directions of the range
    k = 10
    for seed in range(5):
        rng = np.random.default_rng(seed)
        E = np.linalg.qr(rng.standard_normal((d, d)))[0]
        lam = np.concatenate([rng.uniform(1, 2, 30), 3e-10 * rng.uniform(0.5, 1, d - 30)])
        A = (E * lam) @ E.T
        X = np.linalg.qr(rng.standard_normal((d, k + 6)))[0]
        Y = pairs._block_krylov(lambda X, A=A: A @ X, X, k, 16)
        assert np.allclose(Y.T @ Y, np.eye(k), atol=1e-8)
        assert np.linalg.svd(E[:, :30].T @ Y, compute_uv=False).min() > 1 - 1e-8  # in the range


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_poor_start_falls_back_to_the_spectral_estimate(seed):
    # a refit starts from the last model's Q; a stale one (here random) must not end the fit
    d, r = 60, 3
    U, q, H = _planted(d, r, 1e4, 8 * r * d, "precision", seed=seed)
    stale, _ = np.linalg.qr(np.random.default_rng(seed + 10).standard_normal((d, r)))
    fit = fit_curvature(U, q, r, "precision", rng=np.random.default_rng(0), start=stale)
    assert fit.stop == "tol"
    Hhat = fit.model.s * np.eye(d) + fit.model.Q @ np.diag(fit.model.gamma) @ fit.model.Q.T
    assert np.linalg.norm(Hhat - H) / np.linalg.norm(H) < 1e-6
    # a good start needs neither the spectral passes nor many steps
    good = fit_curvature(U, q, r, "precision", rng=np.random.default_rng(0), start=fit.model.Q)
    assert good.stop == "tol" and good.iterations <= 1 and good.passes < 9


def test_the_preconditioner_makes_the_normal_equations_well_conditioned():
    # dense Jᵀ J at a point off the solution (isotropic pairs) and the preconditioner M:
    # M is symmetric positive definite and M^½ Jᵀ J M^½ is far better conditioned than Jᵀ J
    d, r = 30, 2
    U, q, _ = _planted(d, r, 100.0, 32 * r * d, "precision", seed=4)
    Y, _ = np.linalg.qr(np.random.default_rng(6).standard_normal((d, r)))
    x = pairs._point(pairs._Rows(U, None), Y, q, float(np.linalg.norm(q - q.mean())))
    J, _ = _dense_jacobian(U, x)
    theta_scale, z_scale = pairs._preconditioner(x, d)
    m = x.F.shape[1]
    M = np.zeros((J.shape[1], J.shape[1]))
    M[:m, :m] = theta_scale
    M[m:, m:] = np.kron(np.eye(d - r), z_scale)  # W ↦ W z_scale, row-major vec
    np.testing.assert_allclose(M, M.T, atol=1e-12 * np.abs(M).max())
    w, E = np.linalg.eigh(M)
    assert w.min() > 0
    root = E @ np.diag(np.sqrt(w)) @ E.T
    before, after = np.linalg.cond(J.T @ J), np.linalg.cond(root @ J.T @ J @ root)
    # here 579 → 2.4; Z unpreconditioned: 13, θ unpreconditioned: 3.2e3, (PᵀP)⁻¹ not inverted: 114
    assert after < 1e-2 * before and after < 5


def test_the_retraction_stays_orthonormal_when_the_step_is_rank_deficient():
    # Z = 0 and a singular C (a spare direction): [Y Z] has rank k, the basis must stay orthonormal
    d, k = 12, 3
    U, q, _ = _planted(d, 1, 50.0, 300, "precision", seed=1)
    Y, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((d, k)))
    x = pairs._point(pairs._Rows(U, None), Y, q, float(np.linalg.norm(q - q.mean())))
    for Z in (np.zeros((d, k)), np.outer(np.random.default_rng(3).standard_normal(d), [1.0, 0, 0])):
        Yn = pairs._retract(x, np.zeros_like(x.theta), Z)
        assert Yn.shape == (d, k)
        np.testing.assert_allclose(Yn.T @ Yn, np.eye(k), atol=1e-12)


def test_non_finite_curvatures_give_no_model():
    U, q, _ = _planted(20, 2, 100.0, 200, "precision")
    q[3] = np.nan
    fit = fit_curvature(U, q, 2, "precision")
    assert fit.model is None and fit.stop == "not finite" and fit.train == math.inf


def test_the_tangent_pass_in_float32_matches_float64():
    # the CG passes take their products in the buffer's float32: a relative error ~1e-7
    rng = np.random.default_rng(2)
    V = rng.standard_normal((300, 40)).astype(np.float32)
    inv_norm = 1 / np.linalg.norm(V.astype(np.float64), axis=1)
    Y, _ = np.linalg.qr(rng.standard_normal((40, 3)))
    Z, a0 = rng.standard_normal((40, 3)), rng.standard_normal(300)
    P = (V.astype(np.float64) * inv_norm[:, None]) @ Y
    a32, G32 = pairs._Rows(V, inv_norm).tangent(P, Z, a0)
    U = V.astype(np.float64) * inv_norm[:, None]
    a = a0 + 2 * np.einsum("ij,ij->i", P, U @ Z)
    np.testing.assert_allclose(a32, a, rtol=0, atol=1e-6 * np.abs(a).max())
    np.testing.assert_allclose(G32, 2 * U.T @ (a[:, None] * P), rtol=0, atol=1e-6 * np.abs(G32).max())


def test_held_buffer_keeps_the_newest_pairs_it_had_room_for():
    buf = PairBuffer(3, 20)  # 16 train, 4 held out
    buf.add(np.ones((10, 3)), np.arange(10.0))  # pairs 0…9: 4 and 9 held out
    buf.hold()
    buf.add(np.ones((7, 3)), np.arange(10.0, 17.0))  # 10…16: 14 held out
    assert len(buf) == 10 and buf.total == 17
    assert sorted(buf.train.arrays()[2].tolist()) == [7.0, 8.0, 10.0, 11.0, 12.0, 13.0, 15.0, 16.0]
    assert sorted(buf.held_out.arrays()[2].tolist()) == [9.0, 14.0]
    again = PairBuffer.from_state_dict(buf.state_dict(), 3)  # the limit survives a checkpoint
    again.add(np.ones((5, 3)), np.arange(17.0, 22.0))
    buf.add(np.ones((5, 3)), np.arange(17.0, 22.0))
    assert len(again) == len(buf) == 10
    for fold in ("train", "held_out"):
        np.testing.assert_array_equal(getattr(again, fold).arrays()[2], getattr(buf, fold).arrays()[2])


def test_an_accepted_model_stops_the_buffer_growing():
    d = 20
    U, q, _ = _planted(d, 2, 100.0, 400, "precision")
    route = PairsRoute(d, 2, "precision", pairs=4, capacity=2000)
    route.buffer.add(3.0 * U, q)
    route.next_fit = 400
    assert route._maybe_fit() and len(route.buffer) == 400
    U2, q2, _ = _planted(d, 2, 100.0, 300, "precision")
    route.buffer.add(3.0 * U2, q2)
    assert len(route.buffer) == 400 and route.buffer.total == 700


def test_the_fit_reads_the_train_fold_in_place(monkeypatch):
    from natgrad_es.es import pairs

    seen = {}
    fit = pairs.fit_curvature

    def spy(V, q, *args, **kwargs):
        seen.update(V=V, q=q, inv_norm=kwargs["inv_norm"])
        return fit(V, q, *args, **kwargs)

    monkeypatch.setattr(pairs, "fit_curvature", spy)
    d = 20
    U, q, _ = _planted(d, 2, 100.0, 400, "precision")
    route = PairsRoute(d, 2, "precision", pairs=4, capacity=500)
    route.buffer.add(3.0 * U, q)
    route.next_fit = 400
    route._maybe_fit()
    train = route.buffer.train
    assert len(seen["q"]) == 320 and len(route.buffer.held_out) == 80
    assert seen["V"].dtype == np.float32 and np.shares_memory(seen["V"], train.V)
    assert np.shares_memory(seen["inv_norm"], train.inv_norm) and np.shares_memory(seen["q"], train.q)
    record = route.fits[-1]
    assert record["accepted"] and record["stop"] == "tol" and record["passes"] > 0


def _generation(route, factor, prob, m, sigma, rng, spoil=None):
    Z = rng.standard_normal((route.pairs, route.dim))
    V = sigma * factor.apply(Z)
    f = prob(np.concatenate([m[None], m + V, m - V]))
    if spoil is not None:
        f[spoil] = np.nan
    return route.update(m, sigma, V, f, factor.solve)


def test_non_finite_values_never_enter_the_buffer():
    d = 20
    route = PairsRoute(d, 2, "precision", pairs=4)
    factor = structures.make("lowrank-precision", d, rank=2)
    rng = np.random.default_rng(0)
    step = _generation(route, factor, lambda X: (X ** 2).sum(-1), np.ones(d), 0.3, rng, spoil=[2])
    assert route.buffer.total == 3  # the pair with f(m + v₂) = NaN is left out
    assert np.all(np.isfinite(route.buffer.train.arrays()[2]))
    assert np.all(np.isfinite(step.mean))
    # a non-finite f(m) undoes nothing yet (no accepted mean) and adds no pair
    route2 = PairsRoute(d, 2, "precision", pairs=4)
    _generation(route2, factor, lambda X: (X ** 2).sum(-1), np.ones(d), 0.3, rng, spoil=[0])
    assert route2.buffer.total == 0


def test_route_state_dict_resumes_the_same_run():
    d = 12
    prob = lambda X: (X ** 2).sum(-1) + 99 * (X[:, :1] ** 2).sum(-1)  # noqa: E731
    factor = structures.make("lowrank-precision", d, rank=2)
    route = PairsRoute(d, 2, "precision", pairs=3, seed=5)
    rng = np.random.default_rng(0)
    m, sigma = np.ones(d), 0.5
    for _ in range(20):
        st = _generation(route, factor, prob, m, sigma, rng)
        m, sigma = st.mean, st.sigma
    copy = PairsRoute.from_state_dict(route.state_dict())
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    a = b = (m, sigma)
    for _ in range(20):
        sa = _generation(route, factor, prob, a[0], a[1], rng_a)
        sb = _generation(copy, factor, prob, b[0], b[1], rng_b)
        a, b = (sa.mean, sa.sigma), (sb.mean, sb.sigma)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]


@pytest.mark.parametrize("name,side", [("lowrank-precision", "precision"), ("lowrank-cov", "covariance")])
def test_whitening_factor_whitens_the_model(name, side):
    d, k = 30, 4
    rng = np.random.default_rng(3)
    Q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    gamma = np.array([50.0, 3.0]) if side == "precision" else np.array([-1.5, -1.9])
    model = CurvatureModel(2.0, Q, gamma)
    A = whitening_factor(model, structures.make(name, d, rank=k)).to_dense()
    Hhat = 2.0 * np.eye(d) + Q @ np.diag(gamma) @ Q.T
    np.testing.assert_allclose(A.T @ Hhat @ A, 2.0 * np.eye(d), atol=1e-10)


def test_route_rejects_bad_arguments():
    with pytest.raises(ValueError, match="side"):
        PairsRoute(10, 2, "both", pairs=3)
    with pytest.raises(ValueError, match="pairs"):
        PairsRoute(10, 2, "precision", pairs=0)
    assert math.isfinite(PairsRoute(10, 2, "precision", pairs=3).kappa)


# -- the route inside NaturalES / minimize ----------------------------------------------------------

from natgrad_es import NaturalES, minimize  # noqa: E402
from problems.functions import StiffSubspace, Valley  # noqa: E402

# measured (seeds 1–5, x0 = 0.5·1, σ0 = 0.5, rank 5): 3.9k–5.1k evaluations to 1e-8 on both problems
BUDGET_D60 = 10_000


@pytest.mark.parametrize("cls,structure", [(StiffSubspace, "lowrank-precision"), (Valley, "lowrank-cov")])
@pytest.mark.parametrize("seed", [1, 2])
def test_default_route_solves_the_d60_subspace_problems(cls, structure, seed):
    prob = cls(60, 3, 1e4, seed=seed)
    res = minimize(prob, 0.5 * np.ones(60), 0.5, structure, rank=5, ftarget=1e-8, budget=BUDGET_D60,
                   vectorized=True, seed=seed)
    assert res.fun <= 1e-8 and res.nfev <= BUDGET_D60, (res.fun, res.nfev)


def test_pairs_generation_layout_and_checks():
    es = NaturalES(np.ones(8), 0.3, "lowrank-precision", rank=2, seed=0, pairs=3)
    assert es.popsize == 7
    X = es.ask()
    np.testing.assert_array_equal(X[0], es.mean)
    np.testing.assert_allclose(X[1:4] + X[4:7], np.tile(2 * X[0], (3, 1)), atol=1e-12)  # mirrored about m
    with pytest.raises(ValueError, match="unchanged"):
        es.tell(X[::-1].copy(), (X ** 2).sum(1))
    es.tell(X, (X ** 2).sum(1))
    with pytest.raises(ValueError, match="exactly"):
        es.ask(4)


def test_pairs_route_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="lowrank-precision"):
        NaturalES(np.ones(5), 0.3, "full", curvature="pairs")
    with pytest.raises(ValueError, match="bounds"):
        NaturalES(np.ones(5), 0.3, "lowrank-precision", rank=2, bounds=(-2, 2))
    with pytest.raises(ValueError, match="numpy"):
        NaturalES(np.ones(5), 0.3, "lowrank-precision", rank=2, backend="torch")
    with pytest.raises(TypeError, match="curvature='pairs'"):
        NaturalES(np.ones(5), 0.3, "full", pairs=3)
    with pytest.raises(ValueError, match="curvature"):
        NaturalES(np.ones(5), 0.3, "lowrank-precision", rank=2, curvature="values")
    # the rank route runs on the same structures when asked for
    es = NaturalES(np.ones(5), 0.3, "lowrank-precision", rank=2, curvature="ranks", bounds=(-2, 2))
    assert es.popsize == 4 + int(3 * np.log(5))


def test_pairs_state_dict_resumes_the_same_run():
    prob = StiffSubspace(20, 2, 1e3, seed=0)
    es = NaturalES(0.5 * np.ones(20), 0.5, "lowrank-precision", rank=3, seed=4)
    for _ in range(150):  # past the first fit (2·k·d = 120 pairs)
        X = es.ask()
        es.tell(X, prob(X))
    copy = NaturalES.from_state_dict(es.state_dict())
    for _ in range(30):
        Xa, Xb = es.ask(), copy.ask()
        np.testing.assert_array_equal(Xa, Xb)
        es.tell(Xa, prob(Xa))
        copy.tell(Xb, prob(Xb))
    np.testing.assert_array_equal(es.mean, copy.mean)
    np.testing.assert_array_equal(es.factor.Q, copy.factor.Q)


def test_pairs_route_follows_nan_policy():
    prob = StiffSubspace(12, 1, 100.0, seed=0)
    es = NaturalES(0.5 * np.ones(12), 0.5, "lowrank-precision", rank=2, seed=0)
    X = es.ask()
    f = prob(X)
    f[2] = np.nan
    with pytest.warns(UserWarning, match="non-finite"):
        es.tell(X, f)
    assert es._route.buffer.total == es._route.pairs - 1  # the NaN pair stays out of the fit
    assert np.all(np.isfinite(es.mean))
    strict = NaturalES(0.5 * np.ones(12), 0.5, "lowrank-precision", rank=2, seed=0, nan_policy="raise")
    X = strict.ask()
    f = prob(X)
    f[0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        strict.tell(X, f)


def test_a_pair_buffer_too_large_for_memory_names_pairs_capacity():
    from natgrad_es.es.pairs import PairBuffer

    with pytest.raises(MemoryError, match="pairs_capacity"):
        PairBuffer(10**6, 10**8)  # 745,058 GiB: beyond any address space


def test_default_capacity_is_8kd_within_three_quarters_of_the_memory(monkeypatch):
    assert pairs.default_capacity(3, 50) == 8 * 3 * 50  # small: 8·k·d
    pages = {"SC_PHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}  # a 4 MB machine
    monkeypatch.setattr(pairs.os, "sysconf", lambda name: pages[name])
    assert pairs.default_capacity(10, 1000) == int(0.75 * 4096 * 1000) // (4 * 1000 + 16)
    assert pairs.PairsRoute(1000, 10, "precision", 3).capacity == pairs.default_capacity(10, 1000)

    def missing(name):
        raise ValueError(name)

    monkeypatch.setattr(pairs.os, "sysconf", missing)
    assert pairs.default_capacity(10, 1000) == 80_000


def test_a_checkpoint_of_the_old_float64_buffer_gets_a_clear_error():
    old = {"capacity": 40, "total": 3, "U": np.eye(3, 8), "q": np.ones(3)}
    with pytest.raises(ValueError, match="float64 format"):
        PairBuffer.from_state_dict(old, 8)


def _fit_totals(route, monkeypatch, accept_at=(), steps=60, per_step=10):
    """The buffer totals at which ``route`` fits, with ``fit_curvature`` replaced by a stub that
    returns no model (a rejected fit) except at the totals in ``accept_at``."""
    from natgrad_es.es import pairs

    model = CurvatureModel(1.0, np.eye(route.dim, route.rank), np.zeros(route.rank))
    monkeypatch.setattr(pairs, "fit_curvature", lambda V, q, *a, **k: pairs.Fit(
        model if route.buffer.total in accept_at else None, 1.0, 1, 1, "stub"))
    monkeypatch.setattr(pairs, "held_out_residual", lambda *a: 0.0)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        route.buffer.add(rng.standard_normal((per_step, route.dim)), rng.uniform(1, 2, per_step))
        if route.model is not None:
            route.model_error = 1.0  # the model's error on fresh pairs stays above the refit level
        route._maybe_fit()
    return [r["pairs"] for r in route.fits]


def test_rejected_fits_back_off_past_the_gate(monkeypatch):
    d, k = 10, 2  # k·d = 20 pairs, capacity 8·k·d = 160
    route = PairsRoute(d, k, "precision", pairs=4, capacity=160)
    # the gate (2kd, 4kd, capacity), then k·d, 2kd, 2kd, … after each rejection, up to a quarter
    # of the capacity
    assert _fit_totals(route, monkeypatch) == [40, 80, 160, 180, 220, 260, 300, 340, 380, 420, 460,
                                               500, 540, 580]
    assert route.retry == 40
    again = PairsRoute.from_state_dict(route.state_dict())  # the spacing survives a checkpoint
    assert (again.retry, again.next_fit) == (route.retry, route.next_fit) == (40, 620)


def test_an_accepted_fit_resets_the_refit_spacing(monkeypatch):
    d, k = 10, 4
    route = PairsRoute(d, k, "precision", pairs=4, capacity=640)
    # k·d = 40: accepted at 80; refits (error above the level) rejected at 120, 200, 360, 520
    # (160, a quarter of the capacity, apart); accepted at 680; then the spacing is k·d again
    totals = _fit_totals(route, monkeypatch, accept_at=(80, 680), steps=80)
    assert totals == [80, 120, 200, 360, 520, 680, 720, 800]
