"""The ``Factor`` interface: a structured square root A of a covariance, moved by Lie-group steps.

A search distribution (or variational posterior) is N(m, σ² A Aᵀ).  Samples are rows:
Z is (n, d) with rows zᵢ ~ N(0, I) and X = m + σ Z Aᵀ.  A lives in a matrix group G (dense,
diagonal, block-diagonal, Kronecker, block-triangular); a step is multiplicative,

    A ← A · h(t · M),      h = expm  or  h_p(M) = Σ_{j≤p} M^j / j!,

with M a ``Tangent``: an element of G's Lie algebra 𝔤, stored in the structure's own compact form
(never a dense d×d matrix unless the structure is dense).  Because A·h(tM) stays in G, the structure
is kept by construction.  See ``../shared/design/algorithms.md`` §1–3.

Conventions (algorithms.md §3, "Convention of this table"): ``natural_gradient(Z, w)`` returns the
Fisher-natural gradient of Σᵢ wᵢ log q(xᵢ) in local coordinates at M = 0, i.e. the projection of the
dense G = Σᵢ wᵢ (zᵢzᵢᵀ − I) onto 𝔤 with inverse-Fisher weights, scaled so that the step that goes
with it is A ← A · expm(η/2 · M) (the dense row is G itself; a one-sided block is doubled).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from .. import backend as B

__all__ = ["Factor", "Tangent", "RETRACT_METHODS", "register", "registry", "from_state_dict",
           "tangent_from_state_dict"]

RETRACT_METHODS = ("expm", "truncated")

_REGISTRY: dict[str, type[Factor]] = {}


def register(cls: type[Factor]) -> type[Factor]:
    """Class decorator: make ``cls`` known to ``from_state_dict`` under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Factor]]:
    """The registered Factor classes by name (a copy)."""
    return dict(_REGISTRY)


def from_state_dict(state: dict) -> Factor:
    """Rebuild any registered factor from its ``state_dict()``."""
    if not isinstance(state, dict) or "structure" not in state:
        raise ValueError("a factor state_dict is a dict with a 'structure' key")
    name = state["structure"]
    if name not in _REGISTRY:
        raise ValueError(f"unknown structure {name!r} in state_dict; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name].from_state_dict(state)


class Tangent(ABC):
    """An element M of a structure's Lie algebra 𝔤, in the structure's compact form.

    Tangents form a vector space: ``T1 + T2``, ``c * T``, ``-T``; ``trace()`` and ``norm()`` (the
    Frobenius norm) are those of the dense matrix ``to_dense()`` but computed without forming it.

    Subclasses are frozen dataclasses whose fields are ints, floats, arrays, None, nested tangents or
    tuples of them; that is all ``state_dict`` needs.  Fields named in ``_point_fields`` pin a tangent
    to the point it was taken at (Spectral's Q, λ): they are not serialized but taken back from the
    factor's attributes of the same names by ``tangent_from_state_dict``.
    """

    dim: int
    #: fields that are the point (arrays of the factor), not the tangent: restored from the factor
    _point_fields: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def to_dense(self):
        """The d×d matrix M (for tests and small d)."""

    @abstractmethod
    def trace(self):
        """tr M, as a 0-d array."""

    @abstractmethod
    def norm(self):
        """Frobenius norm ‖M‖_F, as a 0-d array."""

    @abstractmethod
    def add_identity(self, c) -> Tangent:
        """M + c·I (every algebra here contains the identity)."""

    @abstractmethod
    def __mul__(self, c) -> Tangent:
        """c·M for a scalar c."""

    @abstractmethod
    def __add__(self, other: Tangent) -> Tangent:
        """M₁ + M₂ for two tangents of the same structure and dimension."""

    def __rmul__(self, c) -> Tangent:
        return self * c

    def __neg__(self) -> Tangent:
        return self * -1.0

    def __sub__(self, other: Tangent) -> Tangent:
        return self + (-other)

    def state_dict(self) -> dict[str, Any]:
        """``{"tangent": class name, "fields": {name: value}}`` with array fields copied (an exact
        checkpoint, e.g. of a momentum buffer); rebuild with ``tangent_from_state_dict``."""
        if not dataclasses.is_dataclass(self):
            raise TypeError(f"{type(self).__name__} is not a dataclass: it must implement state_dict itself")
        return {"tangent": type(self).__name__,
                "fields": {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)
                           if f.name not in self._point_fields}}

    def _check_same(self, other: Tangent) -> None:
        if type(other) is not type(self) or other.dim != self.dim:
            raise TypeError(f"cannot combine {type(self).__name__}(dim={self.dim}) with "
                            f"{type(other).__name__}(dim={getattr(other, 'dim', '?')})")


