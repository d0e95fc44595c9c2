"""Shared pieces of the benchmark scripts: seeds, summaries, tables, result files, progress, plots.

Protocol (``shared/design/benchmarks.md``): every convergence figure is a count over several seeds,
reported as median (min–max); every speed figure a ratio measured in the same run; each script
prints a markdown table *last* and writes its results under ``benchmarks/results/`` (CSV/JSON) with
a PNG plot.

Import this module before numpy in a script (``from harness import …`` with ``benchmarks/`` on the
path, or ``import benchmarks.harness``): it sets ``OPENBLAS_NUM_THREADS`` etc. to 1 unless they are
set — with several worker processes on a small machine, BLAS threads spin against each other.

* ``seeds(n)``, ``summary(values)`` → ``Summary(median, min, max, n)``, ``markdown_table``;
* ``write_json``, ``write_csv``, ``read_jsonl``/``append_jsonl`` (incremental results of long runs);
* ``progress`` (tqdm on stderr when installed, silent otherwise), ``run_parallel`` (a process pool
  with a progress bar, results as they finish);
* ``environment()`` (date, CPU, cores, versions) for the header of a results table;
* ``plot_convergence`` (f − f* against evaluations, one line per method: the median over seeds and
  the min–max band) and ``plot_ecdf`` (runtime ECDFs, log x), matplotlib PNGs.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import csv  # noqa: E402
import datetime  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence  # noqa: E402
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

__all__ = ["RESULTS", "seeds", "Summary", "summary", "markdown_table", "write_json", "write_csv",
           "append_jsonl", "read_jsonl", "progress", "run_parallel", "environment", "cpu_model",
           "plot_convergence", "plot_ecdf", "best_so_far"]

#: benchmarks/results/, where every script writes its tables and plots
RESULTS = Path(__file__).resolve().parent / "results"


# -- seeds and summaries ------------------------------------------------------------------------


def seeds(n: int, base: int = 1) -> list[int]:
    """n seeds base, base + 1, … (≥ 1: pycma reads seed 0 as "random")."""
    if n < 1 or base < 1:
        raise ValueError(f"need n >= 1 and base >= 1, got n={n!r}, base={base!r}")
    return list(range(base, base + n))


@dataclass(frozen=True)
class Summary:
    """Median, min and max of a sample (inf where runs failed), and its size."""

    median: float
    min: float
    max: float
    n: int

    def __str__(self) -> str:
        return self.format()

    def format(self, fmt: str = ".3g") -> str:
        """'median (min–max)'."""
        return f"{_num(self.median, fmt)} ({_num(self.min, fmt)}–{_num(self.max, fmt)})"


def _num(x: float, fmt: str) -> str:
    return "inf" if x == math.inf else "nan" if math.isnan(x) else format(x, fmt)


def summary(values: Iterable[float]) -> Summary:
    """median / min / max of ``values`` (inf allowed: a failed run counts as infinitely slow)."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return Summary(math.nan, math.nan, math.nan, 0)
    return Summary(float(np.median(v)), float(v.min()), float(v.max()), int(v.size))


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table (cells formatted with ``str``)."""
    lines = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [str(c) for c in row]
        if len(cells) != len(headers):
            raise ValueError(f"a row has {len(cells)} cells, the header {len(headers)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- files --------------------------------------------------------------------------------------


def _path(name: str | os.PathLike) -> Path:
    p = Path(name)
    if not p.is_absolute() and p.parent == Path("."):
        p = RESULTS / p
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def write_json(name: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as JSON (a bare file name goes to ``RESULTS``; inf/nan become null)."""
    p = _path(name)
    with open(p, "w") as fh:
        json.dump(_jsonable(data), fh, indent=1)
        fh.write("\n")
    return p


