"""benchmarks/vi_vs_pyro.py on a tiny linear regression: references, error figures, counting, table."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyro")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import vi_vs_pyro as V  # noqa: E402

from problems.regression import BayesianLinearRegression, gaussian_kl  # noqa: E402


def tiny_problem() -> V.Problem:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 4))
    X[:, 1] += 0.8 * X[:, 0]  # correlated features: the restricted families differ from the posterior
    y = X @ np.array([1.0, -0.5, 0.3, 0.0]) + 0.5 * rng.standard_normal(40)
    model = BayesianLinearRegression(X, y, prior_var=1.0, noise_var=0.25)
    return V.Problem("tiny", model, "kl", (1e-2, 1e-3), rank=1)


def direct_kl(m1, S1, m2, S2) -> float:
    """KL(N(m1, S1) ‖ N(m2, S2)) from inverses and log-determinants (no Cholesky)."""
    P2 = np.linalg.inv(S2)
    r = m2 - m1
    logdets = np.linalg.slogdet(S2)[1] - np.linalg.slogdet(S1)[1]
    return 0.5 * (np.trace(P2 @ S1) + r @ P2 @ r - len(m1) + logdets)


def test_family_optima():
    p = tiny_problem()
    mu, S = p.model.posterior()
    P = p.model.posterior_precision()
    m, C = V.family_optimum(p, "full")
    assert np.allclose(m, mu) and np.allclose(C, S)
    m, C = V.family_optimum(p, "diagonal")  # the optimal diagonal q has precision diag(P)
    assert np.allclose(m, mu) and np.allclose(np.linalg.inv(C), np.diag(np.diag(P)))
    expect = V.expectations(p.model)
    for fam in ("full", "diagonal"):  # L-BFGS finds the closed forms
        m, C, gmax, _ = V.lbfgs_optimum(expect, p.dim, fam, p.rank)
        assert gmax < 1e-6 and gaussian_kl(m, C, *p.references[fam]) < 1e-9
    kl = {f: gaussian_kl(*V.family_optimum(p, f), mu, S)
          for f in ("full", "diagonal", "blocktri", "lowrank+diag")}
    # nested families: diagonal ⊂ (the closure of) both low-rank families ⊂ full
    assert kl["full"] == pytest.approx(0.0, abs=1e-12) and kl["diagonal"] > 0.05
    assert 0 < kl["blocktri"] < kl["diagonal"] and 0 < kl["lowrank+diag"] < kl["diagonal"]
    with pytest.raises(ValueError, match="targets"):
        V.Problem("bad", p.model, "kl", (1e-3, 1e-2), rank=1)


def test_counting():
    p = tiny_problem()
    run = V.run_pyro(p, "full", {"lr": 0.05}, seed=1, budget=30, jit=False)
    assert run["evals"] == run["model_calls"] == run["steps"] == 30  # one particle: one gradient a step
    run = V.run_pyro(p, "diagonal", {"lr": 0.05}, seed=1, budget=30, jit=True)
    assert run["evals"] == run["steps"] == 30
    vi = V.GaussianVI(p.model.log_joint, p.dim, estimator="hessian", mc_samples=2, seed=0)
    vi.step()
    oracle = vi._oracle
    assert V.natgrad_cost(vi) == oracle.n_grads + V.HVP_COST * oracle.n_hvps == 2 * (1 + 2 * p.dim)


def test_ratio_bounds():
    assert V.ratio([100, 300], [10, 30], 1000, 1000)[0] == "10"
    assert V.ratio([math.inf], [20], 1000, 1000) == ("> 50", 50.0)
    assert V.ratio([500], [math.inf], 1000, 1000) == ("< 0.5", 0.5)
    assert V.ratio([math.inf], [math.inf], 1000, 1000)[0] == "–"


def test_benchmark_rows_and_errors():
    p = tiny_problem()
    settings = {"pyro": [{"lr": 0.05}],
                "stein": [{"estimator": "stein", "lr": 0.5, "mc_samples": 8}],
                "hvp": [{"estimator": "delta", "lr": 0.5}]}
    records = V.run_benchmark(p, seeds=(1, 2), budget=150, settings=settings, progress=False)
    assert [(r["structure"], r["group"]) for r in records] == [
        (s, g) for s in V.STRUCTURES for g in V.GROUPS]
    for rec in records:
        ref = V.family_optimum(p, V.family(rec["group"], rec["structure"]))
        assert [r["seed"] for r in rec["runs"]] == [1, 2]
        for run in rec["runs"]:
            assert run["evals"] <= 150 + 2 * (1 + 2 * p.dim)  # the last step may straddle the budget
            got = run["final_error"]
            direct = direct_kl(run["final_mean"], run["final_cov"], *ref)
            assert got == pytest.approx(direct, rel=1e-6, abs=1e-9)
            for t in p.targets:
                hit = run["hits"][str(t)]
                if hit is not None:
                    assert hit["evals"] <= run["evals"] and hit["steps"] <= run["steps"]
            assert (run["hits"]["0.001"] is not None) <= (run["hits"]["0.01"] is not None)
    full = {r["group"]: r for r in records if r["structure"] == "full"}
    # delta with β = 1/2 on a quadratic halves the error each step: the full family gets there fast
    assert full["hvp"]["runs"][0]["hits"]["0.001"] is not None
    text, rows = V.table(p, records, 150)
    lines = text.splitlines()
    assert len(lines) == 2 + 9 and len(rows) == 9
    assert [row["method"] for row in rows[:3]] == [V.GROUP_LABELS[g] for g in V.GROUPS]
    assert "lowrank k=1 (lowrank+diag)" in lines[5] and "lowrank k=1 (blocktri)" in lines[6]
    ours = rows[2]
    p_hit = V.to_target(full["pyro"], 1e-3)
    o_hit = V.to_target(full["hvp"], 1e-3)
    expected = V.ratio(p_hit, o_hit, 150, 150)[0]
    assert ours["ratio_tight"] == expected
