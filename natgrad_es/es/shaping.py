"""Fitness shaping: rank-based utilities, with ties sharing their average utility.

An evolution strategy uses f only through the ranks of a generation's n values (minimisation: rank
1 is the smallest f).  A *utility table* gives the weight of each rank; ``assign`` hands each sample
the weight of its rank, and samples whose f values are equal get the *average* weight of the ranks
they occupy, so the order in which tied samples were drawn cannot matter (a plateau, a rounded or
clipped objective).  Non-finite values must be replaced before ranking (``strategy`` maps them to
+inf: worst, and tied with each other).

``assign`` takes numpy arrays or torch tensors: on torch it ranks on the tensor's device (stable
``argsort``, tie groups from a cumulative sum, group means by ``index_add``) with no host
round-trip, and gives the same utilities as numpy (float64; exactly, except that the tie averages
may be summed in another order).

Tables (i = 1..n, best first):

* ``xnes_utilities``:  uᵢ = max(0, ln(n/2 + 1) − ln i)/Σⱼ max(0, ln(n/2 + 1) − ln j) − 1/n,
  summing to 0  [Glasmachers et al. 2010; algorithms.md §2].
* ``recombination_weights``:  w'ᵢ = ln((n + 1)/2) − ln i; the μ = ⌊n/2⌋ positive ones are
  normalised to Σ w⁺ = 1, the negative ones to Σ |w⁻| = 1  [Hansen 2016, arXiv:1604.00772,
  eqs. (49)–(53); algorithms.md §2b: with Σ|w⁻| = 1 the active update equals the tutorial's ΔC].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import is_torch

__all__ = ["RecombinationWeights", "recombination_weights", "xnes_utilities", "assign", "ranks", "rank_dtype"]


def xnes_utilities(n: int) -> np.ndarray:
    """The xNES utility of each rank (best first), shape (n,), summing to 0."""
    n = _check_n(n)
    raw = np.maximum(0.0, np.log(n / 2 + 1) - np.log(np.arange(1, n + 1)))
    return raw / raw.sum() - 1.0 / n


@dataclass(frozen=True)
class RecombinationWeights:
    """CMA-style weights by rank (best first), split in a positive and a negative part.

    Attributes:
        positive: (n,) w⁺, non-negative, Σ = 1, non-zero for the μ best ranks.
        negative: (n,) w⁻, non-positive, Σ |w⁻| = 1 (or all zero when n < 3).
        mu: μ, the number of positive weights.
        mu_eff: μ_eff = 1/Σ (w⁺ᵢ)², the variance-effective selection mass.
        mu_eff_minus: μ⁻_eff = (Σ w⁻)²/Σ (w⁻)², the same for the negative weights.
    """

    positive: np.ndarray
    negative: np.ndarray
    mu: int
    mu_eff: float
    mu_eff_minus: float

    @property
    def table(self):
        """(2, n): ``positive`` and ``negative`` stacked, to rank both at once (``assign``)."""
        if is_torch(self.positive):
            import torch

            return torch.stack([self.positive, self.negative])
        return np.stack([self.positive, self.negative])


def recombination_weights(n: int) -> RecombinationWeights:
    """The log-linear weights of CMA-ES for population size n  [Hansen 2016, eq. (49)]."""
    n = _check_n(n)
    raw = np.log((n + 1) / 2) - np.log(np.arange(1, n + 1))
    mu = n // 2
    pos = np.where(np.arange(n) < mu, np.maximum(raw, 0.0), 0.0)
    pos = pos / pos.sum()
    neg = np.minimum(np.where(np.arange(n) >= mu, raw, 0.0), 0.0)
    if neg.sum() < 0:
        neg = neg / -neg.sum()
        mu_eff_minus = float(neg.sum() ** 2 / (neg ** 2).sum())
    else:
        mu_eff_minus = 0.0
    return RecombinationWeights(pos, neg, mu, float(1 / (pos ** 2).sum()), mu_eff_minus)


def ranks(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, group) for f of shape (n,): ``f[order]`` ascending (stable), and for each position
    of the sorted list the index of its group of equal values (0, 0, 1, 2, 2, …)."""
    f = np.asarray(f, dtype=np.float64)
    order = np.argsort(f, kind="stable")
    fs = f[order]
    new_group = np.empty(len(fs), dtype=bool)
    new_group[:1] = True
    new_group[1:] = fs[1:] != fs[:-1]
    return order, np.cumsum(new_group) - 1


