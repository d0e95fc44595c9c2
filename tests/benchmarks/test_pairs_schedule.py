"""benchmarks/pairs_schedule.py: its problems and one run record (tiny sizes)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pairs_schedule  # noqa: E402

import natgrad_es  # noqa: E402
from problems.functions import StiffSubspace  # noqa: E402


def test_the_late_problem_is_f_plus_its_square_over_f_at_x0():
    (label, structure, p), (_, _, q) = pairs_schedule.cases("late", 30, 12, seed=3)
    assert structure == "lowrank-precision" and p.dim == 12 and "c = 1000" in label
    f = StiffSubspace(12, rank=3, condition=1e3, seed=3)
    F = f(np.full(12, 0.5))
    X = np.random.default_rng(0).standard_normal((4, 12))
    np.testing.assert_allclose(p.f(X), f(X) + f(X) ** 2 / F)
    assert p.f(np.zeros((1, 12)))[0] == p.fopt == 0.0 and q.f(np.zeros((1, 12)))[0] == 0.0
    assert [c[1] for c in pairs_schedule.cases("goal", 30, 12, 1)] == ["lowrank-precision", "lowrank-cov"]


def test_a_run_records_its_fits():
    label, structure, p = pairs_schedule.cases("goal", 20, 12, seed=1)[0]
    r = pairs_schedule.run(natgrad_es, structure, p, seed=1, budget=60_000, rank=3)
    assert r["evaluations_to_target"] is not None and r["f_reached"] <= pairs_schedule.TARGET
    assert r["fits"] == len(r["fit_pairs"]) >= 1 and r["fits_accepted"]
    assert r["fits_accepted"][0] in r["fit_pairs"] and r["cpu_seconds"] > 0
