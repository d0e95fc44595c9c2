"""GaussianVI with momentum in local coordinates (seed 000): where it helps and where it does not.

Bayesian linear regression, so that KL(q ‖ exact posterior) is exact.  Synthetic data: X ~ N(0, I)
(N = 1000 rows, d = 10), noise variance 0.25, prior N(0, I); start m = 0, A = 0.1 I; full factor,
multiplicative rule.  α ∈ {0, 0.5, 0.9} is ``GaussianVI(momentum=α)``; every α sees the same seeds
(samples and minibatches).  Two regimes:

* minibatch: |batch| = 20 (data term × N/|batch| = 50), Stein estimator (16 samples), β ∈ {0.3, 0.1,
  0.03, 0.01}: the gradient noise never vanishes, so a constant β has a noise floor.  Reported: steps
  (and data-gradient evaluations = rows × |batch|) to KL < 3 and < 1, and the noise floor, the mean
  KL over the last 200 of ``--budget`` steps.
* full batch: the delta estimator (deterministic, Newton-like) and the Stein estimator (its noise
  vanishes at the answer on a Gaussian target), at their default β and a small one: steps to
  KL < 1e-6.
* restricted family: the diagonal factor on a correlated posterior (features with correlation 0.8),
  delta estimator.  The family's optimum has precision diag(P) and the exact mean, reached by a
  Jacobi-like mean iteration whose rate is set by the condition of D^{-1/2} P D^{-1/2} (D = diag P):
  an ill-conditioned linear iteration, the textbook case for heavy-ball momentum.  Steps to an excess
  KL (over the family's optimum) < 1e-8, from A = 0.1 I and from A at the optimum's scale.

Each cell: median (min–max) over seeds; "–" with the number of runs that missed the target.

Run:  python benchmarks/vi_momentum.py [--seeds 5] [--budget 1000]
          [--json benchmarks/results/vi_momentum.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from natgrad_es.backend import limit_threads
from natgrad_es.vi import GaussianVI, VIWarning
from problems.regression import BayesianLinearRegression

limit_threads(1)  # small problems: torch and BLAS thread pools would spin against each other

ALPHAS = (0.0, 0.5, 0.9)
BATCH = 20


def problem(d: int = 10, n: int = 1000, seed: int = 0, corr: float = 0.0) -> BayesianLinearRegression:
    rng = np.random.default_rng(seed)
    C = corr * np.ones((d, d)) + (1.0 - corr) * np.eye(d)
    X = rng.standard_normal((n, d)) @ np.linalg.cholesky(C).T
    y = X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)
    return BayesianLinearRegression(X, y, prior_var=1.0, noise_var=0.25)


class ExactKL:
    """KL(q ‖ exact posterior) from the factor itself: ½[tr(PAAᵀ) + eᵀPe − d − log det P − 2 log|det A|]
    (no Cholesky of AAᵀ, so a collapsing run reports a large KL instead of failing)."""

    def __init__(self, model: BayesianLinearRegression):
        self.mu, _ = model.posterior()
        self.P = model.posterior_precision()
        self.L = np.linalg.cholesky(self.P)
        self.logdet_P = 2.0 * np.log(np.diag(self.L)).sum()

    def __call__(self, vi: GaussianVI) -> float:
        B = self.L.T @ vi.factor.to_dense()
        e = self.L.T @ (vi.mean - self.mu)
        d = len(e)
        return float(0.5 * ((B * B).sum() + e @ e - d - self.logdet_P - 2.0 * float(vi.factor.logdet())))


def run(model, *, estimator: str, lr: float, alpha: float, seed: int, budget: int, targets,
        batch: int | None = None, floor_window: int = 0, structure: str = "full", init_scale: float = 0.1,
        kl_offset: float = 0.0) -> dict:
    """One run: steps and log_joint rows at which each target of KL − ``kl_offset`` was first met, and
    the mean KL over the last ``floor_window`` steps (when the run goes on to ``budget``)."""
    log_joint = model.log_joint if batch is None else model.minibatch_log_joint(batch, seed=1000 + seed)
    vi = GaussianVI(log_joint, model.dim, structure, estimator=estimator, lr=lr, seed=seed, momentum=alpha,
                    init_scale=init_scale)
    exact_kl = ExactKL(model)
    hits: dict[float, list | None] = {t: None for t in targets}
    tail: list[float] = []
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VIWarning)
        for it in range(budget):
            try:
                vi.step()
            except (FloatingPointError, ValueError):  # a diverged run (non-finite state or log_joint)
                tail.append(float("inf"))
                break
            kl = exact_kl(vi) - kl_offset
            for t in targets:
                if hits[t] is None and kl < t:
                    hits[t] = [it + 1, vi.evaluations]
            if it >= budget - floor_window:
                tail.append(kl)
            if not floor_window and all(hits.values()):
                break
    return {"hits": {str(t): h for t, h in hits.items()}, "floor": float(np.mean(tail)) if tail else None,
            "steps": vi.iteration, "seconds": time.perf_counter() - t0}


def fmt(values, scale: float = 1.0, spec: str = "{:.0f}") -> str:
    got = [v * scale for v in values if v is not None]
    miss = sum(v is None for v in values)
    if not got:
        return f"– ({miss} missed)"
    g = np.asarray(got, float)
    s = f"{spec.format(np.median(g))} ({spec.format(g.min())}–{spec.format(g.max())})"
    return s + (f", {miss} missed" if miss else "")


def minibatch_table(model, seeds: int, budget: int, lrs, targets=(3.0, 1.0), window: int = 200) -> list[dict]:
    rows = []
    print(f"\nMinibatch (|batch| = {BATCH} of N = {model.n_data}), Stein estimator, {budget} steps\n")
    print(f"| β | α | steps to KL < {targets[0]:g} | steps to KL < {targets[1]:g} | data gradients to "
          f"KL < {targets[1]:g} (×10³) | noise floor: mean KL, last {window} steps |")
    print("|---|---|---|---|---|---|")
    for lr in lrs:
        for alpha in ALPHAS:
            res = [run(model, estimator="stein", lr=lr, alpha=alpha, seed=s, budget=budget, targets=targets,
                       batch=BATCH, floor_window=window) for s in range(seeds)]
            rows.append({"regime": "minibatch", "lr": lr, "alpha": alpha, "runs": res})
            a, b = ([r["hits"][str(t)] for r in res] for t in targets)
            floors = [r["floor"] for r in res]
            print(f"| {lr} | {alpha} | {fmt([h and h[0] for h in a])} | {fmt([h and h[0] for h in b])} | "
                  f"{fmt([h and h[1] for h in b], BATCH / 1e3, '{:.1f}')} | "
                  f"{fmt(floors, spec='{:.3g}')} |", flush=True)
    return rows


def full_batch_table(model, seeds: int, budget: int, configs, target: float = 1e-6) -> list[dict]:
    rows = []
    print(f"\nFull batch (N = {model.n_data}): steps to KL < {target:g} (budget {budget})\n")
    print("| estimator | β | α = 0 | α = 0.5 | α = 0.9 |")
    print("|---|---|---|---|---|")
    for estimator, lr in configs:
        cells = []
        n_seeds = 1 if estimator == "delta" else seeds  # deterministic: one run says it all
        for alpha in ALPHAS:
            res = [run(model, estimator=estimator, lr=lr, alpha=alpha, seed=s, budget=budget,
                       targets=(target,)) for s in range(n_seeds)]
            rows.append({"regime": "full batch", "estimator": estimator, "lr": lr, "alpha": alpha,
                         "runs": res})
            cells.append(fmt([r["hits"][str(target)] and r["hits"][str(target)][0] for r in res]))
        print(f"| {estimator} | {lr} | " + " | ".join(cells) + " |", flush=True)
    return rows


def restricted_table(budget: int, lrs=(0.2, 0.1), target: float = 1e-8) -> list[dict]:
    model = problem(corr=0.8)
    P = model.posterior_precision()
    mu, _ = model.posterior()
    best = model.kl(mu, np.diag(1.0 / np.diag(P)))  # KL of the diagonal family's optimum
    Dh = np.diag(P) ** -0.5
    lam = np.linalg.eigvalsh(Dh[:, None] * P * Dh[None, :])
    scale = float(np.exp(np.log(Dh).mean()))
    rows = []
    print(f"\nDiagonal family, correlated posterior (λ(D^-1/2 P D^-1/2) in [{lam.min():.2f}, "
          f"{lam.max():.2f}], KL of the family's optimum {best:.3g}), delta estimator: steps to excess "
          f"KL < {target:g} (budget {budget})\n")
    print("| β | start A | α = 0 | α = 0.5 | α = 0.9 |")
    print("|---|---|---|---|---|")
    for lr in lrs:
        for init, label in ((0.1, "0.1 I"), (scale, f"{scale:.3f} I (optimum's scale)")):
            cells = []
            for alpha in ALPHAS:
                res = run(model, estimator="delta", lr=lr, alpha=alpha, seed=0, budget=budget,
                          targets=(target,), structure="diagonal", init_scale=init, kl_offset=best)
                rows.append({"regime": "restricted", "structure": "diagonal", "lr": lr, "init_scale": init,
                             "alpha": alpha, "runs": [res]})
                hit = res["hits"][str(target)]
                cells.append(fmt([hit and hit[0]]).split(" (")[0] if hit else "– (missed)")
            print(f"| {lr} | {label} | " + " | ".join(cells) + " |", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=1000, help="minibatch steps per run")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.3, 0.1, 0.03, 0.01])
    parser.add_argument("--json", default=None, help="write every run's figures here")
    args = parser.parse_args()
    model = problem()
    t0 = time.perf_counter()
    rows = minibatch_table(model, args.seeds, args.budget, args.lrs)
    rows += full_batch_table(model, args.seeds, 600, [("delta", 1.0), ("delta", 0.2), ("stein", 0.2),
                                                      ("stein", 0.05)])
    rows += restricted_table(3000)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"batch": BATCH, "n_data": model.n_data, "dim": model.dim, "seeds": args.seeds,
                       "budget": args.budget, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
