"""``natgrad_es.plotting.plot``: a PNG from a Logger or its CSV file; a clear error without matplotlib."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from natgrad_es.es import minimize
from natgrad_es.logger import Logger

pytest.importorskip("matplotlib")
from natgrad_es.plotting import plot  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    path = tmp_path_factory.mktemp("log") / "run.csv"
    log = Logger(path, coordinates=4)
    fun = log.watch(lambda x: float(np.sum(np.arange(1, 6) * x ** 2)))
    minimize(fun, np.ones(5), 0.5, seed=1, budget=800, callback=log)
    return log, path


def test_png_from_csv_path(logged, tmp_path) -> None:
    _, path = logged
    out = tmp_path / "run.png"
    fig = plot(path, out)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("f − f_best") and "mean" in titles[1]
    assert "axis lengths" in titles[2] and "σ" in titles[3]
    assert fig.axes[0].get_yscale() == "log" and fig.axes[2].get_yscale() == "log"
    assert len(fig.axes[2].get_lines()) == 5  # one line per principal axis (d = 5)
    assert fig._suptitle.get_text() == "run.csv"


def test_figure_from_logger_in_memory(logged) -> None:
    log, _ = logged
    fig = plot(log, title="in memory")
    assert fig._suptitle.get_text() == "in memory"
    assert len(fig.axes[1].get_lines()) == 4  # four logged coordinates of the mean


def test_restarts_are_marked(tmp_path) -> None:
    log = Logger()
    for seed in (1, 2):
        minimize(lambda x: float((x ** 2).sum()), np.ones(3), 0.5, seed=seed, budget=120, callback=log)
    assert log.column("restart").max() == 1
    fig = plot(log, tmp_path / "r.png")
    dotted = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == ":"]
    assert len(dotted) == 1


def test_empty_log_and_bad_input(tmp_path) -> None:
    with pytest.raises(ValueError, match="no rows"):
        plot(Logger())
    with pytest.raises(TypeError, match="Logger or a CSV path"):
        plot([1, 2, 3])


def test_pyplot_backend_untouched(logged, tmp_path) -> None:
    import matplotlib

    before = matplotlib.get_backend()
    plot(logged[0], tmp_path / "x.png")
    assert matplotlib.get_backend() == before


def test_without_matplotlib_the_error_says_how_to_install(monkeypatch, logged) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'natgrad-es\[plot\]'"):
        plot(logged[0])
