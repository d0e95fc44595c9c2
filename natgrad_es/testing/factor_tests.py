"""``FactorTests``: a test mixin that checks a ``Factor`` against its dense equivalent.

A structure's test is a few lines: subclass ``FactorTests`` in a pytest module and define

* ``draw_factor(self, data, backend, dtype)`` — build a random factor with hypothesis' ``data``
  (shapes drawn, values from a drawn seed);
* ``algebra_basis(self, factor)`` — a (p, d, d) numpy array spanning the structure's Lie algebra 𝔤.

Every operation is then checked, on random shapes, in numpy float64 and torch float32/float64,
against dense references computed here from first principles:

* ``apply`` / ``apply_transpose`` / ``solve`` / ``logdet`` against ``to_dense()``;
* ``natural_gradient`` against the Fisher natural gradient on the basis: with
  G = Σᵢ wᵢ (zᵢzᵢᵀ − I), gradient g_a = ⟨G, E_a⟩ and Fisher F_ab = ¼⟨E_a + E_aᵀ, E_b + E_bᵀ⟩
  (the metric ½‖dM + dMᵀ‖² of algorithms-sources.md §1, scaled so that the dense row is G itself,
  algorithms.md §3's convention), the reference is Σ_a (F⁺g)_a E_a;
* retraction against A · expm(t M) and A · h_p(t M); the truncated error shrinking as t^(p+1);
  the group pattern kept exactly; |det A| kept by traceless steps;
* tangent arithmetic, ``split_trace``, ``state_dict`` round trips, clear errors on bad input, and
  (numpy) that a structured factor never allocates a d×d array on its fast path.

Needs pytest and hypothesis (the ``dev`` extra).
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import scipy.linalg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natgrad_es import backend as B
from natgrad_es.structures import Factor, from_state_dict

__all__ = ["FactorTests", "BACKENDS", "entry_basis", "fisher_natural_gradient", "to_numpy",
           "random_seed", "tolerance"]

BACKENDS = [("numpy", "float64"), ("torch", "float32"), ("torch", "float64")]

# a mixin's test methods run for several subclasses ("executors"): that is the point here
_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.differing_executors]
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=_QUIET)


def to_numpy(x) -> np.ndarray:
    """Any array or tensor (or scalar) as a float64 numpy array."""
    if B.is_torch(x):
        x = B.get_backend("torch").to_numpy(x)
    return np.asarray(x, dtype=np.float64)


def tolerance(dtype: str) -> float:
    return 1e-9 if dtype == "float64" else 2e-4


def assert_close(actual, expected, dtype: str, scale: float = 1.0, what: str = "") -> None:
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    bound = tolerance(dtype) * scale * (1.0 + np.max(np.abs(expected), initial=0.0))
    err = np.max(np.abs(actual - expected), initial=0.0)
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


def random_seed(data) -> np.random.Generator:
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))


def entry_basis(mask: np.ndarray) -> np.ndarray:
    """The basis {E_ij : mask[i, j]} of matrices supported on a boolean pattern."""
    idx = np.argwhere(mask)
    basis = np.zeros((len(idx),) + mask.shape)
    basis[np.arange(len(idx)), idx[:, 0], idx[:, 1]] = 1.0
    return basis


def fisher_natural_gradient(basis: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Σ_a (F⁺g)_a E_a with g_a = ⟨G, E_a⟩, F_ab = ¼⟨E_a + E_aᵀ, E_b + E_bᵀ⟩ (see module doc)."""
    flat = basis.reshape(len(basis), -1)
    sym = (basis + basis.transpose(0, 2, 1)).reshape(len(basis), -1)
    g = flat @ G.ravel()
    F = 0.25 * sym @ sym.T
    coef = np.linalg.pinv(F, rcond=1e-10, hermitian=True) @ g
    return np.tensordot(coef, basis, axes=1)


