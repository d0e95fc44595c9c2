"""How fast can a rank-k generation be in numpy?  A floor for item 4 of issue 12, beside pypop7 SNES.

Issue 12 asks for ≥ 100k evaluations/s at d = 1000 with a batch objective, about 1.5× pypop7 SNES.
At the default n = 24 a generation then has ~0.65/1.5 of SNES's time.  This script measures, in one
process and one thread, CPU milliseconds a generation *without f* (n = 24, d = 1000, k = 10):

* ``draw``: the n×d standard normals alone (numpy's default PCG64 generator, as ours and SNES use);
* ``floor``: a hand-fused rank-k generation with the work any such generation must do and nothing
  else — the draw, A z = δ ⊙ (z + Q(a ⊙ Qᵀz)), ranking, the weighted mean, the k-dim projections
  Zᵀ W Y of the natural gradient, the diagonal Σ wᵢ zᵢ², and Q's rotation through a 2k×2k expm —
  with no checks, no paths, no bookkeeping (it is a cost model, not an optimiser: its numbers are
  not used);
* ``ours``: ``NaturalES`` with ``lowrank-precision`` (ranks) and ``lowrank`` (block-triangular),
  and pypop7 SNES, each through ``highdim.run_one`` (``--throughput``'s path: f's time subtracted).

The ratio floor ÷ SNES bounds what any numpy implementation of the low-rank update reaches at this
n on this machine; the draw is the part a second core can take (``draw_ahead=True``).

    python benchmarks/lowrank_floor.py --repeats 5
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import highdim  # noqa: E402

from natgrad_es.es.shaping import recombination_weights  # noqa: E402


class FusedLowRank:
    """The minimal work of one rank-k generation (see the module docstring), on fixed f values."""

    def __init__(self, d: int, k: int, n: int, seed: int = 0):
        rng = np.random.default_rng([seed, 1])
        self.Q = np.linalg.qr(rng.standard_normal((d, k)))[0]
        self.a, self.delta, self.mean = np.full(k, -0.5), np.ones(d), np.zeros(d)
        self.f = rng.standard_normal(n)  # fixed values: the ranking's cost, not its outcome
        weights = recombination_weights(n)
        self.w = weights.positive + weights.negative
        self.rng = np.random.default_rng(seed)
        self.n, self.d, self.k = n, d, k

    def generation(self) -> None:
        Q, a, k = self.Q, self.a, self.k
        Z = self.rng.standard_normal((self.n, self.d))
        Y = Z @ Q
        X = (Y * a) @ Q.T
        X += Z
        X *= 0.5 * self.delta
        X += self.mean
        w = np.empty(self.n)
        w[np.argsort(self.f)] = self.w
        zbar = w @ Z
        self.mean = self.mean + 0.5 * self.delta * (zbar + Q @ (a * (Q.T @ zbar)))
        WY = w[:, None] * Y
        YWY = Y.T @ WY
        B = Z.T @ WY - Q @ YWY
        nu = w @ (Z * Z) - np.einsum("ij,ij->i", Q, B) - (1 - (Q * Q).sum(-1))
        G = np.zeros((2 * k, 2 * k))
        G[:k, :k], G[:k, k:], G[k:, :k] = 1e-3 * (YWY - YWY.T), -1e-6 * (B.T @ B), 1e-3 * np.eye(k)
        R = scipy.linalg.expm(G)
        self.Q = Q @ R[:k, :k] + 1e-3 * B @ R[k:, :k]
        self.delta = self.delta * np.exp(1e-4 * (nu - nu.mean()))


def _ms_per_generation(step, generations: int) -> float:
    for _ in range(10):
        step()
    t = time.process_time()
    for _ in range(generations):
        step()
    return 1e3 * (time.process_time() - t) / generations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1000)
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--popsize", type=int, default=24)
    parser.add_argument("--generations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    d, k, n = args.dim, args.rank, args.popsize
    rows: dict[str, list[float]] = {}

    def add(name: str, ms: float) -> None:
        rows.setdefault(name, []).append(ms)

    for _ in range(args.repeats):  # interleaved: the machine's drift hits every row alike
        draw = functools.partial(np.random.default_rng(0).standard_normal, (n, d))
        add("draw (n×d normals, PCG64)", _ms_per_generation(draw, args.generations))
        add("floor: fused rank-k generation", _ms_per_generation(FusedLowRank(d, k, n).generation,
                                                                 args.generations))
        for key in ("lowrank-precision", "lowrank", "snes"):
            r = highdim.run_one(key, "stiff_subspace", d, 1, args.generations * n, rank=k,
                                target=-float("inf"), popsize=n)
            add(highdim.METHODS[key].label, r["ms_per_generation_without_f"])

    snes = statistics.median(rows[highdim.METHODS["snes"].label])
    print(f"d = {d}, k = {k}, n = {n}; CPU ms a generation without f, median of {args.repeats} "
          f"(min–max); evaluations/s = n / time")
    print("| | ms / generation | evaluations/s without f | ÷ pypop7 SNES |")
    print("|---|---|---|---|")
    for name, ms in rows.items():
        med = statistics.median(ms)
        print(f"| {name} | {med:.3f} ({min(ms):.3f}–{max(ms):.3f}) | {1e3 * n / med:,.0f} | "
              f"{snes / med:.2f}× |")
    print(f"1.5× SNES needs {snes / 1.5:.3f} ms a generation.")


if __name__ == "__main__":
    main()
