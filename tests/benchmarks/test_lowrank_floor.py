"""Smoke test of benchmarks/lowrank_floor.py's fused generation (a cost model: it must run, stay
finite and keep its shapes; its numbers are not used)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import lowrank_floor  # noqa: E402


def test_fused_generation_moves_the_mean_and_keeps_shapes():
    g = lowrank_floor.FusedLowRank(50, 3, 8, seed=0)
    for _ in range(20):
        g.generation()
    assert g.Q.shape == (50, 3) and g.delta.shape == (50,) and g.mean.shape == (50,)
    assert np.all(np.isfinite(g.Q)) and np.all(g.delta > 0) and np.any(g.mean != 0)
