"""A/B of one ES generation's cost: this working tree against a git revision, in one process.

This 2-core VM's timings drift by 10–50% from minute to minute, more than most single changes
gain, so two separate runs cannot tell a 10% change from the drift.  This script imports the
revision's package under another name (``git archive`` into a temporary directory, as
``natgrad_es_base``) beside the working tree's, and times both in alternating blocks on the same
problem: the drift hits both alike and the ratio holds.

Each block runs ``--generations`` generations of ``NaturalES(0.5·1, 0.5, structure, seed=1)`` on
the sphere with the (n, d) batch objective; the time is CPU time without f's, as
``lowrank_floor.py`` and ``highdim.py --throughput`` measure ours.  The first block of each is a
warm-up and is dropped.  Low-rank structures use the rank route (``curvature="ranks"``) and k = 10.
``--backend torch`` runs the torch path instead (CPU tensors, float32, one thread, the host
checks every 10⁹ generations as on a device): the count and size of its operations, which is what
a change to the device path changes.

    python benchmarks/generation_ab.py --base HEAD~1 --structures lowrank-precision lowrank diagonal
    python benchmarks/generation_ab.py --base HEAD~1 --backend torch --dim 3000 --popsize 1000 \
        --structures lowrank diagonal --blocks 6 --generations 10
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE_NAME = "natgrad_es_base"


def import_revision(rev: str, into: Path):
    """The package ``natgrad_es`` of git revision ``rev``, imported as ``natgrad_es_base``.

    Only the modules ``NaturalES`` needs are imported, and they import each other relatively, so
    the renamed copy does not touch the working tree's package."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "natgrad_es"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "natgrad_es").rename(into / BASE_NAME)
    sys.path.insert(0, str(into))
    return importlib.import_module(BASE_NAME)


def make(package, structure: str, dim: int, popsize: int, rank: int, backend: str = "numpy"):
    options = {} if structure == "diagonal" else {"rank": rank}
    if structure.startswith("lowrank-"):
        options["curvature"] = "ranks"
    x0 = np.full(dim, 0.5)
    if backend == "torch":
        import torch

        torch.set_num_threads(1)
        x0, options["check_every"] = torch.full((dim,), 0.5), 10 ** 9
    return package.NaturalES(x0, 0.5, structure, seed=1, popsize=popsize, **options)


def block_ms(es, generations: int) -> float:
    """CPU ms a generation without f over ``generations`` generations."""
    spent_f = 0.0
    t0 = time.process_time()
    for _ in range(generations):
        es.stop()
        X = es.ask()
        t = time.process_time()
        y = (X * X).sum(-1)
        spent_f += time.process_time() - t
        es.tell(X, y)
    return 1e3 * (time.process_time() - t0 - spent_f) / generations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare against")
    parser.add_argument("--structures", nargs="+", default=["lowrank-precision", "lowrank", "diagonal"])
    parser.add_argument("--dim", type=int, default=1000)
    parser.add_argument("--popsize", type=int, default=24)
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--generations", type=int, default=250, help="generations a block")
    parser.add_argument("--backend", choices=["numpy", "torch"], default="numpy")
    args = parser.parse_args()
    if args.blocks < 2 or args.generations < 1:
        parser.error("--blocks must be >= 2 (the first is a warm-up) and --generations >= 1")

    sys.path.insert(0, str(ROOT))
    import natgrad_es

    with tempfile.TemporaryDirectory() as tmp:
        base = import_revision(args.base, Path(tmp))
        print(f"{args.backend}, d = {args.dim}, n = {args.popsize}; CPU ms a generation without f, "
              f"min (median) of "
              f"{args.blocks - 1} alternating blocks of {args.generations} generations")
        print(f"| structure | {args.base} | working tree | ratio min (median) |")
        print("|---|---|---|---|")
        for structure in args.structures:
            runs = {name: make(package, structure, args.dim, args.popsize, args.rank, args.backend)
                    for name, package in (("base", base), ("tree", natgrad_es))}
            times: dict[str, list[float]] = {"base": [], "tree": []}
            for b in range(args.blocks):
                for name, es in runs.items():
                    ms = block_ms(es, args.generations)
                    if b:
                        times[name].append(ms)
            lo = {k: min(v) for k, v in times.items()}
            med = {k: float(np.median(v)) for k, v in times.items()}
            print(f"| {structure} | {lo['base']:.3f} ({med['base']:.3f}) | {lo['tree']:.3f} "
                  f"({med['tree']:.3f}) | {lo['tree'] / lo['base']:.2f} "
                  f"({med['tree'] / med['base']:.2f}) |")


if __name__ == "__main__":
    main()
