"""The fitting loop shared by ``GaussianVI`` and ``WishartVI``: validated arguments, then steps."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["run_steps", "positive", "step_size", "unit_interval"]


def positive(value, name: str) -> float:
    """``value`` as a finite positive float, or a ValueError naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return v


def unit_interval(value, name: str) -> float:
    """``value`` as a float in [0, 1) (a momentum or averaging weight), or a ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not 0 <= v < 1:  # False for NaN too
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return v


def run_steps(model: Any, n_iter: int | None, tol: float | None, max_iter: int,
              callback: Callable[[Any], Any] | None) -> None:
    """Call ``model.step()`` ``n_iter`` times, or until its record's ``"step"`` falls below ``tol``
    (at most ``max_iter`` steps); ``callback(model)`` after each step, True stops."""
    if n_iter is None and tol is None:
        raise ValueError("fit needs n_iter (a number of steps) or tol (a step-size threshold)")
    if n_iter is not None and (isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer))
                               or n_iter < 0):
        raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
    if tol is not None:
        tol = positive(tol, "tol")
    limit = int(n_iter) if n_iter is not None else int(max_iter)
    for _ in range(limit):
        record = model.step()
        if callback is not None and callback(model):
            break
        if tol is not None and record["step"] < tol:
            break


def step_size(lr, iteration: int) -> float:
    """β at ``iteration`` from ``lr`` (a number or a schedule ``lr(t)``), checked to lie in (0, 1]."""
    beta = float(lr(iteration)) if callable(lr) else lr
    if not (math.isfinite(beta) and 0 < beta <= 1):
        raise ValueError(f"lr({iteration}) must lie in (0, 1], got {beta!r}")
    return beta
