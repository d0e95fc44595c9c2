"""Structured factors A of a Gaussian N(m, σ² A Aᵀ), behind one ``Factor`` interface.

``make(name, dim, **kw)`` builds the identity factor of a structure:

======================  ==================================================  =====================
name                    A                                                   keywords
======================  ==================================================  =====================
``"full"``              dense invertible d×d (xNES)                         –
``"diagonal"``          diag(a) (SNES)                                      –
``"blockdiag"``         block-diagonal with dense blocks                    ``blocks``
``"kronecker"``         A₁ ⊗ A₂ for x reshaped to a d₁×d₂ matrix            ``shape=(d₁, d₂)``
``"lowrank"``           block-triangular [[A₁₁, 0], [A₂₁, D]] (rank k)      ``rank=k``
``"spectral"``          S^{1/2} = Q diag(λ)^{1/2} Qᵀ kept factorized        ``eps`` (optional)
``"lowrank-cov"``       D(I + Q diag(a) Qᵀ), a ≥ 0: Σ = D(I + VVᵀ)D          ``rank=k``; ``seed``,
                        (rotation invariant; adds variance: valleys)        ``eps``, ``diagonal_rate``
``"lowrank-precision"`` D(I + Q diag(a) Qᵀ), −1 < a ≤ 0:                     ``rank=k``; ``seed``,
                        Σ⁻¹ = D⁻¹(I + VVᵀ)D⁻¹ (removes variance: stiff)     ``eps``, ``diagonal_rate``
======================  ==================================================  =====================

Every factory also takes ``backend="numpy" | "torch"``, ``dtype`` and ``device``.
"""

from __future__ import annotations

from .base import RETRACT_METHODS, Factor, Tangent, from_state_dict, registry
from .blockdiag import BlockDiagonal, BlockTangent
from .dense import Dense, DenseTangent
from .diagonal import Diagonal, DiagonalTangent
from .kronecker import Kronecker, KroneckerTangent
from .lowrank import LowRank, LowRankTangent
from .spectral import Spectral, SpectralTangent
from .symmetric_lowrank import LowRankCov, LowRankPrecision, SymmetricLowRank, SymmetricLowRankTangent

__all__ = [
    "Factor", "Tangent", "make", "names", "from_state_dict", "registry", "RETRACT_METHODS",
    "Dense", "DenseTangent", "Diagonal", "DiagonalTangent", "BlockDiagonal", "BlockTangent",
    "Kronecker", "KroneckerTangent", "LowRank", "LowRankTangent", "Spectral", "SpectralTangent",
    "SymmetricLowRank", "LowRankCov", "LowRankPrecision", "SymmetricLowRankTangent",
]

# structure name -> (required keywords, optional keywords)
_KEYWORDS = {"full": ((), ()), "diagonal": ((), ()), "blockdiag": (("blocks",), ()),
             "kronecker": (("shape",), ()), "lowrank": (("rank",), ()), "spectral": ((), ("eps",)),
             "lowrank-cov": (("rank",), ("seed", "eps", "diagonal_rate")),
             "lowrank-precision": (("rank",), ("seed", "eps", "diagonal_rate"))}
_ALIASES = {"dense": "full", "diag": "diagonal", "block-diagonal": "blockdiag",
            "kron": "kronecker", "low-rank": "lowrank"}


def names() -> tuple[str, ...]:
    """The structure names ``make`` accepts (aliases not included)."""
    return tuple(_KEYWORDS)


def make(name: str, dim: int, *, backend: str = "numpy", dtype=None, device=None, **kw) -> Factor:
    """The identity factor (A = I) of structure ``name`` in dimension ``dim``.

    Args:
        name: one of ``names()``: "full", "diagonal", "blockdiag", "kronecker", "lowrank",
            "spectral", "lowrank-cov", "lowrank-precision".
        dim: d, the dimension.
        backend, dtype, device: where the factor's arrays live ("numpy" float64 by default).
        blocks: for "blockdiag", a list of block sizes summing to d, or a number of blocks (sizes
            as equal as possible).
        shape: for "kronecker", (d₁, d₂) with d₁·d₂ = d.
        rank: for "lowrank", the size k of the dense anchor block, 1 ≤ k < d; for "lowrank-cov" and
            "lowrank-precision", the number k of orthonormal directions, 1 ≤ k < d.
        seed: for "lowrank-cov" and "lowrank-precision", the seed of the initial random directions Q
            (default 0; deterministic).
        eps: for "spectral", "lowrank-cov" and "lowrank-precision", the damping of rotations between
            near-equal eigenvalues.
        diagonal_rate: for "lowrank-cov" and "lowrank-precision", the relative learning rate ρ of the
            shape of the diagonal D (``symmetric_lowrank`` module; default 0.05).

    Example:
        >>> from natgrad_es.structures import make
        >>> make("lowrank", 10, rank=3)
        LowRank(dim=10, rank=3, dtype=float64, backend=numpy)
    """
    if not isinstance(name, str):
        raise TypeError(f"structure name must be a string, got {type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _KEYWORDS:
        raise ValueError(f"unknown structure {name!r}; valid names: {', '.join(names())}")
    required, optional = _KEYWORDS[key]
    allowed = required + optional
    unexpected = sorted(set(kw) - set(allowed))
    if unexpected:
        hint = f"it takes {', '.join(allowed)}" if allowed else "it takes no structure keywords"
        raise TypeError(f"structure {key!r} got unexpected keyword(s) {unexpected}; {hint}")
    for k in required:
        if k not in kw:
            raise TypeError(f"structure {key!r} needs the keyword {k!r}")
    where = {"backend": backend, "dtype": dtype, "device": device}
    if key == "full":
        return Dense.identity(dim, **where)
    if key == "diagonal":
        return Diagonal.identity(dim, **where)
    if key == "blockdiag":
        return BlockDiagonal.identity(dim, kw["blocks"], **where)
    if key == "kronecker":
        return Kronecker.identity(dim, kw["shape"], **where)
    if key == "spectral":
        return Spectral.identity(dim, **kw, **where)
    if key == "lowrank-cov":
        return LowRankCov.identity(dim, **kw, **where)
    if key == "lowrank-precision":
        return LowRankPrecision.identity(dim, **kw, **where)
    return LowRank.identity(dim, kw["rank"], **where)
