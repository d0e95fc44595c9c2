"""Block-diagonal factor: A = blockdiag(A₁, …, A_b), each block itself a Factor.

The coordinates are split into consecutive blocks of sizes d₁ + … + d_b = d; each block is an
independent factor (dense by default, but any structure works: a block can be diagonal or
Kronecker).  The Lie algebra is the direct sum of the blocks' algebras, so the natural gradient is
the blocks' natural gradients from the column slices Z_β (algorithms.md §3: Zᵦᵀ W Zᵦ per block) and
the retraction is blockwise.  Only the *global* trace goes to σ (``split_trace`` subtracts
tr M / d from every block); per-block traces stay in the shape update.
Costs with dense blocks: sample and natural gradient n Σ dᵦ², retraction Σ dᵦ³ (or n dᵦ² per block
through the Gram form when n < dᵦ).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import backend as B
from .base import Factor, Tangent, check_state, dtype_name, from_state_dict, positive_dim, register
from .dense import Dense
from .diagonal import _descending

__all__ = ["BlockDiagonal", "BlockTangent", "block_sizes"]


@dataclass(frozen=True, eq=False)
class BlockTangent(Tangent):
    """M = blockdiag(M₁, …, M_b), one tangent per block."""

    dim: int
    parts: tuple

    def to_dense(self):
        return B.namespace(self.parts[0].to_dense()).block_diag([p.to_dense() for p in self.parts])

    def trace(self):
        return sum(p.trace() for p in self.parts)

    def norm(self):
        return sum(p.norm() ** 2 for p in self.parts) ** 0.5

    def add_identity(self, c):
        return BlockTangent(self.dim, tuple(p.add_identity(c) for p in self.parts))

    def __mul__(self, c):
        return BlockTangent(self.dim, tuple(p * c for p in self.parts))

    def __add__(self, other):
        self._check_same(other)
        if len(other.parts) != len(self.parts):
            raise TypeError("cannot add block tangents with different block layouts")
        return BlockTangent(self.dim, tuple(p + q for p, q in zip(self.parts, other.parts)))


def block_sizes(dim: int, blocks: int | Sequence[int]) -> tuple[int, ...]:
    """Block sizes from a count (as equal as possible, larger blocks first) or a list summing to d."""
    dim = positive_dim(dim)
    if isinstance(blocks, (int,)) and not isinstance(blocks, bool):
        if not 1 <= blocks <= dim:
            raise ValueError(f"blocks must be between 1 and dim={dim} when given as a count, "
                             f"got {blocks}")
        q, r = divmod(dim, blocks)
        return tuple(q + 1 if i < r else q for i in range(blocks))
    try:
        sizes = tuple(positive_dim(b, "every block size") for b in blocks)
    except TypeError:
        raise TypeError("blocks must be a number of blocks or a sequence of block sizes, "
                        f"got {blocks!r}") from None
    if not sizes:
        raise ValueError("blocks must not be empty")
    if sum(sizes) != dim:
        raise ValueError(f"block sizes {list(sizes)} sum to {sum(sizes)}, not to dim={dim}")
    return sizes


@register
class BlockDiagonal(Factor):
    """A = blockdiag(A₁, …, A_b) for a list of factors (the blocks, in coordinate order)."""

    name = "blockdiag"
    tangent_type = BlockTangent

    def __init__(self, blocks: Sequence[Factor]):
        blocks = tuple(blocks)
        if not blocks or not all(isinstance(b, Factor) for b in blocks):
            raise TypeError("BlockDiagonal needs a non-empty sequence of Factor instances")
        backends = {b.xp.name for b in blocks}
        dtypes = {str(b.dtype) for b in blocks}
        if len(backends) > 1 or len(dtypes) > 1:
            raise ValueError(f"all blocks must share backend and dtype, got {backends}, {dtypes}")
        self.blocks = blocks
        self.sizes = tuple(b.dim for b in blocks)
        self._offsets = tuple(sum(self.sizes[:i]) for i in range(len(self.sizes) + 1))

    @classmethod
    def identity(cls, dim: int, blocks: int | Sequence[int], *, backend: str = "numpy",
                 dtype=None, device=None) -> BlockDiagonal:
        """Dense identity blocks of the given sizes (or number of blocks)."""
        return cls([Dense.identity(s, backend=backend, dtype=dtype, device=device)
                    for s in block_sizes(dim, blocks)])

    dim = property(lambda self: self._offsets[-1])
    num_parameters = property(lambda self: sum(b.num_parameters for b in self.blocks))
    dtype = property(lambda self: self.blocks[0].dtype)
    xp = property(lambda self: self.blocks[0].xp)

    def _first_array(self):
        return self.blocks[0]._first_array()

    def __repr__(self):
        return (f"BlockDiagonal(dim={self.dim}, sizes={list(self.sizes)}, dtype={dtype_name(self.dtype)}, "
                f"backend={self.xp.name})")

    def _slices(self, Z):
        o = self._offsets
        return [Z[..., o[i]:o[i + 1]] for i in range(len(self.blocks))]

    def _map(self, op: str, Z, name="Z"):
        Z = self._rows(Z, name)
        return self.xp.concat([getattr(b, op)(z) for b, z in zip(self.blocks, self._slices(Z))],
                              axis=-1)

    def apply(self, Z):
        return self._map("apply", Z)

    def apply_transpose(self, Z):
        return self._map("apply_transpose", Z)

    def solve(self, X):
        return self._map("solve", X, "X")

    def logdet(self):
        return sum(b.logdet() for b in self.blocks)

    def to_dense(self):
        return self.xp.block_diag([b.to_dense() for b in self.blocks])

    def singular_values(self):
        return _descending(self.xp, self.xp.concat([b.singular_values() for b in self.blocks]))

    def natural_gradient(self, Z, w) -> BlockTangent:
        Z, w = self._samples_and_weights(Z, w)
        return BlockTangent(self.dim, tuple(b.natural_gradient(z, w)
                                            for b, z in zip(self.blocks, self._slices(Z))))

    def project(self, G) -> BlockTangent:
        G = self._square(G)
        o = self._offsets
        return BlockTangent(self.dim, tuple(b.project(G[o[i]:o[i + 1], o[i]:o[i + 1]])
                                            for i, b in enumerate(self.blocks)))

    def tangent_parts(self) -> tuple[Factor, ...]:
        """The blocks: tangent part i lives at block i (for ``transport`` and tangent state dicts)."""
        return self.blocks

    def _retract(self, T: BlockTangent, step, method, order):
        if len(T.parts) != len(self.blocks):
            raise TypeError("tangent block layout does not match the factor's")
        return self._replace(blocks=tuple(b.retract(t, step, method, order)
                                          for b, t in zip(self.blocks, T.parts)))

    def state_dict(self):
        return {"structure": self.name, "blocks": [b.state_dict() for b in self.blocks]}

    @classmethod
    def from_state_dict(cls, state):
        check_state(state, cls.name, ("blocks",))
        return cls([from_state_dict(s) for s in state["blocks"]])