def write_csv(name: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write dict rows as CSV (columns: the union of the keys, in first-seen order)."""
    p = _path(name)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(p, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: _jsonable(v) for k, v in row.items()})
    return p


def append_jsonl(name: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one record as a JSON line (flushed: a long run keeps what it finished)."""
    p = _path(name)
    with open(p, "a") as fh:
        fh.write(json.dumps(_jsonable(record)) + "\n")
        fh.flush()


def read_jsonl(name: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file ([] if it does not exist; a torn last line is skipped)."""
    p = _path(name)
    if not p.exists():
        return []
    out = []
    with open(p) as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


# -- progress and parallel runs -----------------------------------------------------------------


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             disable: bool | None = None):
    """A tqdm progress bar on stderr (a no-op wrapper when tqdm is not installed or disabled)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar(iterable)
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=disable, dynamic_ncols=True,
                mininterval=1.0)


class _NoBar:
    def __init__(self, iterable):
        self._it = iterable

    def __iter__(self):
        return iter(self._it if self._it is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_parallel(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int = 1, *,
                 desc: str = "", disable_progress: bool | None = None) -> Iterator[tuple[Any, Any]]:
    """Yield (job, fn(job)) as the jobs finish, in worker processes (``workers`` > 1) or here.

    ``fn`` must be a module-level function (it is pickled).  A progress bar counts the jobs.
    """
    bar = progress(total=len(jobs), desc=desc, disable=disable_progress)
    try:
        if workers <= 1:
            for job in jobs:
                result = fn(job)
                bar.update()
                yield job, result
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            pending = {pool.submit(fn, job): job for job in jobs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = pending.pop(fut)
                    bar.update()
                    yield job, fut.result()
    finally:
        bar.close()


# -- environment --------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux), else platform's best guess."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(packages: Sequence[str] = ("numpy", "scipy", "torch", "cma", "cocoex")) -> dict:
    """Date, machine and library versions, for the header of a results table."""
    env = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_model(),
           "cores": os.cpu_count(), "python": platform.python_version()}
    for name in packages:
        try:
            env[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            env[name] = None
    try:
        env["natgrad_es"] = importlib.import_module("natgrad_es").__version__
    except (ImportError, AttributeError):
        pass
    return env


# -- plots --------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def best_so_far(evaluations: Sequence[float], values: Sequence[float],
                grid: np.ndarray) -> np.ndarray:
    """The best value reached within each budget of ``grid`` (nan before the first evaluation).

    ``evaluations`` (increasing) are the evaluation counts at which ``values`` were observed.
    """
    e = np.asarray(evaluations, dtype=float)
    v = np.minimum.accumulate(np.asarray(values, dtype=float))
    idx = np.searchsorted(e, grid, side="right") - 1
    return np.where(idx >= 0, v[np.clip(idx, 0, None)], np.nan)


_STYLES = ["C0", "C3", "C2", "C1", "C4", "C5", "C6", "C7"]


def plot_convergence(curves: Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]],
                     path: str | os.PathLike | None, *, title: str = "", target: float | None = 1e-8,
                     ax=None, ylabel: str = "f − f*",
                     xlim: tuple[float, float] | None = None,
                     colors: Mapping[str, Any] | None = None) -> Path | None:
    """f − f* against evaluations, one line per method: the median over seeds and the min–max band.

    Args:
        curves: ``{method: [(evaluations, f − f*) of seed 1, of seed 2, …]}``.  Each pair lists
            the evaluation counts and values observed (best-so-far is taken here).
        path: the PNG (a bare name goes to ``RESULTS``); ignored when ``ax`` is given.
        title: the title.
        target: a horizontal dotted line (None: none).
        ax: draw into this matplotlib axes instead of a new figure (then nothing is saved).
        ylabel: the y label.
        xlim: the range of evaluations shown (default: 1 to the largest evaluation count).
        colors: ``{method: colour}`` (default: the harness's cycle in the order of ``curves``), so
            that several panels give one method one colour.
    """
    plt = _pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 4))
    hi = max((max(e) for runs in curves.values() for e, _ in runs if len(e)), default=1)
    if xlim is not None:
        hi = max(hi, xlim[1])
    grid = np.unique(np.geomspace(1, max(hi, 1), 300).round())
    for k, (method, runs) in enumerate(curves.items()):
        if not runs:
            continue
        Y = np.array([best_so_far(e, v, grid) for e, v in runs])
        Y = np.where(Y > 0, Y, np.nan) if np.any(Y > 0) else Y
        with np.errstate(all="ignore"), _quiet_nan():
            med, lo, up = np.nanmedian(Y, 0), np.nanmin(Y, 0), np.nanmax(Y, 0)
        color = colors[method] if colors and method in colors else _STYLES[k % len(_STYLES)]
        ax.plot(grid, med, color=color, label=f"{method} (median of {len(runs)})")
        ax.fill_between(grid, lo, up, color=color, alpha=0.2, linewidth=0)
    if target is not None:
        ax.axhline(target, color="k", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*(xlim or (1, max(hi, 2))))
    ax.set_xlabel("evaluations")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    if own:
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = _path(path)
        fig.savefig(p, dpi=120)
        plt.close(fig)
        return p
    return None


class _quiet_nan:
    """Silence numpy's 'All-NaN slice' warnings inside a with-block."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)


def plot_ecdf(panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
              path: str | os.PathLike, *, xlabel: str = "evaluations / d",
              ylabel: str = "fraction of (function, instance, target) reached",
              suptitle: str = "", budget: float | None = None) -> Path:
    """Runtime ECDFs: one panel per key of ``panels``, one step line per method, log x.

    Args:
        panels: ``{panel title: {method: (x, fraction)}}`` (x increasing, e.g. evaluations/d).
        path: the PNG (a bare name goes to ``RESULTS``).
        budget: a vertical dotted line at the budget (None: none).
    """
    plt = _pyplot()
    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, methods) in zip(axes.flat, panels.items()):
        for k, (method, (x, y)) in enumerate(methods.items()):
            ax.step(x, y, where="post", color=_STYLES[k % len(_STYLES)], label=method)
        if budget is not None:
            ax.axvline(budget, color="k", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    p = _path(path)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p
