"""Gaussian VI on Bayesian linear regression, where the exact posterior is closed-form.

For each estimator, update rule and β: iterations, log_joint rows evaluated and wall time until
KL(q ‖ exact posterior) < 1e-3 and < 1e-6, over seeds, median (min–max); "–" when a run did not get
there within the budget (also the count of such runs).  Synthetic data: X ~ N(0, I) (N = 50 rows),
noise variance 0.25, prior N(0, I); posterior precisions ~ 200 per direction; start m = 0, A = 0.1 I.

Run:  python benchmarks/vi_linear.py [--dims 5 20] [--seeds 3] [--budget 400]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from natgrad_es.backend import limit_threads
from natgrad_es.vi import GaussianVI, VIWarning
from problems.regression import BayesianLinearRegression

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
limit_threads(1)  # small problems: torch and BLAS thread pools would spin against each other


def problem(d: int, seed: int = 0) -> BayesianLinearRegression:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((50, d))
    y = X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(50)
    return BayesianLinearRegression(X, y, prior_var=1.0, noise_var=0.25)


def run(model, estimator, update, lr, seed, budget, targets=(1e-3, 1e-6)):
    vi = GaussianVI(model.log_joint, model.dim, estimator=estimator, update=update, lr=lr, seed=seed)
    hit = {t: None for t in targets}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VIWarning)
        for it in range(budget):
            try:
                vi.step()
            except (FloatingPointError, ValueError):
                break
            kl = model.kl(vi.posterior.mean, vi.posterior.covariance())
            for t in targets:
                if hit[t] is None and kl < t:
                    hit[t] = (it + 1, vi.evaluations, time.perf_counter() - t0)
            if all(hit.values()):
                break
    return hit


def fmt(values, k):
    got = [v[k] for v in values if v is not None]
    miss = sum(v is None for v in values)
    if not got:
        return f"– ({miss} missed)"
    g = np.asarray(got, float)
    spec = "{:.0f}" if k < 2 else "{:.3f}"
    s = f"{spec.format(np.median(g))} ({spec.format(g.min())}–{spec.format(g.max())})"
    return s + (f", {miss} missed" if miss else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=400)
    args = parser.parse_args()
    configs = [("delta", "additive", 1.0), ("delta", "multiplicative", 1.0),
               ("hessian", "multiplicative", 1.0), ("hessian", "additive", 1.0),
               ("stein", "multiplicative", 0.2), ("stein", "additive", 0.2),
               ("stein", "multiplicative", 0.5), ("stein", "multiplicative", 1.0),
               ("zeroth", "multiplicative", 0.05), ("zeroth", "additive", 0.05),
               ("zeroth", "multiplicative", 0.1), ("zeroth", "multiplicative", 0.2)]
    print("| d | estimator | update | β | iterations to 1e-3 | rows to 1e-3 | s to 1e-3 "
          "| iterations to 1e-6 |")
    print("|---|---|---|---|---|---|---|---|")
    for d in args.dims:
        model = problem(d)
        for estimator, update, lr in configs:
            hits = [run(model, estimator, update, lr, s, args.budget) for s in range(args.seeds)]
            lo, hi = [h[1e-3] for h in hits], [h[1e-6] for h in hits]
            print(f"| {d} | {estimator} | {update} | {lr} | {fmt(lo, 0)} | {fmt(lo, 1)} | {fmt(lo, 2)} | "
                  f"{fmt(hi, 0)} |")


if __name__ == "__main__":
    main()
