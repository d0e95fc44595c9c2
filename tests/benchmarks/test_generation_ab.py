"""benchmarks/generation_ab.py: the revision's package loads beside the working tree's, apart."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import generation_ab  # noqa: E402

import natgrad_es  # noqa: E402


def _in_git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _in_git_checkout(), reason="needs a git checkout (git archive)")
def test_revision_is_a_separate_package_that_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    base = generation_ab.import_revision("HEAD", tmp_path)
    try:
        assert base.__name__ == "natgrad_es_base" and base is not natgrad_es
        assert base.NaturalES is not natgrad_es.NaturalES
        runs = [generation_ab.make(pkg, "lowrank-precision", 40, 8, 3) for pkg in (base, natgrad_es)]
        assert all(generation_ab.block_ms(es, 5) > 0 for es in runs)
        assert runs[0].iterations == runs[1].iterations == 5
        assert np.isfinite(runs[0].result.fbest) and np.isfinite(runs[1].result.fbest)
        if importlib.util.find_spec("torch") is not None:
            on_torch = generation_ab.make(natgrad_es, "lowrank", 40, 8, 3, backend="torch")
            assert generation_ab.block_ms(on_torch, 3) > 0 and on_torch.iterations == 3
            assert type(on_torch.mean).__module__.startswith("torch")
    finally:
        for name in [m for m in sys.modules if m == "natgrad_es_base" or m.startswith("natgrad_es_base.")]:
            del sys.modules[name]
