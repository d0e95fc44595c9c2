"""Tangent transport (``Factor.transport``) and tangent checkpoints (``Tangent.state_dict``).

Group structures: the transport of seed 000 is the identity on the local coordinates, so the tangent's
dense matrix is kept exactly.  Spectral: (μ, K) are re-expressed at the new (Q', λ') so that the dense
matrix is kept too (reusing (μ, K) unchanged would be off by O(step)).
"""

import dataclasses

import numpy as np
import pytest

from natgrad_es.structures import BlockDiagonal, Dense, Spectral, from_state_dict, make
from natgrad_es.structures.base import tangent_from_state_dict
from natgrad_es.testing.factor_tests import to_numpy

STRUCTURES = [("full", {}), ("diagonal", {}), ("blockdiag", {"blocks": [2, 4]}),
              ("kronecker", {"shape": (2, 3)}), ("lowrank", {"rank": 2}), ("spectral", {})]
IDS = [name for name, _ in STRUCTURES]
D = 6


def _backend(backend):
    if backend == "torch":
        pytest.importorskip("torch")


def _gradient(factor, rng, n=8):
    """A random natural gradient at ``factor`` (rows Z, weights w)."""
    Z = factor.xp.asarray(rng.standard_normal((n, factor.dim)), dtype=factor.dtype)
    w = factor.xp.asarray(rng.standard_normal(n), dtype=factor.dtype)
    return factor.natural_gradient(Z, w)


def _point(name, kw, rng, backend="numpy", dtype="float64"):
    """A generic point of the structure: the identity moved by two random steps."""
    factor = make(name, D, backend=backend, dtype=dtype, **kw)
    for _ in range(2):
        factor = factor.retract(_gradient(factor, rng), 0.2)
    return factor


def _fields_equal(a, b):
    """Every serialized field of two tangents equal exactly (arrays element-wise, nested recursively)."""
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, tuple):
            assert len(x) == len(y)
            for p, q in zip(x, y):
                _fields_equal(p, q)
        elif x is None or isinstance(x, int):
            assert x == y, f.name
        else:
            np.testing.assert_array_equal(to_numpy(x), to_numpy(y), err_msg=f.name)
            assert str(getattr(x, "dtype", type(x))) == str(getattr(y, "dtype", type(y))), f.name


# -- checkpoints -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend, dtype", [("numpy", "float64"), ("torch", "float64"), ("torch", "float32")])
@pytest.mark.parametrize("name, kw", STRUCTURES, ids=IDS)
def test_state_dict_round_trip_is_exact(name, kw, backend, dtype):
    _backend(backend)
    rng = np.random.default_rng(0)
    factor = _point(name, kw, rng, backend, dtype)
    T = _gradient(factor, rng) * 0.7 + _gradient(factor, rng)  # a sum, as a momentum buffer is
    state = T.state_dict()
    restored = tangent_from_state_dict(factor, state)
    _fields_equal(restored, T)
    # restored at the factor's point: it combines with tangents computed there and steps the factor
    both = restored + _gradient(factor, rng)
    assert both.dim == D
    np.testing.assert_array_equal(to_numpy(factor.retract(restored, 0.1).to_dense()),
                                  to_numpy(factor.retract(T, 0.1).to_dense()))
    # the checkpoint holds copies: restoring twice gives independent arrays
    again = tangent_from_state_dict(factor, state)
    _fields_equal(again, T)


def test_state_dict_is_a_copy():
    factor = make("diagonal", D)
    T = _gradient(factor, np.random.default_rng(1))
    state = T.state_dict()
    before = np.array(T.v)
    T.v[:] = 0.0  # frozen dataclass, mutable array
    np.testing.assert_array_equal(state["fields"]["v"], before)


def test_dense_tangent_round_trip_in_every_form():
    """DenseTangent holds rows, a matrix or both (a folded sum): every combination survives."""
    rng = np.random.default_rng(2)
    factor = _point("full", {}, rng)
    rows = _gradient(factor, rng)
    matrix = factor.project(rng.standard_normal((D, D)))
    folded = rows + matrix
    for T in (rows, matrix, folded, factor.zero_tangent()):
        _fields_equal(tangent_from_state_dict(factor, T.state_dict()), T)
    assert folded.rows is None and folded.matrix is not None


def test_restored_spectral_tangent_is_bound_to_the_factor():
    rng = np.random.default_rng(3)
    factor = _point("spectral", {}, rng)
    restored = tangent_from_state_dict(factor, _gradient(factor, rng).state_dict())
    assert restored.Q is factor.Q and restored.lam is factor.lam
    assert set(restored.state_dict()["fields"]) == {"dim", "mu", "K"}  # the point is not stored


