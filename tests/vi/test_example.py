"""examples/vi_logistic_regression.py runs (short) and gives a sensible posterior."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vi_logistic_regression.py"


def test_logistic_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the optional plot goes here
    spec = importlib.util.spec_from_file_location("vi_logistic_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vi = module.main(steps=30)
    out = capsys.readouterr().out
    assert "test: accuracy" in out and vi.iteration == 30
    assert np.all(np.isfinite(vi.posterior.covariance()))
    accuracy = float(out.split("test: accuracy")[1].split(",")[0])
    assert accuracy > 0.9
