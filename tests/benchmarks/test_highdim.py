"""Smoke test of benchmarks/highdim.py: the core loop of one of ours and one pypop7 method, the record's
fields, the time cap, the skip rules, the table and the plot (tiny problems, a few seconds)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import highdim  # noqa: E402

FIELDS = {"method", "label", "library", "problem", "dim", "seed", "budget", "objective", "success",
          "evaluations", "evaluations_to_target", "f_reached", "generations", "seconds", "wall_seconds",
          "seconds_f", "ms_per_generation", "ms_per_generation_without_f", "evaluations_per_s",
          "evaluations_per_s_wall", "evaluations_per_s_without_f", "capped", "stop", "curve", "error",
          "popsize"}


def _check_record(r: dict, budget: int) -> None:
    assert FIELDS <= set(r), FIELDS - set(r)
    assert r["error"] is None, r["error"]
    assert 0 < r["evaluations"] <= budget + r["popsize"]
    assert r["generations"] >= 1 and r["popsize"] >= 2
    assert r["seconds"] > 0 and 0 <= r["seconds_f"] <= r["seconds"]
    assert r["ms_per_generation"] >= r["ms_per_generation_without_f"] > 0
    assert r["evaluations_per_s_without_f"] >= r["evaluations_per_s"] > 0
    assert r["evaluations_per_s_wall"] == pytest.approx(r["evaluations"] / r["wall_seconds"])
    evals, values = np.array(r["curve"]).T
    assert evals[-1] == r["evaluations"] and np.all(np.diff(evals) > 0)
    assert np.all(np.diff(values) <= 0) and values[-1] == r["f_reached"]


def test_ours_reaches_the_target_and_records_it():
    r = highdim.run_one("diagonal", "sphere", 6, seed=1, budget=6000)
    _check_record(r, 6000)
    assert r["success"] and r["f_reached"] <= highdim.TARGET
    assert r["evaluations_to_target"] == r["evaluations"]  # stopped by ftarget, at that generation
    assert r["evaluations"] % r["popsize"] == 0 and not r["capped"]
    assert r["objective"] == "vectorized" and r["rank"] is None


def test_ours_per_point_objective_gives_the_same_run():
    a = highdim.run_one("lowrank-cov", "valley", 12, seed=2, budget=600, rank=2)
    b = highdim.run_one("lowrank-cov", "valley", 12, seed=2, budget=600, rank=2, objective="per-point")
    _check_record(a, 600)
    assert b["objective"] == "per-point" and a["rank"] == 2
    # the same samples and ranking: only rounding differs between a batch and a row-by-row f
    ca, cb = np.array(a["curve"]), np.array(b["curve"])
    assert ca.shape == cb.shape and np.array_equal(ca[:, 0], cb[:, 0])
    np.testing.assert_allclose(ca[:, 1], cb[:, 1], rtol=1e-9)
    assert not a["success"] and a["evaluations_to_target"] is None


def test_draw_ahead_method_is_the_same_run_and_the_throughput_table_reads_wall_clock():
    a = highdim.run_one("lowrank-precision", "stiff_subspace", 12, seed=2, budget=400, rank=2,
                        target=-math.inf)
    b = highdim.run_one("lowrank-precision-ahead", "stiff_subspace", 12, seed=2, budget=400, rank=2,
                        target=-math.inf)
    _check_record(b, 400)
    assert a["curve"] == b["curve"]
    c = highdim.run_one("lowrank-precision-ahead-f32", "stiff_subspace", 12, seed=2, budget=400,
                        rank=2, target=-math.inf)
    _check_record(c, 400)
    assert highdim._natgrad_options(highdim.METHODS["lowrank-precision-ahead-f32"], 2)["dtype"] == "float32"
    assert c["curve"] != a["curve"]  # float32: the same draws, other rounding
    snes = {**a, "method": "snes", "evaluations_per_s_wall": a["evaluations_per_s_wall"] / 2}
    table = highdim.throughput_table([a, snes])
    assert "2.00×" in table and "evaluations/s (wall)" in table


def test_pypop7_method_records_the_same_fields():
    pytest.importorskip("pypop7")
    r = highdim.run_one("snes", "sphere", 6, seed=1, budget=6000)
    _check_record(r, 6000)
    assert r["objective"] == "per-point" and r["library"] == "pypop7"
    assert r["success"] and r["evaluations_to_target"] == r["evaluations"]  # stops at the evaluation
    short = highdim.run_one("vkdcma", "ellipsoid", 8, seed=1, budget=200)
    _check_record(short, 200)
    assert not short["success"] and short["evaluations"] == 200
    assert short["stop"] == ["max_function_evaluations"]


@pytest.mark.parametrize("key", ["diagonal", "pycma-diag", "snes"])
def test_time_cap_stops_and_is_recorded(key):
    if key == "snes":
        pytest.importorskip("pypop7")
    r = highdim.run_one(key, "ellipsoid", 8, seed=1, budget=10**6, time_cap=1e-9)
    assert r["capped"] and r["error"] is None and r["evaluations"] < 100


def test_skips_and_bad_input():
    assert highdim.unavailable("diagonal", 50) is None
    assert "3000" in highdim.unavailable("pycma-full", 3000)
    assert highdim.unavailable("lowrank", 10, rank=10) is not None
    with pytest.raises(ValueError, match="unknown method"):
        highdim.unavailable("cmaes", 10)
    with pytest.raises(ValueError, match="objective"):
        highdim.run_one("diagonal", "sphere", 4, 1, 100, objective="batched")


def test_table_and_plot(tmp_path):
    runs = [highdim.run_one("diagonal", "sphere", 6, seed=s, budget=6000) for s in (1, 2)]
    runs.append(highdim.run_one("pycma-diag", "sphere", 6, seed=1, budget=300))
    text = highdim.table(runs, 6, {"pycma-full": "skipped: a reason"})
    assert "| sphere | ours diagonal | 2/2 |" in text and "| sphere | pycma CMA_diagonal | 0/1 |" in text
    assert "* pycma full: skipped: a reason" in text
    pytest.importorskip("matplotlib")
    path = highdim.plot(runs, 6, tmp_path / "highdim_6.png")
    assert path.exists() and path.stat().st_size > 1000
    assert not math.isnan(highdim._median(r["ms_per_generation"] for r in runs))


@pytest.mark.parametrize("key", ["diagonal", "pycma-diag", "snes"])
def test_popsize_sets_every_methods_population(key):
    pytest.importorskip({"diagonal": "numpy", "pycma-diag": "cma", "snes": "pypop7"}[key])
    r = highdim.run_one(key, "sphere", 8, seed=1, budget=400, popsize=14)
    assert r["error"] is None and r["popsize"] == 14


def test_pairs_capacity_reaches_only_the_pairs_routes():
    pairs, ranks = highdim.METHODS["lowrank-precision-pairs"], highdim.METHODS["lowrank-precision"]
    assert highdim._natgrad_options(pairs, 3, 500)["pairs_capacity"] == 500
    assert "pairs_capacity" not in highdim._natgrad_options(ranks, 3, 500)
    r = highdim.run_one("lowrank-precision-pairs", "stiff_subspace", 12, seed=1, budget=250, rank=2,
                        pairs_capacity=60)
    assert r["error"] is None and r["evaluations"] > 0
