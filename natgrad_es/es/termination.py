"""Termination criteria of an evolution strategy, as named data.

Each criterion is a small function returning ``(fired, measured)``; ``CRITERIA`` holds the message
of each name and whether stopping there counts as a success (the optimizer converged) or not.  A
strategy's ``stop()`` returns ``{name: threshold}`` for the criteria that fired — pycma's
convention — and the same dict ends every result.

==================  ==========================================================  =======
name                fires when                                                  success
==================  ==========================================================  =======
``ftarget``         the best f so far ≤ ftarget                                 yes
``tolfun``          f-range of this generation and of the recent best values    yes
                    (``tolfun_history`` generations) < tolfun
``tolx``            every sampled step |xᵢⱼ − mⱼ| of a generation < tolx        yes
``maxfevals``       evaluations ≥ maxfevals (the budget)                        no
``maxiter``         generations ≥ maxiter                                       no
``tolstagnation``   the median and the best f of the last ℓ generations are     no
                    no better than those of the ℓ before, ℓ = tolstagnation/10,
                    and the best f is older than tolstagnation/2 generations
``tolcondition``    the condition number of AAᵀ > tolcondition                  no
``nonfinite``       the update made m, σ or A non-finite (the last finite       no
                    state is kept)
``callback``        a ``minimize`` callback returned True                       no
``maxrestarts``     IPOP (``restarts``) made ``max_restarts`` restarts and the  no
                    last run stopped too
==================  ==========================================================  =======

Defaults and their sources are in ``defaults`` (pycma's values).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["Criterion", "CRITERIA", "History", "BestSoFar", "DeviceRecord", "message", "success",
           "ftarget", "maxfevals", "maxiter", "tolfun", "tolx", "tolstagnation", "tolcondition"]


@dataclass(frozen=True)
class Criterion:
    """The text and the meaning of one termination criterion."""

    name: str
    message: str
    success: bool


CRITERIA: dict[str, Criterion] = {c.name: c for c in (
    Criterion("ftarget", "the best f value reached ftarget", True),
    Criterion("tolfun", "f values of recent generations differ by less than tolfun", True),
    Criterion("tolx", "all sampled steps are smaller than tolx in every coordinate", True),
    Criterion("maxfevals", "the evaluation budget (maxfevals) is exhausted", False),
    Criterion("maxiter", "the iteration limit (maxiter) is reached", False),
    Criterion("tolstagnation", "no improvement of the median or best f over tolstagnation "
                               "generations", False),
    Criterion("tolcondition", "the condition number of the covariance exceeded tolcondition",
              False),
    Criterion("nonfinite", "the update produced a non-finite state (NaN or inf); the last finite "
                           "state was kept", False),
    Criterion("callback", "the callback asked to stop", False),
    Criterion("maxrestarts", "the restart limit (max_restarts) is reached", False),
)}


def message(stop: dict) -> str:
    """One sentence per fired criterion (in ``CRITERIA`` order), or '' when none fired."""
    return "; ".join(f"{CRITERIA[k].message} ({k}={stop[k]!r})" for k in CRITERIA if k in stop)


def success(stop: dict) -> bool:
    """True when a criterion that means convergence fired (ftarget, tolfun, tolx)."""
    return any(CRITERIA[k].success for k in stop if k in CRITERIA)


# -- the criteria ----------------------------------------------------------------------------------


def ftarget(fbest: float, target: float | None) -> tuple[bool, float]:
    return target is not None and fbest <= target, fbest


def maxfevals(evaluations: int, limit: float | None) -> tuple[bool, int]:
    return limit is not None and evaluations >= limit, evaluations


def maxiter(iterations: int, limit: float | None) -> tuple[bool, int]:
    return limit is not None and iterations >= limit, iterations


def tolfun(current_range: float, history: History, tol: float) -> tuple[bool, float]:
    """Current f-range and the range of the recent best values both below ``tol``.

    The measured value is max(current range, recent range), or the current range alone when that
    already decides (≥ tol: the recent best values, up to thousands, are then not scanned).
    """
    if not history.recent_best:
        return False, np.inf
    if not current_range < tol:
        return False, current_range
    recent = history.recent_best
    value = max(current_range, max(recent) - min(recent))
    return bool(value < tol), value


def tolx(max_step: float, tol: float) -> tuple[bool, float]:
    """The largest |xᵢⱼ − mⱼ| of the generation below ``tol``."""
    return bool(max_step < tol), max_step


def tolstagnation(history: History, iterations: int, best_iteration: int,
                  window: int | None) -> tuple[bool, float]:
    """No progress of the median and the best f over ``window`` generations (after pycma)."""
    if not window:
        return False, 0.0
    ell = max(1, window // 10)
    stalled = iterations - best_iteration
    if iterations <= window or stalled <= window / 2 or len(history.median) < 2 * ell:
        return False, float(stalled)
    best, med = _last(history.best, 2 * ell), _last(history.median, 2 * ell)
    fired = (np.median(med[ell:]) >= np.median(med[:ell])
             and np.median(best[ell:]) >= np.median(best[:ell]))
    return bool(fired), float(stalled)


def _last(values: deque, count: int) -> np.ndarray:
    """The last ``count`` values of a deque, oldest first, in O(count) (not a copy of it all)."""
    return np.fromiter(itertools.islice(reversed(values), count), float, count)[::-1]


def tolcondition(condition: float | None, tol: float | None) -> tuple[bool, float]:
    """cond(AAᵀ) above ``tol`` (``condition`` None: not measured this generation)."""
    if condition is None or tol is None:
        return False, np.nan
    return bool(not condition <= tol), condition


# -- history ---------------------------------------------------------------------------------------


class History:
    """Per-generation best and median f, as long as the criteria need them."""

    def __init__(self, fun_length: int, stagnation_window: int | None):
        self.fun_length = int(fun_length)
        ell = max(1, (stagnation_window or 0) // 10)
        self.maxlen = max(self.fun_length, 2 * ell)
        self.best: deque[float] = deque(maxlen=self.maxlen)
        self.median: deque[float] = deque(maxlen=self.maxlen)
        self.recent_best: deque[float] = deque(maxlen=self.fun_length)  # tolfun's window

    def append(self, best: float, median: float) -> None:
        self.best.append(float(best))
        self.median.append(float(median))
        self.recent_best.append(float(best))

    def state_dict(self) -> dict:
        return {"best": list(self.best), "median": list(self.median)}

    def load_state_dict(self, state: dict) -> None:
        self.best = deque(state["best"], maxlen=self.maxlen)
        self.median = deque(state["median"], maxlen=self.maxlen)
        self.recent_best = deque(state["best"][-self.fun_length:], maxlen=self.fun_length)


class BestSoFar:
    """The best-so-far of a run on the device, updated in place with no host round-trip: f and x
    of the best point, the generation it was found in, the last generation's best ranked f, and
    whether a non-finite f value was seen since the last ``read``.  ``DeviceRecord`` and a replayed
    CUDA graph (``graphs``) both keep one; in place, a graph can replay its updates.

    Args:
        fbest, xbest, best_iteration: the start (host values; xbest None before a finite f).
        like_x: a row of the solutions (its dtype and device are xbest's).
    """

    def __init__(self, fbest: float, xbest, best_iteration: int, like_x):
        import torch

        device = like_x.device
        self.fbest = torch.zeros((), dtype=torch.float64, device=device)
        self.xbest = torch.zeros_like(like_x)
        self.best_iteration = torch.zeros((), dtype=torch.int64, device=device)
        self.gen_best = torch.zeros((), dtype=torch.float64, device=device)
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.reset(fbest, xbest, best_iteration)

    def tensors(self) -> list:
        return [self.fbest, self.xbest, self.best_iteration, self.gen_best, self.nonfinite]

    def reset(self, fbest: float, xbest, best_iteration: int) -> None:
        """Start again from these host values (in place: the tensors stay the same)."""
        self.fbest.fill_(float(fbest))
        if xbest is not None:
            self.xbest.copy_(xbest)
        self.best_iteration.fill_(int(best_iteration))
        self.gen_best.fill_(np.nan)
        self.nonfinite.fill_(False)

    def update(self, ranked, finite, X, iteration):
        """Record one generation: ranked (n,) its f values with non-finite ones as +inf, finite
        (n,) which were finite, X (n, d) its solutions, ``iteration`` the generation count after
        it (an int or a 0-d tensor).  Returns its (best, median) of ranked f, float64 (2,).

        One stable sort gives the best row (argmin's first occurrence) and numpy's median."""
        import torch

        s, order = torch.sort(ranked, stable=True)
        fi = s[0].double()
        better = fi < self.fbest
        torch.where(better, fi, self.fbest, out=self.fbest)
        torch.where(better, X.index_select(0, order[:1])[0], self.xbest, out=self.xbest)
        if not torch.is_tensor(iteration):  # a Python count (tell); a graph passes its counter
            iteration = torch.full_like(self.best_iteration, iteration)
        torch.where(better, iteration, self.best_iteration, out=self.best_iteration)
        self.gen_best.copy_(fi)  # +inf when nothing is finite: ``read`` makes it NaN
        torch.logical_or(self.nonfinite, ~finite.all(), out=self.nonfinite)
        n = s.shape[0]
        median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
        return torch.stack([s[0], median]).double()

    def read(self, pairs) -> dict:
        """The host values, with ``pairs`` (k, 2) float64 (best, median) rows, in one transfer:
        ``fbest``, ``best_iteration``, ``gen_best`` (NaN if no f was finite), ``nonfinite`` (then
        cleared), ``history`` (the pairs as a list) and ``xbest`` (a device copy; None before a
        finite f value)."""
        import torch

        head = torch.stack([self.fbest, self.best_iteration.double(), self.gen_best,
                            self.nonfinite.double()])
        host = torch.cat([head, pairs.reshape(-1)]).cpu().numpy()
        self.nonfinite.fill_(False)
        fbest, gen_best = float(host[0]), float(host[2])
        return {"fbest": fbest, "best_iteration": int(host[1]),
                "gen_best": gen_best if np.isfinite(gen_best) else np.nan,
                "nonfinite": bool(host[3]), "history": host[4:].reshape(-1, 2).tolist(),
                "xbest": self.xbest.clone() if np.isfinite(fbest) else None}


class DeviceRecord:
    """The bookkeeping of the generations between two host checks, kept on the device (torch).

    Per generation, with no host round-trip: the best-so-far (``BestSoFar``) and the best and
    median of the ranked f values (for ``History``).  ``sync`` moves what accumulated to the host
    in one transfer and starts a new batch; the best-so-far stays on the device.

    Args:
        fbest, xbest, best_iteration: the best-so-far at the start (host values; xbest None
            before any finite f value).
    """

    def __init__(self, fbest: float = np.inf, xbest=None, best_iteration: int = 0):
        self._start = (float(fbest), xbest, int(best_iteration))
        self.best: BestSoFar | None = None  # made at the first update (the device of X)
        self._stats: list = []  # one (best, median) pair of ranked f per generation

    @property
    def pending(self) -> bool:
        """True when generations were recorded since the last ``sync``."""
        return bool(self._stats)

    def update(self, f, X, iteration: int) -> None:
        """Record one generation: f (n,) its f values (non-finite kept), X (n, d) its solutions,
        ``iteration`` the generation count after it."""
        import torch

        finite = torch.isfinite(f)
        ranked = torch.where(finite, f, torch.full_like(f, np.inf))
        if self.best is None:
            self.best = BestSoFar(*self._start, like_x=X[0])
        self._stats.append(self.best.update(ranked, finite, X, iteration))

    def sync(self) -> dict:
        """The recorded values on the host (one device-to-host transfer): ``BestSoFar.read`` with
        the history of the generations since the last sync."""
        import torch

        rec = self.best.read(torch.stack(self._stats))
        self._stats = []
        return rec
