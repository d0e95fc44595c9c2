"""Parallel evaluation: ``minimize`` on a slow objective, serial vs a 4-worker Dask LocalCluster.

The objective sleeps 0.05 s and returns the sphere, so it parallelises even on a machine with
fewer cores than workers.  Both runs use the same seed and must give the same result (the values
come back in row order); the table gives the wall time and the speed-up.  A thread pool of the
same size is measured too (``--no-threads`` skips it).

    python benchmarks/parallel.py                      # d = 10, budget 300, 4 workers
    python benchmarks/parallel.py --popsize 16 --budget 480

The ideal speed-up is n / ⌈n / workers⌉ for a population n (all tasks of a generation take the
same time); the rest is scheduling overhead (Dask: a few ms per task).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from natgrad_es.es import minimize  # noqa: E402

DELAY = 0.05


def slow_sphere(x, delay: float = DELAY) -> float:
    """Σ xᵢ² after sleeping ``delay`` seconds (a stand-in for a simulation)."""
    time.sleep(delay)
    return float(np.sum(np.asarray(x) ** 2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--popsize", type=int, default=None)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-threads", action="store_true")
    args = parser.parse_args(argv)

    import dask
    import distributed

    x0 = np.full(args.dim, 0.5)
    kw = dict(seed=args.seed, budget=args.budget, popsize=args.popsize)
    kw = {k: v for k, v in kw.items() if v is not None}

    rows = []

    def timed(name, **extra):
        t = time.perf_counter()
        res = minimize(slow_sphere, x0, 0.5, **kw, **extra)
        rows.append((name, res, time.perf_counter() - t))
        print(f"# {name}: {rows[-1][2]:.1f} s, {res.nfev} evaluations, f = {res.fun:.3e}",
              file=sys.stderr, flush=True)
        return res

    serial = timed("serial")
    t = time.perf_counter()
    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        startup = time.perf_counter() - t
        timed(f"Dask LocalCluster, {args.workers} worker processes", executor=client)
    if not args.no_threads:
        with ThreadPoolExecutor(args.workers) as pool:
            timed(f"ThreadPoolExecutor({args.workers})", executor=pool)

    n = serial.runs[0]["popsize"]
    ideal = n / math.ceil(n / args.workers)
    print(f"\nminimize on a {DELAY} s objective (sphere, d = {args.dim}, popsize {n}, budget "
          f"{args.budget}, seed {args.seed}); ideal speed-up n/⌈n/{args.workers}⌉ = {ideal:.2f}. "
          f"Cluster start-up {startup:.1f} s (not counted).")
    print(f"numpy {np.__version__}, dask {dask.__version__}, distributed "
          f"{distributed.__version__}, python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print("| evaluation | evaluations | f best | same result as serial | wall time (s) | "
          "speed-up |")
    print("|---|---|---|---|---|---|")
    for name, res, secs in rows:
        same = (res.nfev == serial.nfev and res.fun == serial.fun
                and np.array_equal(res.x, serial.x))
        print(f"| {name} | {res.nfev} | {res.fun:.3e} | {'yes' if same else 'NO'} | {secs:.1f} | "
              f"**{rows[0][2] / secs:.2f}×** |")


if __name__ == "__main__":
    main()
