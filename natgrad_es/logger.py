"""``Logger``: one row per generation of an evolution strategy, in memory and in a CSV file.

Use it as the ``callback`` of ``minimize`` (it never asks to stop), or call ``logger.log(es)`` in an
ask / tell loop::

    >>> import numpy as np
    >>> from natgrad_es.es import minimize
    >>> from natgrad_es.logger import Logger
    >>> log = Logger(coordinates=2)              # Logger("run.csv") also writes a CSV file
    >>> fun = log.watch(lambda x: float((x ** 2).sum()))   # records f values for the median
    >>> res = minimize(fun, np.ones(3), 0.5, seed=1, budget=300, callback=log)
    >>> len(log) == res.nit, log.columns[:4]
    (True, ['iteration', 'evaluations', 'restart', 'f_best'])

Columns (``COLUMNS``, then the axis lengths and the mean's coordinates):

================  =================================================================================
``iteration``     generations so far (summed over restarts)
``evaluations``   f evaluations so far (summed over restarts)
``restart``       0 for the first strategy, k after the k-th restart (a new strategy object whose
                  counters went back, or the ``restarts`` count of a restart wrapper such as
                  ``natgrad_es.es.restarts.IPOP``, whose ``strategy`` is the current run)
``f_best``        the best f value so far of the current strategy (``es.result.fbest``)
``f_gen_best``    the best f of this generation  ┐ from the generation's f values: passed as
``f_gen_median``  the median f of this generation ┘ ``fvals``, recorded by ``watch``, or read from
                  ``es.last_fvalues`` when the strategy has it; NaN when none is available.
                  Non-finite f values count as +inf.
``sigma``         the step size σ
``axis_ratio``    max / min singular value of A (the search ellipsoid's axis ratio)
``axis_min``      σ · the smallest singular value of A (the shortest axis of the search ellipsoid)
``axis_max``      σ · the largest singular value of A
``time``          seconds since the logger started (continued across a resume)
``axis_0`` …      σ · every singular value of A, descending, when d ≤ ``axes`` (the principal
                  axis lengths that ``plotting`` draws)
``mean_0`` …      the first ``coordinates`` entries of the mean m
================  =================================================================================

Singular values come from ``factor.singular_values()``: closed forms for the diagonal, Kronecker,
block-diagonal and spectral structures, an SVD otherwise — skipped (NaN) above d = 1000 where that
SVD would cost O(d³) per generation, as ``NaturalES.disp`` does.

Checkpoints: save ``logger.state_dict()`` beside ``es.state_dict()``; after restoring the strategy,
``logger.load_state_dict(state)`` rewrites the CSV file with exactly the rows of the checkpoint, so
the rows logged after it are not duplicated when the run continues.  Without a saved logger state,
``Logger(path, resume=True)`` reads the file and, at the first new row, drops the rows whose
iteration is not before the restored strategy's (single runs without restarts).
"""

from __future__ import annotations

import csv
import math
import os
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Logger", "COLUMNS", "read_csv"]

#: the columns every log has, in order (then ``axis_i`` and ``mean_i``)
COLUMNS = ("iteration", "evaluations", "restart", "f_best", "f_gen_best", "f_gen_median", "sigma",
           "axis_ratio", "axis_min", "axis_max", "time")
_INT_COLUMNS = ("iteration", "evaluations", "restart")
_STATE_VERSION = 1
_MAX_SVD_DIM = 1000


