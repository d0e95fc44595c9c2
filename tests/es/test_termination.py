"""``termination.tolfun`` against its definition, over a history longer than its window."""

import numpy as np
import pytest

from natgrad_es.es import termination


def _reference(current_range, best, window, tol):
    recent = best[-window:]
    value = max(current_range, max(recent) - min(recent))
    return value < tol, value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tolfun_matches_its_definition_and_survives_a_checkpoint(seed):
    rng = np.random.default_rng(seed)
    history = termination.History(fun_length=7, stagnation_window=200)  # keeps 40 > 7 values
    best = []
    for step in range(120):
        b = float(rng.choice([1.0, 1.0 + 1e-13, 2.0]) if step > 60 else rng.standard_normal())
        history.append(b, b + 1.0)
        best.append(b)
        for current in (0.0, 1e-12, 0.5):
            fired, value = termination.tolfun(current, history, 1e-11)
            ref_fired, ref_value = _reference(current, best, 7, 1e-11)
            assert fired == ref_fired
            if current < 1e-11:  # below tol the whole window decides and is measured
                assert value == ref_value
            else:  # the current range alone decides: it is the value reported
                assert value == current
    restored = termination.History(fun_length=7, stagnation_window=200)
    restored.load_state_dict(history.state_dict())
    assert list(restored.recent_best) == best[-7:]
    assert termination.tolfun(0.0, restored, 1e-11) == termination.tolfun(0.0, history, 1e-11)


def test_tolfun_fires_only_on_a_flat_window():
    history = termination.History(fun_length=3, stagnation_window=None)
    assert termination.tolfun(0.0, history, 1e-11) == (False, np.inf)  # nothing recorded yet
    for b in (5.0, 1.0, 1.0, 1.0):
        history.append(b, b)
    assert termination.tolfun(0.0, history, 1e-11)[0]  # the 5.0 has left the window of 3
    history.append(1.0 + 1e-9, 1.0)
    assert not termination.tolfun(0.0, history, 1e-11)[0]


def _stagnation_reference(best, median, iterations, best_iteration, window):
    ell = max(1, window // 10)
    stalled = iterations - best_iteration
    if iterations <= window or stalled <= window / 2 or len(median) < 2 * ell:
        return False, float(stalled)
    fired = (np.median(median[-ell:]) >= np.median(median[-2 * ell:-ell])
             and np.median(best[-ell:]) >= np.median(best[-2 * ell:-ell]))
    return bool(fired), float(stalled)


@pytest.mark.parametrize("seed", [0, 1])
def test_tolstagnation_matches_its_definition(seed):
    rng = np.random.default_rng(seed)
    window, fired_once = 60, False  # ell = 6; the history keeps max(7, 12) values
    history = termination.History(fun_length=7, stagnation_window=window)
    best, median = [], []
    for step in range(1, 400):
        # falling, then flat with noise (stagnation), then falling again
        level = 1.0 / step if step < 150 or step > 300 else 1.0 / 150
        b = level * (1 + 0.1 * rng.random())
        history.append(b, 2 * b)
        best.append(b)
        median.append(2 * b)
        for best_iteration in (step - 10, step - 40):
            got = termination.tolstagnation(history, step, best_iteration, window)
            assert got == _stagnation_reference(best, median, step, best_iteration, window)
            fired_once |= got[0]
    assert fired_once and len(history.median) == 12