class Factor(ABC):
    """A structured, invertible d×d matrix A: the square-root factor of a covariance σ² A Aᵀ.

    Factors are immutable: ``retract`` returns a new factor.  All batched operations take rows,
    shape (…, d), and work on numpy arrays or torch tensors (the factor's own backend).

    Subclasses implement the primitives below with the costs of architecture.md; a structured
    subclass never builds a d×d array except in ``to_dense`` and ``project``.
    """

    name: ClassVar[str]
    #: the ``method`` names ``retract`` accepts
    retract_methods: ClassVar[tuple[str, ...]] = RETRACT_METHODS

    # -- description ------------------------------------------------------------------------
    @property
    @abstractmethod
    def dim(self) -> int:
        """d, the dimension of the search space."""

    @property
    @abstractmethod
    def num_parameters(self) -> int:
        """Free parameters of the group (dense d², diagonal d, …): what learning rates scale by."""

    @property
    @abstractmethod
    def dtype(self):
        """The dtype of the factor's arrays."""

    @property
    @abstractmethod
    def xp(self) -> B.Backend:
        """The backend (numpy or torch) of the factor's arrays."""

    @property
    def device(self):
        return self.xp.device_of(self._first_array())

    @abstractmethod
    def _first_array(self):
        """Any one of the factor's arrays (for dtype and device)."""

    # -- linear maps ------------------------------------------------------------------------
    @abstractmethod
    def apply(self, Z):
        """Rows A zᵢ: ``Z Aᵀ`` for Z of shape (…, d)."""

    @abstractmethod
    def apply_transpose(self, Z):
        """Rows Aᵀ zᵢ: ``Z A`` for Z of shape (…, d)."""

    @abstractmethod
    def solve(self, X):
        """Rows A⁻¹ xᵢ: ``X A⁻ᵀ`` for X of shape (…, d) (recovers z from a changed x)."""

    @abstractmethod
    def logdet(self):
        """log |det A| as a 0-d array."""

    @abstractmethod
    def to_dense(self):
        """A as a d×d array (for tests and small d)."""

    def is_finite(self) -> bool:
        """True when A has no NaN or infinite entry (the default probes A·1: any such entry of A
        reaches it).  Structures override it with a check of their own parameters."""
        xp = self.xp
        return xp.all_finite(self.apply(xp.ones(self.dim, dtype=self.dtype, device=self.device)))

    def singular_values(self):
        """The singular values of A, descending (the axis lengths of the search ellipsoid / σ).

        Structures with a closed form override this; the default is an SVD of ``to_dense()``
        (O(d³) time, d×d memory).
        """
        xp = self.xp
        A = self.to_dense()
        if xp.name == "torch":
            return xp.linalg.svdvals(xp._wide(A)).to(A.dtype)
        return xp.linalg.svd(A, compute_uv=False)

    # -- geometry ---------------------------------------------------------------------------
    @abstractmethod
    def natural_gradient(self, Z, w) -> Tangent:
        """Natural gradient Σᵢ wᵢ (zᵢzᵢᵀ − I) projected onto 𝔤, from Z (n, d) and w (n,).

        Weights need not sum to zero (evolution paths enter as extra rows with their own weights).
        """

    @abstractmethod
    def project(self, G) -> Tangent:
        """The natural-gradient projection onto 𝔤 of a dense symmetric d×d matrix G.

        ``natural_gradient(Z, w)`` equals ``project(Σᵢ wᵢ (zᵢzᵢᵀ − I))``; this form is for
        estimators that produce AᵀĤA directly (VI with a Hessian) and costs O(d²) memory.
        """

    def zero_tangent(self) -> Tangent:
        """The zero of 𝔤 at this factor (a start for sums such as momentum)."""
        xp = self.xp
        return self.natural_gradient(xp.zeros((0, self.dim), dtype=self.dtype, device=self.device),
                                     xp.zeros(0, dtype=self.dtype, device=self.device))

    def tangent_parts(self) -> tuple[Factor, ...]:
        """The factors of a composite tangent's parts (a tuple field of tangents, as block-diagonal
        has), in order; () for a simple structure.  Used by ``transport`` and
        ``tangent_from_state_dict``."""
        return ()

    def transport(self, tangent: Tangent, new_factor: Factor) -> Tangent:
        """Carry ``tangent``, taken at this factor A, to ``new_factor`` A' (e.g. A' = A·h(tM)), with
        no inverse: the state of a momentum buffer after a step.

        For a matrix group the local coordinates at A and at A' are both the algebra 𝔤 (A(M) = A·h(M)
        and A'(M) = A'·h(M)), and the Fisher metric at M = 0 is the same on 𝔤 at every point (it is
        ½‖dM + dMᵀ‖², whatever A).  The identity map on 𝔤 is therefore an isometry between the two
        tangent spaces, and it is the transport of seed 000 (Lin et al., ICML 2023, arXiv 2302.09738;
        its code ``local_cov.py`` reuses the momentum of the local coordinates unchanged after the
        factor moves, algorithms-sources.md §4).  So the default returns ``tangent`` itself (its parts
        transported for a composite tangent); a structure whose tangent depends on the point
        (``_point_fields``) overrides this.
        """
        self._check_tangent(tangent)
        if type(new_factor) is not type(self) or new_factor.dim != self.dim:
            raise TypeError(f"cannot transport a tangent of {type(self).__name__}(dim={self.dim}) to "
                            f"{type(new_factor).__name__}(dim={getattr(new_factor, 'dim', '?')})")
        if tangent._point_fields:
            raise NotImplementedError(f"{type(tangent).__name__} depends on its point "
                                      f"{tangent._point_fields}: {type(self).__name__} must override "
                                      f"transport")
        parts, new_parts = self.tangent_parts(), new_factor.tangent_parts()
        if not parts:
            return tangent
        if len(parts) != len(new_parts):
            raise TypeError("cannot transport between factors with different numbers of parts")
        changes = {}
        for f in dataclasses.fields(tangent):
            value = getattr(tangent, f.name)
            if isinstance(value, tuple) and value and all(isinstance(v, Tangent) for v in value):
                if len(value) != len(parts):
                    raise TypeError("the tangent's parts do not match the factor's")
                changes[f.name] = tuple(a.transport(v, b) for a, v, b in zip(parts, value, new_parts))
        return dataclasses.replace(tangent, **changes)

    def split_trace(self, tangent: Tangent):
        """(g, M₀) with g = tr M / d and M₀ = M − g I traceless: g drives σ, M₀ the shape."""
        self._check_tangent(tangent)
        g = tangent.trace() / self.dim
        return g, tangent.add_identity(-g)

    def retract(self, tangent: Tangent, step: float = 1.0, method: str = "expm",
                order: int = 2) -> Factor:
        """A · h(step · M): ``method="expm"`` exact, ``"truncated"`` of the given order (1–4).

        The truncated map uses matmuls only (no inverse, no decomposition) and agrees with expm up
        to O(step^(order+1)); it is the structure's own group-preserving polynomial retraction.
        """
        self._check_tangent(tangent)
        if method not in self.retract_methods:
            raise ValueError(f"method must be one of {self.retract_methods}, got {method!r}")
        if method == "truncated":
            order = B._check_order(order)
        return self._retract(tangent, step, method, order)

    @abstractmethod
    def _retract(self, tangent: Tangent, step, method: str, order: int) -> Factor:
        ...

    # -- state ------------------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """A dict with ``"structure"`` and the factor's arrays (copies), enough to rebuild it."""

    @classmethod
    @abstractmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Factor:
        """Rebuild a factor from ``state_dict()``; arrays are validated like the constructor's."""

    # -- helpers for subclasses -------------------------------------------------------------
    def _replace(self, **arrays) -> Factor:
        """A copy with some arrays replaced, skipping validation (for results of retract)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(arrays)
        return new

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(dim={self.dim}, dtype={dtype_name(self.dtype)}, "
                f"backend={self.xp.name})")

    def _check_tangent(self, tangent: Tangent) -> None:
        expected = self.tangent_type
        if not isinstance(tangent, expected) or tangent.dim != self.dim:
            raise TypeError(f"{type(self).__name__}(dim={self.dim}) needs a {expected.__name__} of "
                            f"dim {self.dim}, got {type(tangent).__name__}"
                            f"(dim={getattr(tangent, 'dim', '?')})")

    tangent_type: ClassVar[type[Tangent]]

    def _rows(self, Z, name: str = "Z"):
        """Z as an array of this factor's backend and dtype, with last axis d (shape check only)."""
        Z = self.xp.asarray(Z, dtype=self.dtype, device=self.device)
        if Z.ndim == 0 or Z.shape[-1] != self.dim:
            raise ValueError(f"{name} must have shape (..., {self.dim}), got {tuple(Z.shape)}")
        return Z

    def _samples_and_weights(self, Z, w):
        """Validated (Z (n, d), w (n,)) for ``natural_gradient``."""
        Z = self._rows(Z)
        if Z.ndim != 2:
            raise ValueError(f"Z must have shape (n, {self.dim}), got {tuple(Z.shape)}")
        w = self.xp.asarray(w, dtype=self.dtype, device=self.device)
        if w.ndim != 1 or w.shape[0] != Z.shape[0]:
            raise ValueError(f"w must have shape (n,) = ({Z.shape[0]},) to match Z of shape "
                             f"{tuple(Z.shape)}, got {tuple(w.shape)}")
        check_finite(self.xp, Z, "Z")
        check_finite(self.xp, w, "w")
        return Z, w

    def _square(self, G, name: str = "G"):
        G = self.xp.asarray(G, dtype=self.dtype, device=self.device)
        if G.shape != (self.dim, self.dim):
            raise ValueError(f"{name} must have shape ({self.dim}, {self.dim}), got {tuple(G.shape)}")
        check_finite(self.xp, G, name)
        return 0.5 * (G + G.mT)


