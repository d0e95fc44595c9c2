"""NaturalES(momentum=α): the shape steps along V_t = α T(V_{t−1}) + (1 − α) M_t (``es.rules``).

α = 0 is the rule without momentum bit for bit; one step recomputed by hand (dense and diagonal);
transport of the buffer for the spectral factor; exact resume from a checkpoint; bad input; and a
convergence check with a stated budget.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

import problems
from natgrad_es import structures
from natgrad_es.es import NaturalES, rules
from natgrad_es.es.shaping import assign, xnes_utilities

F = problems.get("rotated_ellipsoid", 6, condition=1e3)


def _generations(es, k, f=F):
    for _ in range(k):
        X = es.ask()
        es.tell(X, f(X))


def _arrays(es):
    xp = es.factor.xp
    return [xp.to_numpy(es.mean), np.array([es.sigma]), xp.to_numpy(es.factor.to_dense())]


@pytest.mark.parametrize("structure, kw", [("full", {}), ("full", {"method": "xnes"}),
                                           ("diagonal", {}), ("spectral", {}),
                                           ("kronecker", {"shape": (2, 3)})])
def test_zero_momentum_is_the_rule_without_momentum(structure, kw):
    plain = NaturalES(np.full(6, 0.5), 0.5, structure, seed=4, **kw)
    zero = NaturalES(np.full(6, 0.5), 0.5, structure, seed=4, momentum=0.0, **kw)
    _generations(plain, 15)
    _generations(zero, 15)
    for a, b in zip(_arrays(plain), _arrays(zero)):
        np.testing.assert_array_equal(a, b)
    assert zero._state.velocity is None and zero.state_dict()["velocity"] is None


def _told(es, f=F):
    """One generation; returns (A before, Z, f) with Z recovered from the asked X."""
    A, m, sigma = es.factor, es.mean, es.sigma
    X = es.ask()
    fx = f(X)
    es.tell(X, fx)
    return A, A.solve((X - m) / sigma), fx


@pytest.mark.parametrize("alpha", [0.5, 0.9])
def test_xnes_steps_by_hand_dense_and_diagonal(alpha):
    """Two xNES generations against the formulas: G = Σ uᵢ(zᵢzᵢᵀ − I), M = G − tr(G)/d I (dense) or
    its diagonal (SNES); V₁ = M₁, V₂ = α V₁ + (1 − α) M₂; A ← A expm(η_A/2 · V)."""
    d = 6
    for structure in ("full", "diagonal"):
        es = NaturalES(np.full(d, 0.5), 0.5, structure, seed=2, method="xnes", momentum=alpha)
        eta = es.parameters.eta_A
        u_table = xnes_utilities(es.popsize)
        V = None
        for _ in range(2):
            A, Z, fx = _told(es)
            u = assign(fx, u_table)
            G = Z.T @ (u[:, None] * Z) - u.sum() * np.eye(d)
            if structure == "diagonal":
                G = np.diag(np.diag(G))
            M = G - np.trace(G) / d * np.eye(d)
            V = M if V is None else alpha * V + (1 - alpha) * M
            expected = A.to_dense() @ scipy.linalg.expm(0.5 * eta * V)
            np.testing.assert_allclose(es.factor.to_dense(), expected, rtol=1e-10, atol=1e-12)


def test_path_step_by_hand_dense():
    """The path rule's A₂ = A₁ expm(½(α V₁ + (1 − α) M₂)), with M_t read off the plain rule's step
    (M = 2 logm(A⁻¹ A_plain)) on the same state, Z and f."""
    alpha, d = 0.7, 6
    es = NaturalES(np.full(d, 0.5), 0.5, "full", seed=5, momentum=alpha)
    params = es.parameters
    plain = rules.PathParameters(**{**params.__dict__, "momentum": 0.0})
    V = None
    for _ in range(3):
        state = es._state
        A, Z, fx = _told(es)
        step = rules.path_update(state, Z, fx, plain)
        M = 2 * np.real(scipy.linalg.logm(np.linalg.solve(A.to_dense(), step.factor.to_dense())))
        V = M if V is None else alpha * V + (1 - alpha) * M
        expected = A.to_dense() @ scipy.linalg.expm(0.5 * V)
        np.testing.assert_allclose(es.factor.to_dense(), expected, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(es.mean, step.mean, rtol=1e-12)  # no momentum on the mean and σ
        assert math.isclose(es.sigma, step.sigma, rel_tol=1e-12)


def test_spectral_buffer_is_transported_to_the_new_point():
    """For "spectral" the buffer is re-expressed at the new (Q, λ): the same dense matrix V."""
    rng = np.random.default_rng(0)
    A = structures.make("spectral", 5)
    for _ in range(3):  # separate the spectrum
        A = A.retract(A.natural_gradient(rng.standard_normal((8, 5)), np.linspace(1, -1, 8) / 8), 0.5)
    M = A.natural_gradient(rng.standard_normal((8, 5)), np.linspace(0.5, -0.5, 8) / 8)
    new, velocity = rules.shape_step(A, M, None, 0.5, 0.5, "expm", 2)
    assert velocity.Q is new.Q and velocity.lam is new.lam
    np.testing.assert_allclose(velocity.to_dense(), M.to_dense(), atol=1e-12)
    np.testing.assert_allclose(new.to_dense(), A.retract(M, 0.5).to_dense(), atol=1e-14)


@pytest.mark.parametrize("structure, kw", [("full", {}), ("full", {"method": "xnes"}),
                                           ("spectral", {}), ("blockdiag", {"blocks": (2, 4)}),
                                           ("lowrank", {"rank": 2, "retraction": "truncated"})])
def test_resume_from_a_checkpoint_is_exact(structure, kw):
    ref = NaturalES(np.full(6, 0.5), 0.5, structure, seed=8, momentum=0.8, **kw)
    _generations(ref, 7)
    state = ref.state_dict()
    assert state["velocity"] is not None and state["options"]["momentum"] == 0.8
    resumed = NaturalES.from_state_dict(state)
    loaded = NaturalES(np.zeros(6), 1.0, structure, **kw)
    loaded.load_state_dict(state)
    for es in (ref, resumed, loaded):
        _generations(es, 8)
    for other in (resumed, loaded):
        for a, b in zip(_arrays(ref), _arrays(other)):
            np.testing.assert_array_equal(a, b)


def test_resume_on_torch_is_exact():
    torch = pytest.importorskip("torch")
    ref = NaturalES(torch.full((6,), 0.5, dtype=torch.float64), 0.5, "full", seed=3, momentum=0.5)
    _generations(ref, 5)
    resumed = NaturalES.from_state_dict(ref.state_dict())
    assert isinstance(resumed._state.velocity, structures.DenseTangent)
    assert isinstance(resumed._state.velocity.scale, torch.Tensor)
    for es in (ref, resumed):
        _generations(es, 5)
    assert torch.equal(ref.factor.to_dense(), resumed.factor.to_dense())
    assert torch.equal(ref.mean, resumed.mean) and ref.sigma == resumed.sigma


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5, math.nan, math.inf, True, "0.5", None])
def test_bad_momentum_raises(alpha):
    with pytest.raises(ValueError, match="momentum must be a number in \\[0, 1\\)"):
        NaturalES(np.zeros(4), 1.0, momentum=alpha)


def test_momentum_needs_transport_and_the_rank_route():
    with pytest.raises(ValueError, match="curvature='ranks'"):
        NaturalES(np.zeros(6), 1.0, "lowrank-precision", rank=2, momentum=0.5)
    with pytest.raises(ValueError, match="Factor.transport"):
        NaturalES(np.zeros(6), 1.0, "lowrank-cov", rank=2, curvature="ranks", momentum=0.5)
    NaturalES(np.zeros(6), 1.0, "lowrank-cov", rank=2, momentum=0.0)  # no momentum: fine


@pytest.mark.parametrize("structure, method, budget", [("full", "path", 10_000),
                                                       ("full", "xnes", 20_000),
                                                       ("diagonal", "path", 5_000)])
def test_converges_with_momentum(structure, method, budget):
    """d = 10, condition 1e6, α = 0.9: f < 1e-8 within the budget (measured at seed 1: 4,310 / 8,360 /
    1,740 evaluations; without momentum 3,220 / 8,310 / 1,570)."""
    f = problems.get("rotated_ellipsoid" if structure == "full" else "ellipsoid", 10)
    es = NaturalES(np.full(10, 0.5), 0.5, structure, seed=1, method=method, momentum=0.9, ftarget=1e-8,
                   maxfevals=budget)
    while not es.stop():
        X = es.ask()
        es.tell(X, f(X))
    assert es.result.fbest < 1e-8, (es.result.evaluations, es.stop())
