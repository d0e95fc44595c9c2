"""The torch path's correctness checks, run on a real device (CUDA): what the CPU tests cannot see.

    python benchmarks/gpu_check.py                  # on the device machine, before gpu_throughput.py
    python benchmarks/gpu_check.py --device cpu     # the same checks on the CPU (as in CI's tests)

Three checks, each printed as a table row and written to ``--out`` (JSON):

1. **Same run.**  Every structure on the device in float32 follows the numpy float64 run for 40
   generations on rosenbrock d = 10 when both are fed the same normals (``Feed``): m, σ and A agree to
   2e-5 relative (``tests/es/test_torch_path.py`` holds the CPU version and the reasoning for the
   tolerance).  TF32 stays off, as it is by default.
2. **No host synchronisation.**  With ``check_every`` beyond the run, generations 2–7 run under
   ``torch.cuda.set_sync_debug_mode("error")``: any operation that waits for the device (``.item()``,
   a boolean mask, a host copy) raises.  The CPU test can only forbid the Python-level conversions;
   this catches the ones inside torch too.  (CUDA only.)
3. **bf16 converges** on the device: sphere d = 100 (dense, diagonal) and the ellipsoid d = 100
   (diagonal) to 1e-8·f(x0), as in the CPU test, within the same budgets.
4. **CUDA graphs** (``GraphedGeneration``; CUDA only): 30 generations replayed from one captured
   graph follow 30 ``ask``/``tell`` generations of the same seed to 1e-5 relative (the graph
   computes h_σ's correction in float64: the only difference in the operations); a graphed
   sphere d = 100 reaches 1e-8·f(x0) with ``ftarget`` firing at a check; an objective that
   syncs is refused with a clear error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import problems  # noqa: E402
from natgrad_es.es import GraphedGeneration, NaturalES  # noqa: E402

SAME_RUN = [  # (label, structure, keywords)
    ("dense-expm", "full", {}),
    ("dense-xnes", "full", {"method": "xnes"}),
    ("dense-truncated", "full", {"retraction": "truncated", "popsize": 6}),
    ("diagonal-tpa", "diagonal", {"step_size": "tpa"}),
    ("lowrank", "lowrank", {"rank": 3}),
    ("kronecker", "kronecker", {"shape": (2, 5)}),
    ("blockdiag", "blockdiag", {"blocks": [3, 7]}),
    ("spectral", "spectral", {}),
    ("lowrank-cov", "lowrank-cov", {"rank": 2, "curvature": "ranks"}),
    ("lowrank-precision", "lowrank-precision", {"rank": 2, "curvature": "ranks"}),
]

NO_SYNC = [  # (label, structure, keywords)
    ("dense-expm", "full", {}),
    ("dense-truncated", "full", {"retraction": "truncated"}),
    ("dense-bf16", "full", {"dtype": torch.bfloat16}),
    ("diagonal", "diagonal", {}),
    ("diagonal-tpa-mirrored", "diagonal", {"step_size": "tpa", "mirrored": True}),
    ("diagonal-bf16", "diagonal", {"dtype": torch.bfloat16}),
    ("lowrank-truncated", "lowrank", {"rank": 3, "retraction": "truncated"}),
    ("lowrank-bf16", "lowrank", {"rank": 3, "dtype": torch.bfloat16}),
    ("kronecker-truncated", "kronecker", {"shape": (4, 5), "retraction": "truncated"}),
    ("lowrank-cov", "lowrank-cov", {"rank": 2, "curvature": "ranks"}),
    ("spectral-momentum", "spectral", {"momentum": 0.5}),
]

BF16_RUNS = [  # (label, function, structure, target f/f(x0), budget, popsize)
    ("sphere-dense", "sphere", "full", 1e-8, 15_000, None),
    ("sphere-diagonal", "sphere", "diagonal", 1e-8, 15_000, None),
    ("ellipsoid-diagonal", "ellipsoid", "diagonal", 1e-8, 15_000, None),
]


GRAPHS = [  # (label, structure, keywords)
    ("dense-expm", "full", {}),
    ("dense-truncated-bf16", "full", {"dtype": torch.bfloat16}),
    ("diagonal", "diagonal", {}),
    ("diagonal-tpa-mirrored", "diagonal", {"step_size": "tpa", "mirrored": True}),
    ("lowrank-truncated", "lowrank", {"rank": 3, "retraction": "truncated"}),
    ("kronecker", "kronecker", {"shape": (4, 5)}),
    ("lowrank-cov", "lowrank-cov", {"rank": 2, "curvature": "ranks"}),
    ("dense-momentum", "full", {"momentum": 0.5}),
]


class Feed:
    """Stands in for a strategy's RandomStream: the same float64 numpy normals for every backend,
    converted to the asked torch dtype and device."""

    def __init__(self, seed: int, dtype=None, device=None):
        self.rng, self.dtype, self.device = np.random.default_rng(seed), dtype, device

    def normal(self, shape, dtype=None):
        z = self.rng.standard_normal(shape)
        return z if self.dtype is None else torch.as_tensor(z, dtype=self.dtype, device=self.device)


def _run(es: NaturalES, f, generations: int) -> None:
    for _ in range(generations):
        X = es.ask()
        es.tell(X, f(X))


def same_run(label: str, structure: str, kw: dict, device: torch.device) -> dict:
    f = problems.get("rosenbrock", 10)
    ref = NaturalES(np.full(10, 0.5), 0.3, structure, seed=0, **kw)
    ref._rng = Feed(5)
    es = NaturalES(torch.full((10,), 0.5, device=device), 0.3, structure, seed=0, **kw)
    es._rng = Feed(5, torch.float32, device)
    for _ in range(40):
        _run(ref, f, 1)
        _run(es, f, 1)

    def rel(a, b):
        return float(np.abs(a - b).max() / np.abs(b).max())

    errors = {"m": rel(es.mean.double().cpu().numpy(), ref.mean),
              "A": rel(es.factor.to_dense().double().cpu().numpy(), ref.factor.to_dense()),
              "sigma": abs(es.sigma - ref.sigma) / ref.sigma}
    worst = max(errors.values())
    return {"check": "same run", "case": label, "value": worst, "detail": errors,
            "passed": bool(worst <= 2e-5 and es.mean.device.type == device.type)}


def no_sync(label: str, structure: str, kw: dict, device: torch.device) -> dict:
    f = problems.get("rosenbrock", 20)
    es = NaturalES(torch.full((20,), 0.5, device=device), 0.5, structure, seed=3,
                   check_every=1000, **kw)
    _run(es, f, 1)  # first generation: lazy initialisation (handles, caches) may sync
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        _run(es, f, 6)
        torch.cuda.set_sync_debug_mode("default")
        finite = bool(torch.isfinite(es.mean).all())
        return {"check": "no host sync", "case": label, "value": 0.0, "passed": finite,
                "detail": "7 generations, generations 2-7 under sync_debug_mode('error')"}
    except RuntimeError as err:
        return {"check": "no host sync", "case": label, "value": 1.0, "passed": False,
                "detail": "".join(traceback.format_exception(err))[-1500:]}
    finally:
        torch.cuda.set_sync_debug_mode("default")


def graph_follows_eager(label: str, structure: str, kw: dict, device: torch.device) -> dict:
    f = problems.get("rosenbrock", 20)
    runs = [NaturalES(torch.full((20,), 0.5, device=device), 0.5, structure, seed=3,
                      check_every=7, **kw) for _ in range(2)]
    eager, graphed = runs
    step = GraphedGeneration(graphed, f)
    _run(eager, f, 30)
    step(30)

    def rel(a, b):
        return float((a.double() - b.double()).abs().max() / b.double().abs().max())

    errors = {"m": rel(graphed.mean, eager.mean),
              "A": rel(graphed.factor.to_dense(), eager.factor.to_dense()),
              "sigma": abs(graphed.sigma - eager.sigma) / eager.sigma,
              "fbest": abs(graphed.result.fbest - eager.result.fbest) / abs(eager.result.fbest)}
    worst = max(errors.values())
    captured = step._graph is not None
    return {"check": "graph follows eager", "case": label, "value": worst,
            "detail": {**errors, "captured": captured,
                       "iterations": (graphed.iterations, eager.iterations)},
            "passed": bool(worst <= 1e-5 and captured
                           and graphed.iterations == eager.iterations == 30)}


def graph_converges(label: str, structure: str, device: torch.device) -> dict:
    f = problems.get("sphere", 100)
    es = NaturalES(torch.ones(100, device=device), 0.5, structure, seed=1, check_every=10,
                   ftarget=1e-8 * 100)
    step = GraphedGeneration(es, f)
    while not es.stop():
        step(10)
    return {"check": "graph converges", "case": label, "value": es.result.evaluations,
            "detail": {"stop": str(es.stop()), "fbest": es.result.fbest},
            "passed": es.stop() == {"ftarget": 1e-8 * 100} and es.result.fbest <= 1e-6}


def graph_refuses_a_syncing_f(label: str, device: torch.device) -> dict:
    es = NaturalES(torch.ones(10, device=device), 0.5, "diagonal", seed=1)

    def syncing(X):
        return (X * X).sum(-1) + 0 * float(X.sum())

    try:
        GraphedGeneration(es, syncing)(4)
    except RuntimeError as err:
        clear = "host synchronisation" in str(err)
        return {"check": "graph refuses a syncing f", "case": label, "value": float(not clear),
                "detail": str(err)[:200], "passed": clear}
    return {"check": "graph refuses a syncing f", "case": label, "value": 1.0,
            "detail": "no error", "passed": False}


def bf16_converges(label, name, structure, target, budget, popsize, device) -> dict:
    f = problems.get(name, 100)
    x0 = torch.ones(100, device=device)
    f0 = float(f(x0[None])[0])
    es = NaturalES(x0, 0.5, structure, dtype=torch.bfloat16, seed=1, popsize=popsize,
                   check_every=10, ftarget=target * f0, maxfevals=budget)
    while not es.stop():
        _run(es, f, 1)
    reached = es.stop() == {"ftarget": target * f0}
    return {"check": "bf16 converges", "case": label, "value": es.result.evaluations,
            "detail": {"f/f0": es.result.fbest / f0, "stop": str(es.stop())}, "passed": reached}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    checks = [(same_run, case) for case in SAME_RUN]
    if device.type == "cuda":
        checks += [(no_sync, case) for case in NO_SYNC]
        checks += [(graph_follows_eager, case) for case in GRAPHS]
        checks += [(graph_converges, ("sphere-diagonal", "diagonal")),
                   (graph_converges, ("sphere-dense", "full"))]
    checks += [(bf16_converges, case) for case in BF16_RUNS]
    if device.type == "cuda":  # last: a failed capture may leave the device unusable
        checks += [(graph_refuses_a_syncing_f, ("float(X.sum())",))]
    rows = []
    for check, case in checks:
        t0 = time.perf_counter()
        try:
            row = check(*case, device)
        except Exception as err:  # noqa: BLE001 - a failing case is a result: report, go on
            row = {"check": check.__name__, "case": case[0], "value": float("nan"), "passed": False,
                   "detail": "".join(traceback.format_exception(err))[-1500:]}
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{'PASS' if row['passed'] else 'FAIL'} {row['check']} {row['case']}: "
              f"{row['value']:.3g} ({row['seconds']:.1f} s)", flush=True)
        if not row["passed"]:
            print(row["detail"], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": str(device), "torch": torch.__version__,
                                              "rows": rows}, indent=1, default=str))
    failed = sum(not r["passed"] for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} checks passed on {device}")
    return rows


if __name__ == "__main__":
    main()