def tangent_from_state_dict(factor: Factor, state: dict[str, Any]) -> Tangent:
    """Rebuild a tangent at ``factor`` from ``Tangent.state_dict()``: the arrays come back in the
    factor's backend, float dtype and device, and point fields (``_point_fields``) are the factor's own
    arrays, so the tangent combines with tangents computed at ``factor``."""
    if not isinstance(factor, Factor):
        raise TypeError(f"factor must be a Factor, got {type(factor).__name__}")
    cls = factor.tangent_type
    if not isinstance(state, dict) or not isinstance(state.get("fields"), dict):
        raise ValueError("a tangent state_dict is a dict with 'tangent' and 'fields' keys")
    if state.get("tangent") != cls.__name__:
        raise ValueError(f"state_dict holds a {state.get('tangent')!r}, {type(factor).__name__} needs a "
                         f"{cls.__name__!r}")
    expected = {f.name for f in dataclasses.fields(cls)} - set(cls._point_fields)
    if set(state["fields"]) != expected:
        raise ValueError(f"{cls.__name__} state_dict has fields {sorted(state['fields'])}, expected "
                         f"{sorted(expected)}")
    parts = factor.tangent_parts()
    kwargs = {name: _decode(value, factor, parts) for name, value in state["fields"].items()}
    kwargs.update({name: getattr(factor, name) for name in cls._point_fields})
    tangent = cls(**kwargs)
    if tangent.dim != factor.dim:
        raise ValueError(f"tangent state_dict has dim={tangent.dim}, the factor has dim={factor.dim}")
    return tangent


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic)) or B.is_torch(x)


