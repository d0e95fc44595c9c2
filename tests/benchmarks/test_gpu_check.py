"""benchmarks/gpu_check.py on the CPU: the checks a GPU lease runs first must run and pass here too
(the device-only ones, sync detection and CUDA graphs, are skipped off CUDA)."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_check  # noqa: E402


def test_the_device_checks_pass_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    rows = gpu_check.main(["--device", "cpu", "--out", str(out)])
    assert len(rows) == len(gpu_check.SAME_RUN) + len(gpu_check.BF16_RUNS)
    assert all(r["passed"] for r in rows), [r for r in rows if not r["passed"]]
    assert out.exists()
