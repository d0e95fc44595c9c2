"""NaturalES (default path rule) on the rotation-invariant low-rank structures, fixed seeds and budgets.

d = 60, a random 3-dim subspace with condition c = 1e4 (``problems.functions``), structure rank k = 3,
x0 = 0.5·1, σ0 = 0.5, target f < 1e-8.  Measured over seeds 0–4 (benchmarks/RESULTS.md): stiff
subspace with "lowrank-precision" 19,168–22,784 evaluations, valley with "lowrank-cov" 24,144–25,680
(the full structure needs 27,184 on the stiff one, seed 0).  The budgets leave a margin of ~1.6×.
"""

from __future__ import annotations

import numpy as np
import pytest

from natgrad_es.es import NaturalES, minimize
from problems.functions import StiffSubspace, Valley

D, R, C, K = 60, 3, 1e4, 3
BUDGETS = {"lowrank-precision": 36_000, "lowrank-cov": 40_000}


@pytest.mark.parametrize("structure, problem",
                         [("lowrank-precision", StiffSubspace), ("lowrank-cov", Valley)])
def test_reaches_target_on_its_subspace_problem(structure, problem):
    f = problem(D, R, C, seed=1)
    res = minimize(f, np.full(D, 0.5), 0.5, structure, rank=K, vectorized=True, seed=1, ftarget=1e-8,
                   budget=BUDGETS[structure], curvature="ranks")
    assert res.fun < 1e-8, (res.fun, res.nfev, res.message)
    assert "ftarget" in res.stop


def test_structure_learns_the_subspace():
    # after the run, span Q is the stiff subspace and the precision side shrank it by ≈ 1/√c
    f = StiffSubspace(D, R, C, seed=2)
    es = NaturalES(np.full(D, 0.5), 0.5, "lowrank-precision", rank=K, seed=2, curvature="ranks")
    while es.evaluations < 30_000 and not es.stop():
        X = es.ask()
        es.tell(X, f(X))
    A = es.factor
    cosines = np.linalg.svd(f.P.T @ A.Q, compute_uv=False)
    assert cosines.min() > 0.99, cosines
    assert np.all(A.a < -0.9)
    # the whitened Hessian AᵀHA is far better conditioned than H (c = 1e4; 200 measured here)
    Aw = A.to_dense()
    ev = np.linalg.eigvalsh(Aw.T @ f.hessian() @ Aw)
    assert ev.max() / ev.min() < C / 10


def test_rates_follow_the_parameter_count():
    es = NaturalES(np.zeros(D), 0.5, "lowrank-cov", rank=K, curvature="ranks")
    assert es.factor.num_parameters == D + K + D * K - K * (K + 1) // 2
    p_lr = es._parameters(es._n)
    p_diag = NaturalES(np.zeros(D), 0.5, "diagonal")._parameters(es._n)
    assert p_lr.c_mu < p_diag.c_mu and p_lr.c_1 < p_diag.c_1