class FactorTests:
    """Mixin; see the module docstring.  Subclasses set ``draw_factor`` and ``algebra_basis``."""

    #: False for structures whose fast path must never build a d×d array.
    dense_structure = False
    #: identity factor of a large dimension for the allocation check (None: skip it)
    large_dim = 4000

    # -- to be provided -------------------------------------------------------------------
    def draw_factor(self, data, backend: str, dtype: str) -> Factor:
        raise NotImplementedError

    def algebra_basis(self, factor: Factor) -> np.ndarray:
        raise NotImplementedError

    def large_factor(self, dim: int) -> Factor:
        raise NotImplementedError

    def retract_reference(self, factor: Factor, T, t: float, method: str, order: int) -> np.ndarray:
        """The dense factor that ``factor.retract(T, t, method, order)`` must equal.

        Default: A · expm(tM) or A · h_p(tM) with M = T.to_dense() (groups whose algebra is closed
        under products, so the series stays in the structure).
        """
        A, M = to_numpy(factor.to_dense()), to_numpy(T.to_dense())
        return A @ (scipy.linalg.expm(t * M) if method == "expm" else _series(t * M, order))

    def assert_in_group(self, factor: Factor, dense: np.ndarray) -> None:
        """Default: the group is an entry pattern; entries outside the algebra's support are 0."""
        support = np.any(self.algebra_basis(factor) != 0, axis=0) | np.eye(factor.dim, dtype=bool)
        assert np.all(dense[~support] == 0), "retraction left the structure's pattern"

    # -- fixtures -------------------------------------------------------------------------
    @pytest.fixture(params=BACKENDS, ids=["numpy-f64", "torch-f32", "torch-f64"])
    def config(self, request):
        backend, dtype = request.param
        if backend == "torch":
            pytest.importorskip("torch")
        return backend, dtype

    def _draw(self, data, config):
        backend, dtype = config
        factor = self.draw_factor(data, backend, dtype)
        assert factor.xp.name == backend and str(factor.dtype).endswith(dtype)
        return factor, random_seed(data)

    @staticmethod
    def _rows(factor, rng, n):
        Z = rng.standard_normal((n, factor.dim))
        return Z, factor.xp.asarray(Z, dtype=factor.dtype)

    # -- linear maps ----------------------------------------------------------------------
    @SETTINGS
    @given(data=st.data())
    def test_linear_maps_match_dense(self, config, data):
        factor, rng = self._draw(data, config)
        dtype = config[1]
        A = to_numpy(factor.to_dense())
        n = data.draw(st.integers(1, 6), label="n")
        Z, Zx = self._rows(factor, rng, n)
        assert_close(factor.apply(Zx), Z @ A.T, dtype, what="apply")
        assert_close(factor.apply_transpose(Zx), Z @ A, dtype, what="apply_transpose")
        cond = np.linalg.cond(A)
        assert_close(factor.solve(Zx), Z @ np.linalg.inv(A).T, dtype, scale=cond, what="solve")
        assert_close(factor.solve(factor.apply(Zx)), Z, dtype, scale=cond, what="solve∘apply")
        assert_close(factor.apply(Zx[0]), A @ Z[0], dtype, what="apply on a single row")
        batch = Z.reshape(1, n, -1)
        assert_close(factor.apply(factor.xp.asarray(batch, dtype=factor.dtype)), batch @ A.T,
                     dtype, what="apply on a (1, n, d) batch")
        sign, logdet = np.linalg.slogdet(A)
        assert_close(factor.logdet(), logdet, dtype, scale=factor.dim, what="logdet")
        assert_close(factor.singular_values(), np.linalg.svd(A, compute_uv=False), dtype,
                     scale=factor.dim, what="singular_values")
        assert factor.to_dense().shape == (factor.dim, factor.dim)
        assert bool(factor.is_finite()) == bool(np.isfinite(A).all())

    # -- natural gradient -----------------------------------------------------------------
    @SETTINGS
    @given(data=st.data())
    def test_natural_gradient_is_fisher_projection(self, config, data):
        factor, n, Zx, w, G = self._sample_gradient(data, config)
        dtype = config[1]
        expected = fisher_natural_gradient(self.algebra_basis(factor), G)
        T = factor.natural_gradient(Zx, factor.xp.asarray(w, dtype=factor.dtype))
        assert isinstance(T, factor.tangent_type)
        assert_close(T.to_dense(), expected, dtype, scale=n, what="natural_gradient")
        assert_close(factor.project(G).to_dense(), expected, dtype, scale=n, what="project")

    def _sample_gradient(self, data, config):
        """(factor, n, Z in the factor's backend, w, G = Σ wᵢ (zᵢzᵢᵀ − I) dense): a drawn factor and
        n ≤ 8 weighted samples, for the natural-gradient tests."""
        factor, rng = self._draw(data, config)
        n = data.draw(st.integers(1, 8), label="n")
        Z, Zx = self._rows(factor, rng, n)
        w = rng.standard_normal(n)
        return factor, n, Zx, w, Z.T @ (w[:, None] * Z) - w.sum() * np.eye(factor.dim)

    @SETTINGS
    @given(data=st.data())
    def test_tangent_arithmetic_matches_dense(self, config, data):
        factor, rng = self._draw(data, config)
        dtype = config[1]
        T1 = factor.natural_gradient(*self._weighted(factor, rng, 3))
        T2 = factor.natural_gradient(*self._weighted(factor, rng, 4))
        D1, D2 = to_numpy(T1.to_dense()), to_numpy(T2.to_dense())
        assert_close((T1 + T2).to_dense(), D1 + D2, dtype, what="sum")
        assert_close((T1 - T2).to_dense(), D1 - D2, dtype, what="difference")
        assert_close((0.3 * T1).to_dense(), 0.3 * D1, dtype, what="scaling")
        assert_close(T1.add_identity(0.7).to_dense(), D1 + 0.7 * np.eye(factor.dim), dtype,
                     what="add_identity")
        assert_close(T1.trace(), np.trace(D1), dtype, scale=factor.dim, what="trace")
        assert_close(T1.norm(), np.linalg.norm(D1), dtype, scale=factor.dim, what="norm")
        zero = factor.zero_tangent()
        assert_close(zero.to_dense(), np.zeros((factor.dim, factor.dim)), dtype, what="zero_tangent")
        assert_close((zero + T1).to_dense(), D1, dtype, what="zero + T")
        assert_close(factor.retract(zero, 0.7).to_dense(), factor.to_dense(), dtype,
                     what="retracting zero")
        g, T0 = factor.split_trace(T1)
        assert_close(g, np.trace(D1) / factor.dim, dtype, what="split_trace scalar")
        assert_close(T0.trace(), 0.0, dtype, scale=factor.dim * (1 + abs(float(to_numpy(g)))),
                     what="split_trace remainder is traceless")
        assert_close(T0.add_identity(g).to_dense(), D1, dtype, what="T0 + g I == T")

    def _weighted(self, factor, rng, n):
        Z, Zx = self._rows(factor, rng, n)
        w = rng.standard_normal(n) / n
        return Zx, factor.xp.asarray(w, dtype=factor.dtype)

    # -- retraction -----------------------------------------------------------------------
    @SETTINGS
    @given(data=st.data())
    def test_retract_matches_dense_exponentials(self, config, data):
        factor, rng = self._draw(data, config)
        dtype = config[1]
        T = factor.natural_gradient(*self._weighted(factor, rng, data.draw(st.integers(1, 6))))
        t = data.draw(st.floats(0.05, 0.8), label="step")
        A = to_numpy(factor.to_dense())
        new = factor.retract(T, t)
        assert type(new) is type(factor) and new.dim == factor.dim
        assert_close(new.to_dense(), self.retract_reference(factor, T, t, "expm", 0), dtype, scale=10,
                     what="expm")
        self.assert_in_group(new, to_numpy(new.to_dense()))
        for order in B.TRUNCATED_ORDERS:
            new = factor.retract(T, t, method="truncated", order=order)
            assert type(new) is type(factor)
            assert_close(new.to_dense(), self.retract_reference(factor, T, t, "truncated", order), dtype,
                         scale=10, what=f"truncated order {order}")
            self.assert_in_group(new, to_numpy(new.to_dense()))
        # the factor itself is unchanged (factors are immutable)
        assert_close(factor.to_dense(), A, dtype, what="retract must not modify its factor")

    @SETTINGS
    @given(data=st.data())
    def test_traceless_step_keeps_determinant(self, config, data):
        factor, rng = self._draw(data, config)
        dtype = config[1]
        T = factor.natural_gradient(*self._weighted(factor, rng, 5))
        _, T0 = factor.split_trace(T)
        new = factor.retract(T0, 0.5)
        assert_close(new.logdet(), factor.logdet(), dtype, scale=10 * factor.dim,
                     what="log|det A| after a traceless expm step")

    @settings(SETTINGS, max_examples=6)
    @given(data=st.data())
    def test_truncated_error_shrinks_with_order(self, data):
        factor, rng = self._draw(data, ("numpy", "float64"))
        T = factor.natural_gradient(*self._weighted(factor, rng, 4))
        T = T * (1.0 / float(to_numpy(T.norm())))  # ‖M‖_F = 1
        exact = {t: to_numpy(factor.retract(T, t).to_dense()) for t in (0.02, 0.04)}
        for order in B.TRUNCATED_ORDERS:
            err = {t: np.linalg.norm(to_numpy(factor.retract(T, t, "truncated", order).to_dense())
                                     - exact[t]) for t in exact}
            slope = math.log2(err[0.04] / err[0.02])
            assert abs(slope - (order + 1)) < 0.35, f"order {order}: error ~ t^{slope:.2f}"

    # -- state ----------------------------------------------------------------------------
    @SETTINGS
    @given(data=st.data())
    def test_state_dict_round_trip_is_exact(self, config, data):
        factor, _ = self._draw(data, config)
        state = factor.state_dict()
        for rebuilt in (type(factor).from_state_dict(state), from_state_dict(state)):
            assert type(rebuilt) is type(factor)
            assert rebuilt.dtype == factor.dtype and rebuilt.xp.name == factor.xp.name
            assert np.array_equal(to_numpy(rebuilt.to_dense()), to_numpy(factor.to_dense()))
        # the state holds copies: changing it later does not change the factor
        before = to_numpy(factor.to_dense())
        _scribble(state)
        assert np.array_equal(to_numpy(factor.to_dense()), before)

    # -- bad input ------------------------------------------------------------------------
    def test_bad_input_raises_clear_errors(self, config):
        backend, dtype = config
        factor = self.large_factor(12)
        factor = type(factor).from_state_dict(_convert(factor.state_dict(), backend, dtype))
        d = factor.dim
        xp = factor.xp
        with pytest.raises(ValueError, match=r"shape \(\.\.\., 12\)"):
            factor.apply(xp.zeros((3, d + 1), dtype=factor.dtype))
        with pytest.raises(ValueError, match="Z must have shape"):
            factor.natural_gradient(xp.zeros((3, d - 1), dtype=factor.dtype), xp.zeros(3))
        with pytest.raises(ValueError, match="w must have shape"):
            factor.natural_gradient(xp.zeros((3, d), dtype=factor.dtype),
                                    xp.zeros(4, dtype=factor.dtype))
        bad = np.zeros((3, d))
        bad[1, 2] = np.nan
        with pytest.raises(ValueError, match="non-finite"):
            factor.natural_gradient(xp.asarray(bad, dtype=factor.dtype),
                                    xp.zeros(3, dtype=factor.dtype))
        with pytest.raises(ValueError, match="G must have shape"):
            factor.project(xp.zeros((d, d + 1), dtype=factor.dtype))
        T = factor.natural_gradient(xp.ones((2, d), dtype=factor.dtype),
                                    xp.ones(2, dtype=factor.dtype))
        with pytest.raises(ValueError, match="method must be one of"):
            factor.retract(T, 0.1, method="no-such-method")
        with pytest.raises(ValueError, match="order must be one of"):
            factor.retract(T, 0.1, method="truncated", order=7)
        with pytest.raises(TypeError):
            factor.retract(object(), 0.1)
        state = _convert(factor.state_dict(), backend, dtype)
        _poison(state)
        with pytest.raises(ValueError, match="non-finite"):
            type(factor).from_state_dict(state)

    # -- the structured fast path never builds d×d ------------------------------------------
    def test_fast_path_allocates_no_dense_matrix(self):
        if self.dense_structure or not self.large_dim:
            pytest.skip("dense structure: d×d is its size")
        factor = self.large_factor(self.large_dim)
        d, n = factor.dim, 8
        rng = np.random.default_rng(0)
        Z = rng.standard_normal((n, d))
        w = rng.standard_normal(n) / n
        tracemalloc.start()
        try:
            T = factor.natural_gradient(Z, w)
            g, T0 = factor.split_trace(T)
            new = factor.retract(T0, 0.1)
            new = new.retract(T0, 0.1, method="truncated", order=3)
            new.apply(Z)
            new.solve(Z)
            new.logdet()
            T0.norm()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        dense_bytes = 8 * d * d
        assert peak < dense_bytes / 8, (f"peak allocation {peak / 1e6:.1f} MB on the fast path; "
                                        f"a d×d matrix is {dense_bytes / 1e6:.1f} MB")


def _series(M: np.ndarray, order: int) -> np.ndarray:
    return sum(np.linalg.matrix_power(M, j) / math.factorial(j) for j in range(order + 1))


def _walk(state, fn):
    if isinstance(state, dict):
        return {k: _walk(v, fn) for k, v in state.items()}
    if isinstance(state, list):
        return [_walk(v, fn) for v in state]
    return fn(state)


def _convert(state, backend: str, dtype: str):
    xp = B.get_backend(backend)

    def fn(v):
        if isinstance(v, np.ndarray) or B.is_torch(v):
            return xp.asarray(to_numpy(v), dtype=xp.dtype_of(dtype))
        return dtype if isinstance(v, str) and v.startswith(("float", "bfloat")) else v

    return _walk(state, fn)


def _scribble(state) -> None:
    def fn(v):
        if isinstance(v, np.ndarray) or B.is_torch(v):
            v[...] = 12345.0
        return v

    _walk(state, fn)


def _poison(state) -> None:
    done = []

    def fn(v):
        if (isinstance(v, np.ndarray) or B.is_torch(v)) and not done and v.ndim >= 1:
            v.reshape(-1)[0] = float("nan")
            done.append(True)
        return v

    _walk(state, fn)
