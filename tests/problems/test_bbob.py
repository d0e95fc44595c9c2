"""problems.bbob: the observer-free bbob loop, its target book-keeping, restarts and ECDFs."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from problems import bbob


def _run(hits, d=2, function=1, instance=1, method="m") -> bbob.BbobRun:
    hits = np.asarray(hits, dtype=float)
    return bbob.BbobRun(method, function, d, instance, "id", 0.0, 100 * d, 100 * d, 1.0, hits, 0, [6],
                        bool(np.isfinite(hits[-1])), 0.0)


# -- without cocoex ------------------------------------------------------------------------------


def test_targets_are_cocos():
    T = bbob.TARGETS
    assert T.shape == (51,) and T[0] == 100.0 and math.isclose(T[-1], 1e-8, rel_tol=1e-12)
    np.testing.assert_allclose(np.diff(np.log10(T)), -0.2)


def test_missing_cocoex_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cocoex", None)  # makes `import cocoex` raise ImportError
    with pytest.raises(ImportError, match="pip install coco-experiment"):
        bbob.require_cocoex()


def test_ecdf_and_area_by_hand():
    inf = math.inf
    # two targets per run, d = 2: hits/d = {1, 10} and {100, inf}
    runs = [_run([2.0, 20.0]), _run([200.0, inf])]
    assert bbob.fraction_reached(runs, 1) == 0.25
    assert bbob.fraction_reached(runs, 10) == 0.5
    assert bbob.fraction_reached(runs, 100) == 0.75
    np.testing.assert_allclose(bbob.ecdf(runs, np.array([0.5, 1, 5, 10, 1e3])), [0, .25, .25, .5, .75])
    # area over log10(x) ∈ [0, 2], normalised: the pairs contribute 1, 1/2, 0, 0
    assert math.isclose(bbob.ecdf_area(runs, 100), (1 + 0.5 + 0 + 0) / 4)
    assert math.isnan(bbob.ecdf_area([], 100))


def test_run_record_round_trips_through_json():
    r = _run([3.0, math.inf])
    back = bbob.BbobRun.from_dict(json.loads(json.dumps(r.to_dict())))
    np.testing.assert_array_equal(back.hits, r.hits)
    assert back.to_dict() == r.to_dict()


# -- with cocoex ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cocoex():
    return pytest.importorskip("cocoex")


def _problem(cocoex, function=1, d=2, instance=1):
    suite = cocoex.Suite("bbob", f"instances: {instance}", f"function_indices: {function} dimensions: {d}")
    return suite, suite.get_problem_by_function_dimension_instance(function, d, instance)


def test_optimum_is_exact_and_leaves_the_problem_untouched(cocoex, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite, p = _problem(cocoex, function=8, d=5, instance=3)
    xopt, fopt = bbob.optimum(p, suite)
    assert p.evaluations == 0 and not list(tmp_path.iterdir())  # no file left behind
    assert xopt.shape == (5,) and round(fopt * 100) == fopt * 100
    assert p(xopt) - fopt <= 1e-12 and p.final_target_hit
    assert p(xopt + 1e-3) - fopt > 1e-8


class Scripted:
    """Asks given batches in order; stops when they are used up."""

    name = "scripted"

    def __init__(self, batches):
        self.batches, self.told = list(batches), []

    def ask(self):
        return self.batches.pop(0)

    def tell(self, X, f):
        self.told.append(np.asarray(f))

    def stop(self):
        return not self.batches


def test_hits_are_the_first_evaluation_below_each_target(cocoex):
    suite, p = _problem(cocoex, function=1, d=2, instance=1)
    xopt, fopt = bbob.optimum(p, suite)
    # f1 is ‖x − x*‖² + f*: points at distance √Δ give f − f* = Δ exactly (up to rounding)
    deltas = np.array([1e3, 50.0, 1e-1, 2e-1, 1e-5, 3e-9, 1.0])
    points = xopt + np.sqrt(deltas)[:, None] * np.array([1.0, 0.0])
    opt = Scripted([points[:4], points[4:]])
    r = bbob.run_problem(p, lambda *a, **k: opt, 1000, suite=suite, restarts=None)
    expected = []
    for t in bbob.TARGETS:
        below = np.nonzero(deltas <= t * (1 + 1e-9))[0]
        expected.append(below[0] + 1 if below.size else math.inf)
    # targets within rounding of a delta are ambiguous; compare elsewhere
    clear = [k for k, t in enumerate(bbob.TARGETS) if np.all(np.abs(np.log10(deltas / t)) > 1e-6)]
    np.testing.assert_array_equal(r.hits[clear], np.asarray(expected)[clear])
    # the population in which the last target is reached is evaluated to its end, not told
    assert r.evaluations == 7 and r.final_target_hit and r.hits[-1] == 6 and len(opt.told) == 1
    assert math.isclose(r.best_delta, 3e-9, rel_tol=1e-3) and r.restarts == 0


class StopsEarly:
    """Random search that stops after two generations: to exercise the restarts."""

    name = "stops-early"
    made: list = []

    def __init__(self, x0, sigma0, *, popsize, seed, budget):
        self.rng = np.random.default_rng(seed)
        self.x0, self.sigma0 = np.asarray(x0), sigma0
        self.n = popsize or 4
        self.generations = 0
        StopsEarly.made.append((tuple(np.round(x0, 12)), popsize, budget))

    def ask(self):
        return list(self.x0 + self.sigma0 * self.rng.standard_normal((self.n, len(self.x0))))

    def tell(self, X, f):
        self.generations += 1

    def stop(self):
        return {"generations": 2} if self.generations >= 2 else {}


@pytest.mark.parametrize("restarts,expected", [("ipop", [4, 8, 16, 32]), ("restart", [4] * 13),
                                               (None, [4])])
def test_restarts_double_the_population_and_respect_the_budget(cocoex, restarts, expected):
    StopsEarly.made = []
    suite, p = _problem(cocoex, function=15, d=2, instance=1)
    r = bbob.run_problem(p, StopsEarly, 100, suite=suite, restarts=restarts, seed=3)
    assert r.popsizes == expected and r.restarts == len(expected) - 1
    assert r.evaluations == (100 if restarts else 8) == p.evaluations
    starts = [x0 for x0, _, _ in StopsEarly.made]
    assert len(set(starts)) == len(starts) and np.all(np.abs(starts) <= 4)  # a new x0 each start
    assert [b for _, _, b in StopsEarly.made][:2] == [100, 92][:len(expected)]  # budget left
    hits = r.hits[np.isfinite(r.hits)]
    assert np.all(np.diff(hits) >= 0) and np.all(hits <= r.evaluations)


@pytest.mark.parametrize("factory", [bbob.NaturalESFactory(), bbob.PycmaFactory()],
                         ids=["natgrad-es", "pycma"])
def test_tiny_run_with_real_optimizers(cocoex, factory):
    if isinstance(factory, bbob.PycmaFactory):
        pytest.importorskip("cma")
    seen = []
    runs = bbob.run(factory, functions=[1], dimensions=[2], instances=[1], budget_multiplier=300,
                    progress=seen.append)
    assert len(runs) == 1 and seen == runs
    r = runs[0]
    assert r.method == factory.name and r.problem_id == "bbob_f001_i01_d02" and r.budget == 600
    assert np.all(np.isfinite(r.hits)) and r.hits[-1] <= r.evaluations <= 600  # sphere: solved
    assert r.final_target_hit and r.best_delta <= 1e-8 and r.popsizes[0] == 6
    assert np.all(np.diff(r.hits) >= 0) and r.hits[0] >= 1
    # the same seed gives the same run; both methods start from the same x0
    again = bbob.run(factory, functions=[1], dimensions=[2], instances=[1], budget_multiplier=300)[0]
    np.testing.assert_array_equal(again.hits, r.hits)
    assert 0.2 < bbob.ecdf_area(runs, 300) <= 1


def test_bad_arguments(cocoex):
    f = bbob.NaturalESFactory()
    with pytest.raises(ValueError, match="1..24"):
        bbob.run(f, functions=[25], dimensions=[2], instances=[1])
    with pytest.raises(ValueError, match="dimensions"):
        bbob.run(f, functions=[1], dimensions=[4], instances=[1])
    with pytest.raises(ValueError, match="budget_multiplier"):
        bbob.run(f, functions=[1], dimensions=[2], instances=[1], budget_multiplier=0)
    suite, p = _problem(cocoex)
    with pytest.raises(ValueError, match="restarts"):
        bbob.run_problem(p, f, 10, suite=suite, restarts="bipop")
