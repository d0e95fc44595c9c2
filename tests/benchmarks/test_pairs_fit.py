"""Smoke test of benchmarks/pairs_fit.py: one planted fit, its record and the whitened condition."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pairs_fit  # noqa: E402


def test_one_fit_recovers_the_planted_stiff_subspace():
    r = pairs_fit.one_fit("stiff", 40, 16, seed=1, module=None)
    assert r["N"] == 16 * pairs_fit.RANK * 40 and r["accepted"] and r["rank"] == pairs_fit.RANK
    assert r["held_out"] < 1e-3 and r["passes"] >= 3 * r["iterations"]
    assert 1 <= r["condition"] < 1.1 and r["maxrss_gib"] > 0


def test_a_fit_from_too_few_pairs_is_not_accepted():
    r = pairs_fit.one_fit("valley", 40, 1, seed=2, module=None)
    assert not r["accepted"]


def test_trace_follows_the_fit_to_the_planted_subspace():
    r = pairs_fit.one_fit("stiff", 40, 16, seed=1, module=None, trace=True)
    trace = r["trace"]
    assert len(trace) >= r["iterations"] + 1  # the start, then at least one point a step
    assert [x["passes"] for x in trace] == sorted(x["passes"] for x in trace)
    assert trace[-1]["res"] < 1e-6 and trace[-1]["cos2_min"] > 1 - 1e-6
    assert all(0 <= x["cos2_min"] <= x["cos2_mean"] <= 1 + 1e-12 for x in trace)


def test_one_fit_leaves_the_pairs_module_as_it_found_it():
    from natgrad_es.es import pairs

    before = (pairs._point, pairs.fit_curvature, pairs._fit_s_and_C)
    pairs_fit.one_fit("stiff", 40, 16, seed=1, module=None, trace=True)
    assert (pairs._point, pairs.fit_curvature, pairs._fit_s_and_C) == before
