"""benchmarks/harness.py: summaries, tables, result files and plots that every benchmark relies on."""

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import harness  # noqa: E402


def test_seeds_and_summary():
    assert harness.seeds(3) == [1, 2, 3] and harness.seeds(2, base=5) == [5, 6]
    with pytest.raises(ValueError, match="n >= 1"):
        harness.seeds(0)
    s = harness.summary([3.0, 1.0, math.inf])
    assert (s.median, s.min, s.max, s.n) == (3.0, 1.0, math.inf, 3)
    assert str(s) == "3 (1–inf)"
    assert math.isnan(harness.summary([]).median)


def test_markdown_table_checks_row_lengths():
    text = harness.markdown_table(["a", "b"], [[1, 2], ["x", 3.5]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |", "| x | 3.5 |"]
    with pytest.raises(ValueError, match="3 cells"):
        harness.markdown_table(["a", "b"], [[1, 2, 3]])


def test_result_files_round_trip(tmp_path):
    data = {"x": np.array([1.0, np.inf]), "n": np.int64(3), "nested": [{"f": np.float32(0.5)}]}
    p = harness.write_json(tmp_path / "r.json", data)
    assert json.loads(p.read_text()) == {"x": [1.0, None], "n": 3, "nested": [{"f": 0.5}]}
    rows = [{"a": 1, "b": 2.0}, {"b": 3.0, "c": "z"}]
    p = harness.write_csv(tmp_path / "r.csv", rows)
    with open(p) as fh:
        got = list(csv.DictReader(fh))
    assert list(got[0]) == ["a", "b", "c"] and got[1]["c"] == "z" and got[0]["c"] == ""
    harness.append_jsonl(tmp_path / "r.jsonl", {"k": 1})
    harness.append_jsonl(tmp_path / "r.jsonl", {"k": 2})
    with open(tmp_path / "r.jsonl", "a") as fh:
        fh.write('{"k": 3')  # a torn last line (a run killed mid-write) is skipped
    assert [r["k"] for r in harness.read_jsonl(tmp_path / "r.jsonl")] == [1, 2]


def test_plots_write_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    curves = {"a": [([1, 10, 100], [1.0, 0.1, 1e-3]), ([1, 10, 100], [2.0, 0.2, 1e-4])]}
    out = harness.plot_convergence(curves, tmp_path / "conv.png")
    assert Path(out).stat().st_size > 1000
