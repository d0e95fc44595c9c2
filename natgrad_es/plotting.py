"""pycma-style figures of a run logged by ``natgrad_es.logger.Logger``.

    >>> from natgrad_es.plotting import plot
    >>> fig = plot("run.csv", "run.png")            # doctest: +SKIP

Four panels against the number of evaluations (after pycma's ``cma.plot()``):

* **f − f_best** (log scale): the best f so far, the best and the median f of each generation, all
  minus the best f value of the whole log (points where the difference is 0 are left out);
* **the mean's coordinates** m₀, m₁, … (the logged ones);
* **principal axis lengths** σ·sᵢ(A) of the search ellipsoid (log scale; the shortest and longest
  only when the log has just those);
* **σ and the axis ratio** (log scale).

Restarts (the ``restart`` column) are marked by dotted vertical lines.

matplotlib is an optional dependency (``pip install 'natgrad-es[plot]'``).  The figure is drawn with
the Agg canvas directly (no pyplot, no global backend change), so it works on machines without a
display and leaves an interactive session's backend alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .logger import Logger, read_csv

__all__ = ["plot"]

_INSTALL = ("natgrad_es.plotting needs matplotlib, an optional dependency: pip install "
            "'natgrad-es[plot]' (or pip install matplotlib)")


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(_INSTALL) from err
    return Figure, FigureCanvasAgg


def plot(log: Logger | str | os.PathLike, path: str | os.PathLike | None = None, *,
         title: str | None = None, dpi: int = 100, figsize: tuple[float, float] = (11.0, 7.5)) -> Any:
    """Draw the run in ``log`` as a four-panel figure and save it to ``path`` (PNG by its suffix).

    Args:
        log: a ``Logger`` or the path of a CSV file it wrote.
        path: where to save the figure (format from the suffix: .png, .pdf, .svg); None: not saved.
        title: the figure's title (default: the CSV file's name, or "natgrad-es run").
        dpi, figsize: resolution and size (inches) of the saved figure.

    Returns:
        the ``matplotlib.figure.Figure``.

    Raises:
        ImportError: without matplotlib, saying how to install it.
        ValueError: for a log without rows.
    """
    Figure, FigureCanvasAgg = _matplotlib()
    if isinstance(log, (str, os.PathLike)):
        source = Path(log)
        log = read_csv(source)
        title = title if title is not None else source.name
    if not isinstance(log, Logger):
        raise TypeError(f"log must be a Logger or a CSV path, got {type(log).__name__}")
    if not log.rows:
        raise ValueError("the log has no rows: nothing to plot")
    title = title if title is not None else "natgrad-es run"

    evals = log.column("evaluations")
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax_f, ax_m, ax_a, ax_s = fig.subplots(2, 2, sharex=True).ravel()

    # f − f_best
    series = [(name, label, style) for name, label, style in (
        ("f_best", "best so far", dict(color="tab:blue", lw=1.6)),
        ("f_gen_best", "generation best", dict(color="tab:cyan", lw=0.9)),
        ("f_gen_median", "generation median", dict(color="tab:olive", lw=0.9)),
    ) if name in log.columns and np.isfinite(log.column(name)).any()]
    finite = [v for name, _, _ in series for v in log.column(name) if np.isfinite(v)]
    fmin = min(finite) if finite else np.nan
    for name, label, style in series:
        diff = log.column(name) - fmin
        ax_f.semilogy(evals, np.where(diff > 0, diff, np.nan), label=label, **style)
    ax_f.set_title(f"f − f_best   (f_best = {fmin:.6g})", fontsize=10)
    if series:
        ax_f.legend(fontsize=8, loc="upper right")

    # the mean's coordinates
    names = log.columns_like("mean_")
    for name in names:
        ax_m.plot(evals, log.column(name), lw=1, label=f"m{name[5:]}")
    if names:
        ax_m.legend(fontsize=7, loc="best", ncol=max(1, (len(names) + 5) // 6))
    ax_m.set_title(f"mean, first {len(names)} coordinates" if names else "mean (not logged)",
                   fontsize=10)

    # principal axis lengths
    axes = log.columns_like("axis_")
    if not axes:
        axes = [c for c in ("axis_max", "axis_min") if c in log.columns]
    for name in axes:
        ax_a.semilogy(evals, _positive(log.column(name)), lw=1)
    ax_a.set_title("principal axis lengths σ·sᵢ(A)" if log.columns_like("axis_")
                   else "longest and shortest axis σ·s(A)", fontsize=10)

    # σ and the axis ratio
    ax_s.semilogy(evals, _positive(log.column("sigma")), color="tab:green", label="σ")
    if "axis_ratio" in log.columns:
        ax_s.semilogy(evals, _positive(log.column("axis_ratio")), color="tab:red",
                      label="axis ratio")
    ax_s.legend(fontsize=8, loc="best")
    ax_s.set_title("step size σ and axis ratio", fontsize=10)

    if "restart" in log.columns:
        restart = log.column("restart")
        for i in np.flatnonzero(np.diff(restart) > 0) + 1:
            for ax in (ax_f, ax_m, ax_a, ax_s):
                ax.axvline(evals[i], color="0.6", ls=":", lw=1)
    for ax in (ax_f, ax_m, ax_a, ax_s):
        ax.grid(True, which="major", alpha=0.4)
    for ax in (ax_a, ax_s):
        ax.set_xlabel("function evaluations")
    fig.suptitle(title, fontsize=11)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig


def _positive(y: np.ndarray) -> np.ndarray:
    """y with non-positive and non-finite entries as NaN (gaps on a log axis)."""
    return np.where(np.isfinite(y) & (y > 0), y, np.nan)
