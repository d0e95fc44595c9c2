"""``natgrad_es.logger.Logger``: rows, CSV round trip, checkpoints and resume, restarts."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from natgrad_es.es import NaturalES, minimize
from natgrad_es.logger import COLUMNS, Logger, read_csv


def sphere_rows(X):
    return (np.asarray(X) ** 2).sum(axis=-1)


def run(es: NaturalES, log: Logger, generations: int, checkpoint_at: int | None = None):
    saved = None
    for _ in range(generations):
        X = es.ask()
        f = sphere_rows(X)
        es.tell(X, f)
        log.log(es, f)
        if checkpoint_at is not None and es.iterations == checkpoint_at:
            saved = (es.state_dict(), log.state_dict())
    return saved


def test_rows_hold_what_the_strategy_says() -> None:
    es = NaturalES(np.ones(4), 0.5, seed=1)
    log = Logger(coordinates=3)
    X = es.ask()
    f = sphere_rows(X)
    es.tell(X, f)
    row = log.log(es, f)
    assert list(row)[:len(COLUMNS)] == list(COLUMNS)
    assert row["iteration"] == 1 and row["evaluations"] == es.popsize and row["restart"] == 0
    assert row["f_best"] == es.result.fbest == f.min() == row["f_gen_best"]
    assert row["f_gen_median"] == pytest.approx(np.median(f))
    assert row["sigma"] == es.sigma
    sv = np.linalg.svd(es.factor.to_dense(), compute_uv=False)
    assert row["axis_ratio"] == pytest.approx(sv.max() / sv.min())
    assert row["axis_min"] == pytest.approx(es.sigma * sv.min())
    assert row["axis_max"] == pytest.approx(es.sigma * sv.max())
    np.testing.assert_allclose([row[f"axis_{i}"] for i in range(4)], es.sigma * sv)
    np.testing.assert_allclose([row[f"mean_{i}"] for i in range(3)], es.mean[:3])
    assert "mean_3" not in row and log.columns_like("mean_") == ["mean_0", "mean_1", "mean_2"]


def test_without_f_values_the_generation_columns_come_from_last_fvalues() -> None:
    es = NaturalES(np.ones(3), 0.5, seed=1)
    log = Logger()
    X = es.ask()
    f = sphere_rows(X)
    es.tell(X, f)
    row = log.log(es)
    assert row["f_gen_best"] == np.min(f) and row["f_gen_median"] == np.median(f)
    assert row["f_best"] == es.result.fbest


def test_without_any_f_values_the_generation_columns_are_nan() -> None:
    es = NaturalES(np.ones(3), 0.5, seed=1)
    X = es.ask()
    es.tell(X, sphere_rows(X))

    class NoHook:  # a strategy-like object without last_fvalues
        sigma, factor, mean, iterations, evaluations, result = (
            es.sigma, es.factor, es.mean, es.iterations, es.evaluations, es.result)

    row = Logger().log(NoHook())
    assert math.isnan(row["f_gen_best"]) and math.isnan(row["f_gen_median"])


def test_minimize_callback_and_watch() -> None:
    log = Logger(coordinates=2)
    fun = log.watch(lambda x: float((x ** 2).sum()))
    res = minimize(fun, np.ones(3), 0.5, seed=1, budget=200, callback=log)
    assert len(log) == res.nit
    assert np.isfinite(log.column("f_gen_median")).all()
    assert (log.column("f_gen_median") >= log.column("f_gen_best")).all()
    assert np.all(np.diff(log.column("f_best")) <= 0)
    assert log.column("evaluations")[-1] == res.nfev


def test_watch_vectorized_and_non_finite() -> None:
    log = Logger()
    fun = log.watch(lambda X: np.where(X[:, 0] > 0, np.nan, (X ** 2).sum(1)), vectorized=True)
    with pytest.warns(UserWarning, match="non-finite"):
        minimize(fun, np.zeros(2), 1.0, seed=0, budget=60, vectorized=True, callback=log)
    assert np.isfinite(log.column("f_gen_best")).all()
    assert np.isinf(log.column("f_gen_median")).any()  # NaN f values count as +inf


def test_csv_round_trip(tmp_path) -> None:
    path = tmp_path / "run.csv"
    log = Logger(path)
    run(NaturalES(np.ones(3), 0.5, structure="diagonal", seed=2), log, 12)
    back = read_csv(path)
    assert back.columns == log.columns and len(back) == 12
    for name in log.columns:
        np.testing.assert_array_equal(back.column(name), log.column(name))
    assert isinstance(back.rows[0]["iteration"], int)


def test_an_existing_file_is_overwritten_unless_resume(tmp_path) -> None:
    path = tmp_path / "run.csv"
    run(NaturalES(np.ones(3), 0.5, seed=2), Logger(path), 5)
    run(NaturalES(np.ones(3), 0.5, seed=3), Logger(path), 3)
    assert len(read_csv(path)) == 3


def test_resume_from_a_checkpoint_does_not_duplicate_rows(tmp_path) -> None:
    """The run goes on past its checkpoint, stops; the resumed run rewrites the rows after it."""
    path = tmp_path / "run.csv"
    full = Logger(tmp_path / "reference.csv")
    run(NaturalES(np.ones(4), 0.5, seed=5), full, 10)

    log = Logger(path)
    saved = run(NaturalES(np.ones(4), 0.5, seed=5), log, 7, checkpoint_at=4)  # "crash" after 7
    es_state, log_state = pickle.loads(pickle.dumps(saved))
    es = NaturalES.from_state_dict(es_state)
    log = Logger(path)
    log.load_state_dict(log_state)
    assert len(read_csv(path)) == 4  # the file went back to the checkpoint
    run(es, log, 6)

    back = read_csv(path)
    assert back.column("iteration").tolist() == list(range(1, 11))
    for name in ("evaluations", "f_best", "f_gen_median", "sigma", "axis_ratio", "mean_0"):
        np.testing.assert_array_equal(back.column(name), full.column(name))


def test_resume_true_trims_rows_after_the_restored_strategy(tmp_path) -> None:
    path = tmp_path / "run.csv"
    saved = run(NaturalES(np.ones(4), 0.5, seed=5), Logger(path), 7, checkpoint_at=3)
    es = NaturalES.from_state_dict(saved[0])
    log = Logger(path, resume=True)
    assert len(log) == 7
    run(es, log, 2)
    back = read_csv(path)
    assert back.column("iteration").tolist() == [1, 2, 3, 4, 5]
    assert back.column("time")[3] >= back.column("time")[2]


def test_restarts_are_counted_and_counters_summed() -> None:
    log = Logger()
    first = NaturalES(np.ones(3), 0.5, seed=1)
    run(first, log, 4)
    second = NaturalES(np.ones(3), 0.5, popsize=14, seed=2)
    run(second, log, 3)
    assert log.column("restart").tolist() == [0] * 4 + [1] * 3
    assert log.column("iteration").tolist() == list(range(1, 8))
    assert log.column("evaluations")[-1] == first.evaluations + second.evaluations


def test_every_and_force() -> None:
    es = NaturalES(np.ones(3), 0.5, seed=1)
    log = Logger(every=3)
    run(es, log, 7)
    assert log.column("iteration").tolist() == [3, 6]
    log.log(es, force=True)
    log.log(es, force=True)  # the same generation again: no duplicate
    assert log.column("iteration").tolist() == [3, 6, 7]


def test_large_structured_dimension_logs_min_max_axes_only() -> None:
    es = NaturalES(np.ones(50), 0.5, structure="diagonal", seed=1)
    log = Logger(axes=20)
    X = es.ask()
    es.tell(X, sphere_rows(X))
    row = log.log(es)
    assert "axis_0" not in row
    assert row["axis_max"] == pytest.approx(es.sigma * np.abs(es.factor.a).max())


def test_torch_strategy_is_logged_as_numbers() -> None:
    torch = pytest.importorskip("torch")
    es = NaturalES(torch.ones(3, dtype=torch.float64), 0.5, seed=1)
    log = Logger()
    X = es.ask()
    f = (X ** 2).sum(1)
    es.tell(X, f)
    row = log.log(es, f)
    assert isinstance(row["mean_0"], float) and row["f_gen_best"] == pytest.approx(float(f.min()))


@pytest.mark.parametrize("kwargs", [{"coordinates": -1}, {"every": 0}, {"axes": 1.5}])
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError, match="must be an integer"):
        Logger(**kwargs)


def test_read_csv_rejects_other_files(tmp_path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_csv(tmp_path / "empty.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a natgrad_es log"):
        read_csv(tmp_path / "other.csv")
    with pytest.raises(ValueError, match="not a Logger state_dict"):
        Logger().load_state_dict({"version": 99})


def test_logger_pickles_mid_run() -> None:
    es = NaturalES(np.ones(3), 0.5, seed=1)
    log = Logger()
    run(es, log, 2)
    copy = pickle.loads(pickle.dumps(log))
    assert copy.rows == log.rows


def test_minimize_callback_logs_the_generation_median_without_wrapping() -> None:
    import problems
    from natgrad_es.es import minimize
    from natgrad_es.logger import Logger

    f = problems.get("sphere", 4)
    for restarts in (None, "ipop"):
        log = Logger()
        minimize(f, np.ones(4), 0.5, vectorized=True, seed=0, ftarget=1e-6, callback=log,
                 restarts=restarts)
        assert len(log) > 5
        medians = log.column("f_gen_median")
        assert np.all(np.isfinite(medians)) and medians[-1] < medians[0]