class Logger:
    """Records one row per generation (see the module docstring for the columns).

    Args:
        path: a CSV file to write (rows are appended and flushed as they come); None keeps the log
            in memory only.
        coordinates: how many leading coordinates of the mean to log (default 5; all for d ≤ 5).
        axes: log every principal axis length ``axis_i`` when d ≤ axes (default 20); above, only
            ``axis_min`` and ``axis_max``.
        every: log every k-th generation (``log`` called with a strategy whose ``iterations`` is not
            a multiple of k is skipped); ``log(es, force=True)`` logs anyway (e.g. the last one).
        resume: continue the rows already in ``path`` instead of overwriting the file.

    Attributes:
        rows: the logged rows, as dicts column → value.
        columns: the column names (fixed by the first row: they depend on d).
    """

    def __init__(self, path: str | os.PathLike | None = None, *, coordinates: int = 5,
                 axes: int = 20, every: int = 1, resume: bool = False) -> None:
        for name, value, low in (("coordinates", coordinates, 0), ("axes", axes, 0),
                                 ("every", every, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.path = None if path is None else Path(path)
        self.coordinates = int(coordinates)
        self.axes = int(axes)
        self.every = int(every)
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        self._restart = 0
        self._offsets = (0, 0)  # (iterations, evaluations) of the strategies before this one
        self._last_raw: tuple[int, int] | None = None  # the last strategy's own counters
        self._last_es: Callable[[], Any] | None = None  # weakref to it
        self._watched: list[float] = []
        self._t0 = time.perf_counter()
        self._time_offset = 0.0
        self._file_ready = False  # header written / file rewritten for this session
        self._trim_on_first = False
        if resume and self.path is not None and self.path.exists():
            other = read_csv(self.path)
            self.rows, self.columns = other.rows, other.columns
            if self.rows:
                last = self.rows[-1]
                self._restart = int(last["restart"])
                self._time_offset = float(last["time"])
            self._file_ready = True
            self._trim_on_first = True

    # -- logging ---------------------------------------------------------------------------------
    def __call__(self, es, fvals=None) -> bool:
        """``minimize``'s callback: log the generation, never ask to stop (returns False)."""
        self.log(es, fvals)
        return False

    def __len__(self) -> int:
        return len(self.rows)

    def watch(self, fun: Callable, *, vectorized: bool = False) -> Callable:
        """``fun`` wrapped to record the f values it returns, so that ``log`` can give the
        generation's best and median.

        Pass the wrapper to ``minimize`` (with the same ``vectorized``); values are recorded in this
        process (not inside a process pool's workers — there, pass ``fvals`` to ``log``).
        """
        return _Watched(fun, self, vectorized)

    def log(self, es, fvals=None, *, force: bool = False) -> dict[str, Any] | None:
        """Append the row of ``es``'s current state (after its ``tell``).

        Args:
            es: a ``NaturalES`` (or any object with ``iterations``, ``evaluations``, ``sigma``,
                ``factor``, ``mean`` and ``result.fbest``).
            fvals: the f values of the generation just told (optional; see ``watch``).
            force: log even when ``every`` says to skip this generation.

        Returns:
            the row, or None when skipped (``every``) or already logged (same iteration).
        """
        values = self._generation_values(es, fvals)
        raw = (int(es.iterations), int(es.evaluations))
        previous = self._last_es() if self._last_es is not None else None
        counted = getattr(es, "restarts", None)  # a restart wrapper (IPOP) counts them itself
        if isinstance(counted, (int, np.integer)) and not isinstance(counted, bool):
            self._restart = int(counted)  # its iterations and evaluations are summed already
        elif (self._last_raw is not None and previous is not es
                and (raw[0] < self._last_raw[0] or raw[1] < self._last_raw[1])):
            # a new strategy whose counters went back: a restart
            self._restart += 1
            self._offsets = (self._offsets[0] + self._last_raw[0],
                             self._offsets[1] + self._last_raw[1])
        self._last_raw = raw
        try:
            self._last_es = weakref.ref(es)
        except TypeError:  # pragma: no cover - objects without weak references
            self._last_es = None
        iteration = self._offsets[0] + raw[0]
        if self._trim_on_first:
            self._trim_on_first = False
            kept = [r for r in self.rows if int(r["iteration"]) < iteration]
            if len(kept) != len(self.rows):
                self.rows = kept
                self._rewrite()
        if self.rows and int(self.rows[-1]["iteration"]) == iteration \
                and int(self.rows[-1]["restart"]) == self._restart:
            return None
        if not force and raw[0] % self.every:
            return None
        row = self._row(es, iteration, self._offsets[1] + raw[1], values)
        if not self.columns:
            self.columns = list(row)
        elif list(row) != self.columns:
            raise ValueError(f"this row has columns {list(row)} but the log has {self.columns} (a "
                             f"strategy of another dimension, or another logger's file?)")
        self.rows.append(row)
        self._write(row)
        return row

    # -- reading ---------------------------------------------------------------------------------
    def column(self, name: str) -> np.ndarray:
        """One column as a float array (NaN where a row has no value)."""
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; columns: {', '.join(self.columns)}")
        return np.array([_to_float(r.get(name)) for r in self.rows], dtype=np.float64)

    def columns_like(self, prefix: str) -> list[str]:
        """The names ``prefix0``, ``prefix1``, … present, in order (e.g. ``"mean_"``, ``"axis_"``)."""
        names = [c for c in self.columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
        return sorted(names, key=lambda c: int(c[len(prefix):]))

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The rows and counters, to save with the strategy's ``state_dict`` (plain Python data)."""
        return {"version": _STATE_VERSION, "columns": list(self.columns),
                "rows": [[r[c] for c in self.columns] for r in self.rows],
                "restart": self._restart, "offsets": list(self._offsets),
                "last_raw": None if self._last_raw is None else list(self._last_raw),
                "time": self._elapsed(), "coordinates": self.coordinates, "axes": self.axes,
                "every": self.every}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go back to the checkpointed log: its rows replace this logger's, and the CSV file (if
        any) is rewritten with exactly them, so a resumed run appends after the checkpoint."""
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError("not a Logger state_dict (or one of another version)")
        self.columns = list(state["columns"])
        self.rows = [dict(zip(self.columns, values)) for values in state["rows"]]
        self._restart = int(state["restart"])
        self._offsets = tuple(int(v) for v in state["offsets"])
        self._last_raw = None if state["last_raw"] is None else tuple(state["last_raw"])
        self._last_es = None
        self._t0 = time.perf_counter()
        self._time_offset = float(state["time"])
        self.coordinates, self.axes, self.every = state["coordinates"], state["axes"], state["every"]
        self._watched = []
        self._trim_on_first = False
        self._rewrite()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_last_es"] = None  # a weak reference does not pickle
        return state

    # -- internals -------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self._time_offset + time.perf_counter() - self._t0

    def _generation_values(self, es, fvals) -> np.ndarray | None:
        watched, self._watched = self._watched, []
        if fvals is None:
            hook = getattr(es, "last_fvalues", None)
            fvals = hook() if callable(hook) else hook
        if fvals is None and watched:
            fvals = watched
        if fvals is None:
            return None
        f = np.asarray(_numpy(fvals), dtype=np.float64).reshape(-1)
        return f if f.size else None

    def _row(self, es, iteration: int, evaluations: int, f: np.ndarray | None) -> dict[str, Any]:
        sigma = float(es.sigma)
        factor = getattr(es, "factor", None)
        if factor is None:  # a restart wrapper: the current run's strategy
            factor = es.strategy.factor
        sv = _singular_values(factor)
        if f is not None:
            g = np.where(np.isfinite(f), f, np.inf)
            gen_best, gen_median = float(g.min()), float(np.median(g))
        else:
            gen_best = gen_median = math.nan
        row: dict[str, Any] = {
            "iteration": iteration, "evaluations": evaluations, "restart": self._restart,
            "f_best": float(es.result.fbest), "f_gen_best": gen_best, "f_gen_median": gen_median,
            "sigma": sigma,
            "axis_ratio": float(sv[0] / sv[-1]) if sv is not None and sv[-1] > 0 else math.nan,
            "axis_min": sigma * float(sv[-1]) if sv is not None else math.nan,
            "axis_max": sigma * float(sv[0]) if sv is not None else math.nan,
            "time": round(self._elapsed(), 6),
        }
        d = int(factor.dim)
        if d <= self.axes:
            for i in range(d):
                row[f"axis_{i}"] = sigma * float(sv[i]) if sv is not None else math.nan
        mean = np.asarray(_numpy(es.mean), dtype=np.float64).reshape(-1)
        for i in range(min(self.coordinates, mean.size)):
            row[f"mean_{i}"] = float(mean[i])
        return row

    def _write(self, row: dict[str, Any]) -> None:
        if self.path is None:
            return
        if not self._file_ready:
            self._rewrite()  # header (and nothing else) for a new file
            return
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow([_format(row[c]) for c in self.columns])

    def _rewrite(self) -> None:
        """Write the whole file: header and every row (a new log, a trim or a loaded state)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            if self.columns:
                writer.writerow(self.columns)
            for r in self.rows:
                writer.writerow([_format(r[c]) for c in self.columns])
        os.replace(tmp, self.path)
        self._file_ready = True


class _Watched:
    """``fun`` recording the f values it returns into a ``Logger`` (see ``Logger.watch``)."""

    def __init__(self, fun: Callable, logger: Logger, vectorized: bool) -> None:
        if not callable(fun):
            raise TypeError(f"fun must be callable, got {type(fun).__name__}")
        self.fun, self.logger, self.vectorized = fun, logger, vectorized
        self.__doc__ = getattr(fun, "__doc__", None)

    def __call__(self, x, *args, **kwargs):
        value = self.fun(x, *args, **kwargs)
        try:
            if self.vectorized:
                self.logger._watched.extend(np.asarray(_numpy(value), dtype=np.float64).reshape(-1))
            else:
                self.logger._watched.append(float(_numpy(value)))
        except (TypeError, ValueError):
            pass  # not a number: tell() will say so
        return value


def read_csv(path: str | os.PathLike) -> Logger:
    """A ``Logger`` (in memory, not writing) holding the rows of a CSV file written by a Logger."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path} is empty: not a natgrad_es log") from None
        missing = [c for c in ("iteration", "evaluations", "f_best", "sigma") if c not in header]
        if missing:
            raise ValueError(f"{path} is not a natgrad_es log: no column(s) {missing}")
        rows = []
        for line, values in enumerate(reader, start=2):
            if not values:
                continue
            if len(values) != len(header):
                raise ValueError(f"{path}, line {line}: {len(values)} values for {len(header)} "
                                 f"columns")
            rows.append({c: _parse(c, v) for c, v in zip(header, values)})
    log = Logger()
    log.columns, log.rows = list(header), rows
    return log


def _singular_values(factor) -> np.ndarray | None:
    """Singular values of A, descending (numpy), or None where only an SVD of a d > 1000 dense
    matrix would give them."""
    try:
        from .structures import Factor
        generic = type(factor).singular_values is Factor.singular_values
    except ImportError:  # pragma: no cover
        generic = True
    if generic and int(factor.dim) > _MAX_SVD_DIM:
        return None
    sv = np.sort(np.abs(np.asarray(_numpy(factor.singular_values()), dtype=np.float64)))[::-1]
    return sv if sv.size else None


def _numpy(x):
    """numpy view of a numpy array, torch tensor or Python scalar / list."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        return [float(_numpy(v)) for v in x]
    return x


def _format(value: Any) -> str:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    value = float(value)
    return repr(value) if math.isfinite(value) else str(value)  # nan, inf, -inf


def _parse(column: str, text: str) -> Any:
    if column in _INT_COLUMNS:
        return int(float(text))
    return float(text) if text != "" else math.nan


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