def test_tangent_from_state_dict_rejects_a_mismatch():
    rng = np.random.default_rng(4)
    dense, diag = make("full", D), make("diagonal", D)
    state = _gradient(diag, rng).state_dict()
    with pytest.raises(ValueError, match="DenseTangent"):
        tangent_from_state_dict(dense, state)
    with pytest.raises(ValueError, match="dim"):
        tangent_from_state_dict(make("diagonal", D + 1), state)
    with pytest.raises(ValueError, match="fields"):
        tangent_from_state_dict(diag, {"tangent": "DiagonalTangent", "fields": {"dim": D}})
    with pytest.raises(ValueError, match="'tangent' and 'fields'"):
        tangent_from_state_dict(diag, [1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        bad = {"tangent": "DiagonalTangent", "fields": {"dim": D, "v": np.full(D, np.nan)}}
        tangent_from_state_dict(diag, bad)
    with pytest.raises(TypeError, match="Factor"):
        tangent_from_state_dict(state, state)
    block = make("blockdiag", D, blocks=2)
    with pytest.raises(ValueError, match="parts"):
        tangent_from_state_dict(make("blockdiag", D, blocks=3), _gradient(block, rng).state_dict())


# -- transport ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, kw", STRUCTURES, ids=IDS)
def test_transport_to_the_same_point_is_the_identity(name, kw):
    rng = np.random.default_rng(5)
    factor = _point(name, kw, rng)
    T = _gradient(factor, rng)
    same = factor.transport(T, factor)
    _fields_equal(same, T)
    # an equal point held in other arrays (a checkpoint's copy): the same tangent up to rounding
    copy = from_state_dict(factor.state_dict())
    moved = factor.transport(T, copy)
    M = T.to_dense()
    np.testing.assert_allclose(moved.to_dense(), M, rtol=0, atol=1e-12 * np.abs(M).max())
    assert float(moved.norm()) == pytest.approx(float(T.norm()), rel=1e-12)


@pytest.mark.parametrize("name, kw", [s for s in STRUCTURES if s[0] != "spectral"],
                         ids=[i for i in IDS if i != "spectral"])
def test_group_transport_keeps_the_local_coordinates(name, kw):
    """A and A·h(tM) both have 𝔤 as local coordinates: the transported tangent is the same element of 𝔤,
    usable at the new point (sums with its gradients, retracts it)."""
    rng = np.random.default_rng(6)
    factor = _point(name, kw, rng)
    T = _gradient(factor, rng)
    new = factor.retract(_gradient(factor, rng), 0.3)
    carried = factor.transport(T, new)
    np.testing.assert_array_equal(carried.to_dense(), T.to_dense())
    step = new.retract(carried + _gradient(new, rng), 0.1)
    assert np.all(np.isfinite(step.to_dense()))


@pytest.mark.parametrize("t", [1e-3, 1e-2, 1e-1])
def test_spectral_transport_keeps_the_dense_matrix(t):
    """The transported (μ', K') at (Q', λ') have the old dense matrix (to rounding), whereas reusing (μ, K)
    unchanged at the new point is off by O(t): the error of the naive reuse shrinks linearly with t."""
    rng = np.random.default_rng(7)
    factor = _point("spectral", {}, rng)
    T = _gradient(factor, rng)
    new = factor.retract(_gradient(factor, rng), t)
    carried = factor.transport(T, new)
    assert carried.Q is new.Q and carried.lam is new.lam
    M = T.to_dense()
    scale = np.abs(M).max()
    assert np.abs(carried.to_dense() - M).max() < 1e-11 * scale
    naive = dataclasses.replace(T, Q=new.Q, lam=new.lam)
    err = np.abs(naive.to_dense() - M).max() / scale
    assert 0.1 * t < err < 30 * t, err
    skew = carried.K + carried.K.T
    assert np.abs(skew).max() == 0.0


def test_spectral_transport_drops_only_what_a_degenerate_eigenspace_cannot_hold():
    """At a point with λ'₀ = λ'₁, rotations inside that eigenspace do not change S: the (0, 1) entry of M
    in the new eigenbasis is lost, every other entry is kept, and K' stays finite."""
    rng = np.random.default_rng(8)
    factor = _point("spectral", {}, rng)
    T = _gradient(factor, rng)
    Q2 = np.linalg.qr(rng.standard_normal((D, D)))[0]
    lam2 = np.array([2.0, 2.0, 1.0, 0.5, 3.0, 0.7])
    new = Spectral(Q2, lam2, eps=factor.eps)
    carried = factor.transport(T, new)
    assert np.all(np.isfinite(carried.K)) and carried.K[0, 1] == 0.0
    old, kept = Q2.T @ T.to_dense() @ Q2, Q2.T @ carried.to_dense() @ Q2
    mask = np.ones((D, D), bool)
    mask[0, 1] = mask[1, 0] = False
    np.testing.assert_allclose(kept[mask], old[mask], atol=1e-12 * np.abs(old).max())
    assert kept[0, 1] == pytest.approx(0.0, abs=1e-12)


def test_transport_through_a_block_diagonal_of_spectral_blocks():
    """A composite tangent is transported, and checkpointed, part by part at its blocks."""
    rng = np.random.default_rng(9)

    def spectral(d):
        f = Spectral.identity(d)
        return f.retract(_gradient(f, rng), 0.3)

    factor = BlockDiagonal([spectral(3), Dense.identity(3)])
    T = _gradient(factor, rng)
    new = factor.retract(_gradient(factor, rng), 0.1)
    carried = factor.transport(T, new)
    assert carried.parts[0].Q is new.blocks[0].Q
    np.testing.assert_allclose(carried.to_dense(), T.to_dense(), atol=1e-12)
    restored = tangent_from_state_dict(new, carried.state_dict())
    _fields_equal(restored, carried)
    assert restored.parts[0].Q is new.blocks[0].Q
    new.retract(restored + _gradient(new, rng), 0.1)


def test_transport_rejects_a_foreign_tangent_or_point():
    rng = np.random.default_rng(10)
    dense, diag = make("full", D), make("diagonal", D)
    with pytest.raises(TypeError, match="transport"):
        dense.transport(_gradient(dense, rng), diag)
    with pytest.raises(TypeError, match="transport"):
        dense.transport(_gradient(dense, rng), make("full", D + 1))
    with pytest.raises(TypeError, match="needs a DenseTangent"):
        dense.transport(_gradient(diag, rng), dense)
    spec = _point("spectral", {}, rng)
    other = spec.retract(_gradient(spec, rng), 0.1)
    with pytest.raises(TypeError, match="this factor's point"):
        spec.transport(_gradient(other, rng), other)
    with pytest.raises(TypeError, match="transport a SpectralTangent"):
        spec.transport(_gradient(spec, rng), dense)
