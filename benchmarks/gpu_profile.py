"""Where a generation's device time goes: the CUDA kernels of a few rows, by total time.

    python benchmarks/gpu_profile.py --out /tmp/profile.txt

Each row (structure, d, n, dtype as in ``gpu_throughput.py``) runs 3 eager generations, then 10
under ``torch.profiler``; the table lists the kernels by their summed device time, with counts, so
that a row far from its roofline shows which passes cost (``--graph`` profiles the replayed graph
of ``GraphedGeneration`` instead).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import DTYPES, options  # noqa: E402

from natgrad_es.es import GraphedGeneration, NaturalES  # noqa: E402
from problems.functions import sphere  # noqa: E402

ROWS = [("lowrank16", 30_000, 10_000, "float32"), ("diagonal", 30_000, 10_000, "float32"),
        ("lowrank16", 1_000, 100, "float32"), ("dense", 10_000, 1_000, "bfloat16")]


def profile_row(structure: str, d: int, n: int, dtype: str, device, graph: bool) -> str:
    name, kw = options(structure, d)
    if dtype == "bfloat16":
        kw.pop("retraction", None)
    es = NaturalES(torch.full((d,), 0.5, device=device), 0.5, name, popsize=n, seed=0,
                   dtype=DTYPES[dtype], check_every=10 ** 9, device=device, **kw)
    if graph:
        step = GraphedGeneration(es, sphere)
        step(5)
        run = lambda: step(10)  # noqa: E731
    else:
        def run():
            for _ in range(10):
                X = es.ask()
                es.tell(X, sphere(X))
        run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60)
    return f"== {structure} d={d} n={n} {dtype}{' graph' if graph else ''}\n{table}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", action="store_true")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    texts = []
    for row in ROWS:
        try:
            texts.append(profile_row(*row, device, args.graph))
        except Exception as err:  # noqa: BLE001 - report and go on
            texts.append(f"== {row}: failed: {type(err).__name__}: {err}")
        print(texts[-1].splitlines()[0], flush=True)
    if args.out:
        Path(args.out).write_text("\n\n".join(texts))


if __name__ == "__main__":
    main()