def _encode(value):
    """A tangent field as checkpoint data: arrays copied, tuples as lists, tangents nested."""
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):  # immutable
        return value
    if isinstance(value, Tangent):
        return value.state_dict()
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    if _is_array(value):
        return B.namespace(value).copy(value)
    raise TypeError(f"cannot serialize a tangent field of type {type(value).__name__}")


def _decode(value, factor: Factor, parts: tuple[Factor, ...]):
    """Inverse of ``_encode`` at ``factor``; nested tangents i are rebuilt at ``parts[i]``."""
    if isinstance(value, dict):
        return tangent_from_state_dict(factor, value)
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            if len(value) != len(parts):
                raise ValueError(f"tangent state_dict has {len(value)} parts, the factor has {len(parts)}")
            return tuple(tangent_from_state_dict(p, v) for p, v in zip(parts, value))
        return tuple(_decode(v, factor, parts) for v in value)
    if _is_array(value):
        xp = factor.xp
        floating = (value.dtype.is_floating_point if B.is_torch(value)
                    else np.issubdtype(value.dtype, np.floating))
        arr = xp.copy(xp.asarray(value, dtype=factor.dtype if floating else None, device=factor.device))
        if floating:
            check_finite(xp, arr, "tangent state_dict")
        return arr[()] if isinstance(value, np.generic) and xp.name == "numpy" else arr
    return value