def assign(f, table: np.ndarray) -> np.ndarray:
    """The utility of each sample: ``table[rank]``, averaged over tied f values.

    Args:
        f: (n,) objective values, all comparable (no NaN; ±inf allowed and tied with each other).
        table: (n,) utilities by rank, best (smallest f) first, or (k, n): k tables ranked at once
            (one sort).

    Returns:
        u: float64 of ``table``'s shape with u[..., i] the (tie-averaged) utility of sample i;
        Σ u = Σ table along the last axis.

    With a torch tensor f the result is a tensor on f's device (float64, float32 on devices
    without float64), ``table`` a numpy array or a tensor; f is not checked for NaN there (that
    would need a host round-trip): the caller must have mapped NaN to +inf.

    Example:
        >>> assign([3.0, 1.0, 1.0], np.array([0.6, 0.3, 0.1]))
        array([0.1 , 0.45, 0.45])
    """
    if is_torch(f):
        return _assign_torch(f, table)
    f = np.asarray(f, dtype=np.float64)
    table = np.asarray(table, dtype=np.float64)
    if f.ndim != 1 or table.ndim not in (1, 2) or table.shape[-1:] != f.shape:
        raise ValueError(f"f must have shape (n,) and table (n,) or (k, n), got {f.shape} and "
                         f"{table.shape}")
    if np.isnan(f).any():
        raise ValueError("f has NaN entries: map them to +inf (worst) before ranking")
    order, group = ranks(f)
    u = np.empty_like(table)
    if group[-1] == len(f) - 1:  # no ties
        u[..., order] = table
        return u
    counts = np.bincount(group)
    for row_u, row in zip(u.reshape(-1, len(f)), table.reshape(-1, len(f))):
        row_u[order] = (np.bincount(group, weights=row) / counts)[group]
    return u


def rank_dtype(device):
    """The torch dtype utilities are computed in on ``device``: float64, float32 where the device
    has no float64 (Apple's MPS)."""
    import torch

    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def _assign_torch(f, table):
    """``assign`` on the device of the tensor f (no host round-trip)."""
    import torch

    dtype = rank_dtype(f.device)
    table = torch.as_tensor(table, dtype=dtype, device=f.device)
    if f.ndim != 1 or table.ndim not in (1, 2) or tuple(table.shape[-1:]) != tuple(f.shape):
        raise ValueError(f"f must have shape (n,) and table (n,) or (k, n), got {tuple(f.shape)} "
                         f"and {tuple(table.shape)}")
    if not f.is_floating_point():
        f = f.to(dtype)
    n = f.shape[0]
    order = torch.argsort(f, stable=True)
    fs = f[order]
    new_group = torch.ones(n, dtype=torch.bool, device=f.device)
    new_group[1:] = fs[1:] != fs[:-1]
    group = torch.cumsum(new_group, 0) - 1  # group of each sorted position: 0, 0, 1, 2, 2, …
    sums = torch.zeros_like(table).index_add_(-1, group, table)
    ones = torch.ones(n, dtype=dtype, device=f.device)
    counts = torch.zeros_like(ones).index_add_(0, group, ones)
    return torch.empty_like(table).scatter_(-1, order.expand_as(table), (sums / counts)[..., group])


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"the population size must be an integer >= 2, got {n!r}")
    return int(n)
