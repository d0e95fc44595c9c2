"""The ``natgrad-es`` command: ``main([...])`` end to end, ``python -m natgrad_es`` in a subprocess,
the progress display, and clear messages with a non-zero exit status for bad input."""

from __future__ import annotations

import inspect
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import natgrad_es.cli as cli
from natgrad_es.cli import Progress, main
from natgrad_es.es import minimize
from natgrad_es.logger import read_csv

NEW_MINIMIZE = {"restarts", "bounds"} <= set(inspect.signature(minimize).parameters)


def test_minimize_builtin_problem_with_log(tmp_path, capsys) -> None:
    log = tmp_path / "run.csv"
    code = main(["minimize", "sphere", "--dim", "4", "--budget", "600", "--seed", "3",
                 "--log", str(log), "--ftarget", "1e-8"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "natgrad-es minimize sphere: d=4, structure=full" in out and "seed=3" in out
    assert "success:     True" in out and "ftarget" in out
    assert err == ""  # not a terminal: no progress display
    back = read_csv(log)
    assert len(back) >= 5 and np.isfinite(back.column("f_gen_median")).all()
    assert back.column("f_best")[-1] <= 1e-8
    assert f"({len(back)} rows" in out


def test_same_seed_same_run(capsys) -> None:
    outs = []
    for _ in range(2):
        assert main(["minimize", "ellipsoid", "-d", "3", "-b", "300", "--seed", "7",
                     "--structure", "diagonal"]) == 0
        out = capsys.readouterr().out
        outs.append([ln for ln in out.splitlines() if "f best" in ln or "x best" in ln])
    assert outs[0] == outs[1]


def test_minimize_module_function_and_options(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "my_objective.py").write_text(textwrap.dedent("""
        import numpy as np

        def shifted(x):
            return float(np.sum((np.asarray(x) - 1.0) ** 2))

        def batch(X):
            return ((X - 1.0) ** 2).sum(axis=1)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["minimize", "my_objective:shifted", "--x0", "0,0,0,0,0,0", "--structure", "lowrank",
                 "--rank", "2", "--budget", "1500", "--seed", "1", "--sigma0", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "d=6, structure=lowrank" in out
    best = float(out.split("f best:")[1].split()[0])
    assert best < 1e-3
    assert main(["minimize", "my_objective:batch", "--vectorized", "-d", "3", "--x0", "0.5",
                 "--method", "xnes", "--popsize", "12", "-b", "120", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "method=xnes, popsize=12" in out and "evaluations: 120" in out


def test_plot_subcommand(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    log = tmp_path / "run.csv"
    assert main(["minimize", "rosenbrock", "--dim", "3", "--budget", "300", "--seed", "1",
                 "--log", str(log), "--quiet"]) == 0
    assert main(["plot", str(log), "-o", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").read_bytes().startswith(b"\x89PNG")
    assert main(["plot", str(log)]) == 0  # default output: run.png beside the CSV
    assert main(["minimize", "sphere", "-d", "2", "-b", "100", "--seed", "1", "--quiet",
                 "--plot", str(tmp_path / "direct.png")]) == 0  # --plot without --log: in memory
    assert (tmp_path / "direct.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "run.png").stat().st_size > 0
    assert "wrote" in capsys.readouterr().out


def test_problems_lists_the_registry(capsys) -> None:
    import problems

    assert main(["problems"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines()]
    assert listed == list(problems.names())


@pytest.mark.parametrize("argv, message", [
    (["minimize", "no_such_problem", "--dim", "3"], "unknown problem 'no_such_problem'"),
    (["minimize", "sphere", "--dim", "0"], "--dim/-d: must be a positive integer, got '0'"),
    (["minimize", "sphere", "--dim", "three"], "must be a positive integer, got 'three'"),
    (["minimize", "sphere"], "problem 'sphere' needs --dim"),
    (["minimize", "sphere", "--dim", "3", "--x0", "1,2"], "--x0 has 2 values but --dim is 3"),
    (["minimize", "sphere", "--dim", "3", "--structure", "banana"], "unknown structure 'banana'"),
    (["minimize", "sphere", "--dim", "3", "--structure", "lowrank"], "needs the keyword 'rank'"),
    (["minimize", "sphere", "--dim", "3", "--sigma0", "-1"], "must be a finite number > 0"),
    (["minimize", "no_such_module_xyz:f", "--dim", "3"], "cannot import module 'no_such_module_xyz'"),
    (["minimize", "numpy:no_such_function", "--dim", "3"], "has no attribute 'no_such_function'"),
    (["minimize", "numpy:pi", "--dim", "3"], "is not callable"),
    (["plot", "does_not_exist.csv"], "no such log file"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_is_a_clear_error(argv, message, capsys) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err


def test_objective_that_raises_exits_1(tmp_path, capsys, monkeypatch) -> None:
    (tmp_path / "broken_objective.py").write_text("def f(x):\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["minimize", "broken_objective:f", "--dim", "2", "--budget", "20"]) == 1
    assert "the objective raised RuntimeError: boom" in capsys.readouterr().err


def test_plot_of_a_file_that_is_not_a_log(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["plot", str(bad)]) == 2
    assert "not a natgrad_es log" in capsys.readouterr().err


def test_help_and_version(capsys) -> None:
    assert main(["--help"]) == 0
    assert "minimize" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert "natgrad-es" in capsys.readouterr().out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _FakeES:
    def __init__(self, evaluations: int) -> None:
        self.evaluations, self.iterations, self.sigma = evaluations, evaluations // 10, 0.5

        class R:
            fbest = 1.25

        self.result = R()


def test_progress_tqdm_on_a_terminal() -> None:
    pytest.importorskip("tqdm")
    stream = _Terminal()
    progress = Progress(100, stream=stream)
    assert progress.kind == "tqdm"
    for n in (10, 20, 100):
        progress.update(_FakeES(n))
    progress.close()
    text = stream.getvalue()
    assert "100/100" in text and "f_best=1.2500e+00" in text


def test_progress_text_fallback_without_tqdm(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # "not installed"
    stream = _Terminal()
    progress = Progress(100, stream=stream)
    assert progress.kind == "text"
    progress.update(_FakeES(10))
    progress.close()
    assert stream.getvalue().startswith("\r10/100 evals") and stream.getvalue().endswith("\n")


def test_progress_is_silent_off_a_terminal_or_quiet() -> None:
    stream = io.StringIO()
    progress = Progress(100, stream=stream)
    progress.update(_FakeES(10))
    progress.close()
    assert progress.kind == "off" and stream.getvalue() == ""
    assert Progress(100, stream=_Terminal(), enabled=False).kind == "off"


def test_python_dash_m_subprocess(tmp_path) -> None:
    log = tmp_path / "run.csv"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(cli.__file__)), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "natgrad_es", "minimize", "sphere", "--dim", "3",
                           "--budget", "200", "--seed", "1", "--log", str(log)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "natgrad-es minimize sphere: d=3" in done.stdout and done.stderr == ""
    assert len(read_csv(log)) > 0
    bad = subprocess.run([sys.executable, "-m", "natgrad_es", "minimize", "sphere", "--dim", "-1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "must be a positive integer" in bad.stderr


@pytest.mark.skipif(not NEW_MINIMIZE, reason="minimize has no restarts= / bounds= yet")
def test_restarts_and_bounds_reach_minimize(tmp_path, capsys) -> None:
    log = tmp_path / "ipop.csv"
    assert main(["minimize", "rastrigin", "--dim", "2", "--budget", "3000", "--seed", "1",
                 "--restarts", "ipop", "--bounds=-5,5", "--log", str(log)]) == 0
    out = capsys.readouterr().out
    restarts = int(out.split("restarts:")[1].split()[0])
    back = read_csv(log)
    assert restarts >= 1 and back.column("restart").max() == restarts
    assert np.all(np.diff(back.column("evaluations")) > 0)  # summed over the runs
    assert np.all(np.diff(back.column("iteration")) > 0)


def test_bad_bounds(capsys) -> None:
    assert main(["minimize", "sphere", "--dim", "2", "--bounds=5,-5"]) == 2
    assert "LOWER must be below UPPER" in capsys.readouterr().err


def test_disp_prints_progress_lines_off_a_terminal(capsys) -> None:
    assert main(["minimize", "sphere", "--dim", "4", "--seed", "2", "--ftarget", "1e-8",
                 "--disp", "20"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]
    assert out.splitlines()[0].startswith("Iterat #Fevals")
    assert len(lines) >= 2 and lines[0].split()[0] == "20"
    assert "success:     True" in out
