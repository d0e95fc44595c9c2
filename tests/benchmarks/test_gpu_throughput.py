"""benchmarks/gpu_throughput.py: one tiny row per structure on the CPU, the flop counts and the skips."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_throughput as gt  # noqa: E402


def test_one_tiny_row_per_structure_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    result = gt.main(["--device", "cpu", "--dims", "128", "--pops", "8", "--dtypes", "float32",
                      "bfloat16", "--generations", "2", "--no-evotorch", "--out", str(out),
                      "--cuda-graphs", "--gemm-size", "256", "--copy-mib", "8"])
    rows = result["rows"]
    assert {(r["structure"], r["dtype"]) for r in rows} == {
        (s, t) for s in gt.STRUCTURES for t in ("float32", "bfloat16")}
    for r in rows:
        assert r["ms"] > 0 and r["tflops"] > 0 and 0 < r["roofline"] < 2
        assert r["retraction"] == ("expm" if r["structure"] in ("dense", "diagonal")
                                   and r["dtype"] == "float32" else "truncated")
        assert isinstance(r["ms_graph"], float) and r["ms_graph"] > 0  # eager on the CPU
    assert out.exists() and result["matmul_flops"]["float32"] > 0
    text = capsys.readouterr().out
    assert "| structure | d | n |" in text and "| ms graph | graph roofline |" in text


def test_flop_counts_follow_the_costs_of_the_design():
    """architecture.md: dense ∝ n d², low rank ∝ n d k, diagonal ∝ n d, Kronecker ∝ n d (d₁ + d₂)."""
    f = {s: gt.flops_and_bytes(s, 10_000, 1_000, 4, False)[0] for s in gt.STRUCTURES}
    assert 6e11 < f["dense"] < 8e11  # 6 n d² + the m³ of φ
    assert f["lowrank64"] / f["lowrank16"] == pytest.approx(4, rel=0.3)
    assert f["diagonal"] == pytest.approx(11 * 1_000 * 10_000)
    assert f["kronecker"] == pytest.approx(4 * 1e7 * 200 + 6e7, rel=0.01)


def test_sizes_that_do_not_fit_are_skipped_with_a_reason(capsys):
    result = gt.main(["--device", "cpu", "--dims", "30000", "--pops", "100", "--structures",
                      "dense", "--dtypes", "float32", "--max-gib", "1", "--no-evotorch",
                      "--out", "", "--gemm-size", "128", "--copy-mib", "4"])
    assert result["rows"] == []
    assert "skip dense d=30000 n=100 float32: needs" in capsys.readouterr().out