def check_finite(xp: B.Backend, x, name: str) -> None:
    """Raise ValueError when ``x`` has a NaN or an infinity.

    Skipped for tensors on an accelerator: the check would force a device-to-host sync every call
    (the ES and VI layers check their own state once per generation instead).
    """
    if xp.name == "torch" and x.device.type != "cpu":
        return
    if not xp.all_finite(x):
        raise ValueError(f"{name} has non-finite entries (NaN or inf)")


def as_array(x, backend: str | B.Backend | None, dtype, device, name: str):
    """Convert a constructor argument to an array of the wanted backend, dtype and device."""
    xp = backend if isinstance(backend, B.Backend) else (
        B.get_backend(backend) if backend else B.namespace(x))
    if dtype is None:
        dtype = getattr(x, "dtype", None)
        if dtype is None or (xp.name == "numpy" and not np.issubdtype(np.dtype(dtype), np.floating)):
            dtype = xp.default_dtype()
        if xp.name == "torch" and not dtype.is_floating_point:
            dtype = xp.default_dtype()
    elif isinstance(dtype, str):
        dtype = xp.dtype_of(dtype)
    arr = xp.asarray(x, dtype=dtype, device=device)
    check_finite(xp, arr, name)
    return xp, arr


def dtype_name(dtype) -> str:
    """'float64', 'float32', 'bfloat16', … for numpy and torch dtypes alike."""
    return str(dtype).removeprefix("torch.")


def positive_dim(dim, name: str = "dim") -> int:
    """``dim`` as an int ≥ 1, or a ValueError naming it."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) < 1:
        raise ValueError(f"{name} must be a positive integer, got {dim!r}")
    return int(dim)


def resolve_dtype(xp: B.Backend, dtype):
    """The backend's default float dtype for None, the dtype object for a name, else ``dtype``."""
    if dtype is None:
        return xp.default_dtype()
    return xp.dtype_of(dtype) if isinstance(dtype, str) else dtype


def check_state(state: dict, name: str, keys) -> None:
    """Raise ValueError unless ``state`` is a state_dict of structure ``name`` with ``keys``."""
    if not isinstance(state, dict) or state.get("structure") != name:
        got = state.get("structure") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"not a {name!r} state_dict (structure={got!r})")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{name!r} state_dict lacks {missing}")
