"""The pairs route's fit schedule: this working tree against a git revision, run for run.

Past its gate (fits at 2·k·d, 4·k·d, … pairs up to the buffer's capacity) the route used to retry a
rejected fit every k·d pairs; it now doubles that spacing after each rejection, up to a quarter of
the capacity (``pairs._RETRY_LIMIT``; ``PairsRoute._maybe_fit``).  This script runs the same seeded
runs with the package of a git revision (imported as ``natgrad_es_base``, as ``generation_ab.py``
does) and with the working tree's, one after the other in one process, on three kinds of problem:

* ``goal``: the stiff subspace (``lowrank-precision``) and the valley (``lowrank-cov``) at d, where
  the first fit is accepted: the runs must be the same, evaluation for evaluation;
* ``unfit``: the separable ellipsoid and rosenbrock at d (``lowrank-precision``), where no model
  fits: the same f values (a rejected fit changes nothing but the fit's own random starts), fewer
  fits and less CPU;
* ``late``: g = f + f²/f(x₀) of the stiff subspace at ``--late-dim`` (r = 3, c = 1e3 and 1e4).
  Its Hessian (1 + 2f/f(x₀)) H + (2/f(x₀)) ∇f ∇fᵀ changes scale as f falls, so the pairs of a whole
  run do not fit one model, and a model is accepted only after the buffer has turned over.  There
  the back-off may delay the acceptance (by less than a quarter of the capacity in pairs); this measures
  by how much (evaluations to f − f* ≤ 1e-8).

CPU seconds are ``time.process_time`` of the whole run; one thread.

    python benchmarks/pairs_schedule.py --base HEAD~1 --dim 1000 --budget 300000 --seeds 1
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import generation_ab  # noqa: E402

import natgrad_es  # noqa: E402
from problems import functions  # noqa: E402

TARGET = 1e-8
LATE_CONDITIONS = (1e3, 1e4)


class SquaredPlus:
    """g(f(x)) = f + f²/F for a nonnegative f with f* = 0: the same minimiser, a Hessian
    (1 + 2f/F) H + (2/F) ∇f ∇fᵀ that is H only once f ≪ F."""

    def __init__(self, f, scale: float):
        self.f, self.scale = f, float(scale)

    def __call__(self, X):
        v = self.f(X)
        return v + v * v / self.scale


def cases(kind: str, dim: int, late_dim: int, seed: int):
    """The (label, structure, ``Problem``) triples of one kind of problem."""
    if kind == "goal":
        return [("stiff subspace", "lowrank-precision", functions.get("stiff_subspace", dim, seed=seed)),
                ("valley", "lowrank-cov", functions.get("valley", dim, seed=seed))]
    if kind == "unfit":
        return [("ellipsoid", "lowrank-precision", functions.get("ellipsoid", dim, seed=seed)),
                ("rosenbrock", "lowrank-precision", functions.get("rosenbrock", dim, seed=seed))]
    out = []
    for condition in LATE_CONDITIONS:
        stiff = functions.StiffSubspace(late_dim, rank=3, condition=condition, seed=seed)
        g = SquaredPlus(stiff, float(stiff(np.full(late_dim, 0.5))))
        out.append((f"f + f²/f(x0), stiff r = 3, c = {condition:g}, d = {late_dim}", "lowrank-precision",
                    functions.Problem("f+f2", late_dim, g, np.zeros(late_dim), 0.0)))
    return out


def run(package, structure: str, problem, seed: int, budget: int, rank: int) -> dict:
    """One run to f − f* ≤ 1e-8 or ``budget`` evaluations."""
    d = problem.dim
    es = package.NaturalES(np.full(d, 0.5), 0.5, structure, rank=min(rank, d - 1), seed=seed,
                           curvature="pairs")
    t0, hit, best = time.process_time(), None, math.inf
    while es.evaluations < budget:
        X = es.ask()
        f = problem.f(X)
        es.tell(X, f)
        best = min(best, float(np.min(f)) - problem.fopt)
        if best <= TARGET:
            hit = es.evaluations
            break
    fits = es.curvature_fits
    return {"evaluations_to_target": hit, "evaluations": es.evaluations, "f_reached": best,
            "cpu_seconds": time.process_time() - t0, "fits": len(fits),
            "fits_accepted": [int(r["pairs"]) for r in fits if r["accepted"]],
            "fit_seconds": float(sum(r["seconds"] for r in fits)),
            "fit_pairs": [int(r["pairs"]) for r in fits]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--kinds", nargs="+", default=["goal", "unfit", "late"],
                        choices=["goal", "unfit", "late"])
    parser.add_argument("--dim", type=int, default=1000)
    parser.add_argument("--late-dim", type=int, default=200)
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--budget", type=int, default=1_000_000, help="evaluations (goal, unfit)")
    parser.add_argument("--late-budget", type=int, default=400_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--retry-limit", type=float, default=None,
                        help="the working tree's pairs._RETRY_LIMIT (default: as it is)")
    parser.add_argument("--out", type=Path, default=None, help="JSON of every run")
    args = parser.parse_args(argv)

    if args.retry_limit is not None:
        from natgrad_es.es import pairs

        pairs._RETRY_LIMIT = args.retry_limit
    with tempfile.TemporaryDirectory() as tmp:
        base = generation_ab.import_revision(args.base, Path(tmp))
        runs = []
        for kind in args.kinds:
            for seed in args.seeds:
                for label, structure, problem in cases(kind, args.dim, args.late_dim, seed):
                    budget = args.late_budget if kind == "late" else args.budget
                    for name, package in ((args.base, base), ("working tree", natgrad_es)):
                        r = run(package, structure, problem, seed, budget, args.rank)
                        r.update(kind=kind, problem=label, structure=structure, seed=seed,
                                 version=name, budget=budget)
                        runs.append(r)
                        print(f"{kind:5s} {label[:44]:44s} seed {seed} {name:12s} "
                              f"to 1e-8: {r['evaluations_to_target']}  f {r['f_reached']:.3g}  "
                              f"CPU {r['cpu_seconds']:.1f} s  fits {r['fits']} "
                              f"({r['fit_seconds']:.1f} s, accepted at {r['fits_accepted']})",
                              flush=True)
                        if args.out:
                            args.out.write_text(json.dumps({"args": {**vars(args), "out": str(args.out)},
                                                            "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
