"""NaturalES with momentum in local coordinates (seed 000): where it helps and where it does not.

``NaturalES(..., momentum=α)`` steps the shape along V_t = α T(V_{t−1}) + (1 − α) M_t (``es.rules``).
Full factor, x0 = 0.5·1, σ0 = 0.5, default population; α ∈ {0, 0.5, 0.9}; every α sees the same seeds.

* noiseless (``sphere``, ``ellipsoid`` and ``rotated_ellipsoid``, condition 1e6, d ∈ {10, 20}):
  evaluations to f < 1e-8 (budget ``--budget``), both rules (``path``, the default, and ``xnes``).
* noisy (the ``noisy_`` variants: f + noise·ε, ε ~ N(0, 1), noise ``--noise`` = 1e-2 as in
  ``problems``): a fixed budget of ``--noisy-budget``·d evaluations with every stopping criterion but
  the budget off; reported: the noiseless f of the final mean (the noisy best-so-far is biased low
  by the noise), median (min–max) over seeds.
* ``--mean``: the decision whether the mean gets momentum too.  A variant, not in the library, adds a
  heavy-ball mean in its own local coordinates (as ``GaussianVI(momentum=α)`` does):
  w_t = α w_{t−1} + (1 − α) g_t, m ← m + c σ A w_t, with g_t the rule's mean gradient (z̄ for the
  path rule, Σ uᵢ zᵢ for xNES) and c its rate (c_m, η_m); shape momentum α as well.  σ gets none in
  either case: the path rule's CSA already averages z̄ (p_σ is an evolution path).

Each cell: median (min–max) over seeds; "inf" marks runs that missed the target within the budget.

Run:  python benchmarks/es_momentum.py [--seeds 5] [--mean] [--quick]
          [--json benchmarks/results/es_momentum.json]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import harness  # noqa: E402

import problems  # noqa: E402
from natgrad_es.es import NaturalES, rules  # noqa: E402
from natgrad_es.es.shaping import assign  # noqa: E402

ALPHAS = (0.0, 0.5, 0.9)
PROBLEMS = ("sphere", "ellipsoid", "rotated_ellipsoid")
TARGET = 1e-8
X0, SIGMA0 = 0.5, 0.5


class MeanMomentum:
    """The ``--mean`` variant: wraps ``rules.update`` so that the mean moves by a heavy-ball average
    w_t = α w_{t−1} + (1 − α) g_t of the rule's mean gradient (module docstring).  One per run."""

    def __init__(self, alpha: float):
        self.alpha, self.w = alpha, None
        self._update = rules.update

    def __call__(self, state, Z, f, params, tpa_pair=False):
        new = self._update(state, Z, f, params, tpa_pair)
        if isinstance(params, rules.XNESParameters):
            g, rate = assign(f, params.utilities) @ Z, params.eta_m
        else:
            g, rate = new.zbar, params.c_m
        self.w = g if self.w is None else self.alpha * self.w + (1 - self.alpha) * g
        return dataclasses.replace(new, mean=state.mean + rate * state.sigma * state.factor.apply(self.w))

    @contextmanager
    def installed(self):
        rules.update = self
        try:
            yield
        finally:
            rules.update = self._update


def run(name: str, d: int, seed: int, alpha: float, method: str, budget: int, noisy: bool,
        noise: float, mean_momentum: bool) -> dict:
    """One run; ``noisy``: a fixed budget, reporting the noiseless f of the final mean."""
    prob = problems.get(name, d, seed=seed, noise=noise if noisy else None)
    options = dict(method=method, momentum=alpha, maxfevals=budget)
    if noisy:
        options.update(tolfun=0, tolx=0, tolstagnation=0, tolcondition=0, maxiter=math.inf)
    else:
        options.update(ftarget=TARGET)
    es = NaturalES(np.full(d, X0), SIGMA0, "full", seed=seed, **options)
    variant = MeanMomentum(alpha) if mean_momentum and alpha else None
    t0 = time.perf_counter()
    with variant.installed() if variant else _nothing():
        while not es.stop():
            X = es.ask()
            es.tell(X, prob(X))
    clean = prob.f.clean if noisy else prob.f
    out = {"problem": ("noisy_" if noisy else "") + name, "d": d, "seed": seed, "alpha": alpha,
           "method": method, "mean_momentum": mean_momentum, "evaluations": es.evaluations,
           "fbest": es.result.fbest, "f_mean": float(clean(es.mean)), "stop": sorted(es.stop()),
           "seconds": time.perf_counter() - t0}
    out["hit"] = (not noisy) and es.result.fbest < TARGET
    return out


@contextmanager
def _nothing():
    yield


def cell(values, fmt: str) -> str:
    return harness.summary(values).format(fmt)


def tables(rows: list[dict], alphas, methods, dims, mean_momentum: bool) -> str:
    out = []
    variants = (False, True) if mean_momentum else (False,)
    head = ["problem", "d", "rule", "mean momentum"] if mean_momentum else ["problem", "d", "rule"]

    def pick(problem, d, method, mm, a):
        return [r for r in rows if r["problem"] == problem and r["d"] == d and r["method"] == method
                and r["mean_momentum"] == mm and r["alpha"] == a]

    for noisy in (False, True):
        lines = []
        for name in PROBLEMS:
            problem = ("noisy_" if noisy else "") + name
            for d in dims:
                for method in methods:
                    for mm in variants:
                        cells = []
                        for a in alphas:
                            sel = pick(problem, d, method, mm and a > 0, a)
                            if not sel:
                                cells.append("–")
                            elif noisy:
                                cells.append(cell([r["f_mean"] for r in sel], ".2g"))
                            else:
                                cells.append(cell([r["evaluations"] if r["hit"] else math.inf for r in sel],
                                                  ".0f"))
                        lines.append([name, d, method, "yes" if mm else "no"][:len(head)] + cells)
        what = ("noiseless f(mean) after the budget (noisy f)" if noisy
                else f"evaluations to f < {TARGET:g}")
        out.append(f"**{what}**\n\n" + harness.markdown_table(head + [f"α = {a:g}" for a in alphas], lines))
    return "\n\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=200_000, help="noiseless: evaluations at most")
    parser.add_argument("--noisy-budget", type=int, default=1000, help="noisy: evaluations per dimension")
    parser.add_argument("--noise", type=float, default=1e-2)
    parser.add_argument("--mean", action="store_true", help="also the heavy-ball mean variant")
    parser.add_argument("--methods", default="path,xnes")
    parser.add_argument("--quick", action="store_true", help="d = 10, 2 seeds")
    parser.add_argument("--json", default=None, help="write every run here")
    args = parser.parse_args()
    dims = (10,) if args.quick else (10, 20)
    seeds = harness.seeds(2 if args.quick else args.seeds)
    methods = tuple(args.methods.split(","))
    rows = []
    t0 = time.perf_counter()
    for noisy in (False, True):
        for name in PROBLEMS:
            for d in dims:
                for method in methods:
                    for mm in ((False, True) if args.mean else (False,)):
                        for a in ALPHAS:
                            if mm and not a:
                                continue
                            for s in seeds:
                                budget = args.noisy_budget * d if noisy else args.budget
                                rows.append(run(name, d, s, a, method, budget, noisy, args.noise, mm))
                print(f"{'noisy_' * noisy}{name} d={d} done ({time.perf_counter() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
    text = tables(rows, ALPHAS, methods, dims, args.mean)
    print(text)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"args": vars(args), "environment": harness.environment(),
                                    "rows": rows, "tables": text}, indent=1))


if __name__ == "__main__":
    main()
