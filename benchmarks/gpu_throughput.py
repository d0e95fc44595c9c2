"""Generations per second of NaturalES on a device, against the device's own roofline.

    python benchmarks/gpu_throughput.py                       # CUDA: d ∈ {1e3, 1e4, 3e4}, n ∈ {1e2, 1e3, 1e4}
    python benchmarks/gpu_throughput.py --device cpu --quick  # small sizes, known to work without a GPU
    python benchmarks/gpu_throughput.py --compile             # also time a torch.compile'd generation

One row per (structure, d, n, dtype): a generation is ``X = es.ask(); es.tell(X, sphere(X))`` on the
device with ``check_every`` larger than the run (no host round-trip: tests/es/test_torch_path.py),
timed over several generations between two device synchronisations.  Structures: dense (the Gram
retraction, ``expm`` for float32, truncated for bf16), low rank k = 16 and 64 (truncated), diagonal,
Kronecker (truncated, the most square d₁×d₂).  dtypes float32 and bfloat16 (factor and samples in
bf16, mean and σ in float32).

Roofline.  The same run measures the device's matmul rate (a large square GEMM per dtype) and its
copy bandwidth (``dst.copy_(src)``, bytes read + written).  Each row's flops and bytes are counted by
hand in ``flops_and_bytes`` (multiply-adds count 2; bytes are the passes over the big arrays at the
dtype's size, a lower bound), and the row's roofline time is max(flops / matmul rate,
bytes / bandwidth); "roofline" is that time over the measured one (1.0 = at the hardware's limit).

Sizes that would not fit (``--max-gib`` of device memory, default 80% of the GPU's, 4 GiB on the
CPU) or would take too long (``--max-seconds`` per generation by the roofline estimate) are skipped
with the reason printed, and so is every row once ``--deadline`` seconds of the run are spent (the
rows go by size, smallest first, so a deadline cuts the largest).  A row times at least
``--generations`` and otherwise about ``--row-seconds`` worth of generations.  The JSON is rewritten after
every row, so a run stopped from outside keeps what it measured.  ``--tf32`` adds float32 rows whose
matmuls use TF32 (``torch.backends.cuda.matmul.allow_tf32``), with the TF32 rate as their roofline.

``--cuda-graphs`` also times each row with ``natgrad_es.es.GraphedGeneration``: the generation
(draw aside) captured once as a CUDA graph and replayed, 10 generations a call (column "ms graph").

EvoTorch (``XNES`` / ``SNES`` / ``CMAES``, if ``import evotorch`` works) runs on the same sizes and
device; its rows give ms per generation and the ratio to ours (dense for XNES and CMAES, diagonal
for SNES).  See shared/design/benchmarks.md for carrying its wheels to the device machine.
Writes ``benchmarks/results/gpu_throughput.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_model  # noqa: E402

from natgrad_es.es import GraphedGeneration, NaturalES  # noqa: E402
from problems.functions import sphere  # noqa: E402

DIMS, POPS = (1_000, 10_000, 30_000), (100, 1_000, 10_000)
QUICK_DIMS, QUICK_POPS = (1_000, 10_000), (100, 1_000)
STRUCTURES = ("dense", "lowrank16", "lowrank64", "diagonal", "kronecker")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
STORAGE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "tf32": torch.float32}


# -- the device's limits ----------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, seconds: float | None = None) -> float:
    """Seconds per call: one warm-up call, then ``repeats`` calls between two synchronisations;
    with ``seconds``, as many calls as the warm-up's time says fit in it (``repeats`` at least)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    if seconds is not None:
        repeats = max(repeats, min(200, int(seconds / max(first, 1e-6))))
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


@contextlib.contextmanager
def tf32(enabled: bool):
    """float32 matmuls in TF32 inside the block (CUDA only; a no-op elsewhere)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int) -> float:
    """flop/s of a size³ GEMM (2 size³ flops)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    seconds = timed(lambda: a @ b, device, 3 if device.type == "cpu" else 20)
    return 2 * size ** 3 / seconds


def copy_bandwidth(device: torch.device, mib: int) -> float:
    """bytes/s of a device-to-device copy (read + written)."""
    src = torch.empty(mib * 2 ** 18, device=device)  # float32: 4 bytes each
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), device, 5 if device.type == "cpu" else 50)
    return 2 * src.numel() * 4 / seconds


# -- one row ----------------------------------------------------------------------------------------


def kronecker_shape(d: int) -> tuple[int, int]:
    """The most square d₁ × d₂ = d."""
    d1 = max(r for r in range(1, math.isqrt(d) + 1) if d % r == 0)
    return d1, d // d1


def options(structure: str, d: int) -> tuple[str, dict]:
    """(structure name, keywords) for NaturalES."""
    if structure == "dense":
        return "full", {}
    if structure.startswith("lowrank"):
        return "lowrank", {"rank": int(structure.removeprefix("lowrank")), "retraction": "truncated"}
    if structure == "kronecker":
        return "kronecker", {"shape": kronecker_shape(d), "retraction": "truncated"}
    return "diagonal", {}


def flops_and_bytes(structure: str, d: int, n: int, itemsize: int, bf16: bool) -> tuple[float, float]:
    """Hand count of one generation (path rule, default options; m = n + 1 rows in the shape update).

    dense:     sample Z Aᵀ 2nd²; mean A z̄ 2d²; Gram update (algorithms.md §2): K = V Rᵀ 2m²d,
               R Aᵀ 2md², Ψ V 2m²d, (RAᵀ)ᵀ(ΨV) 2md²; Ψ: float32 expm = φ(K) by 12 Horner steps and
               10 masked squarings (2 matmuls each, ``backend.phi``): 64 m³; bf16 truncated order
               2: one K² 2m³.  Bytes: A read 3× (sample, mean, R Aᵀ) and written once, Z, X, R
               passed ~6×: (4d² + 6nd)·itemsize.
    lowrank k: sample 2nk² + 2n(d−k)k + n(d−k); natural gradient 2nk² + 2n(d−k)k + 3n(d−k);
               truncated order 2 in the group: h₂(M) = I + M + M²/2 (one product, 2dk² + 2k³)
               and A·h₂ (2dk² + 2k³).  Bytes: Z, X passed ~6×, A₂₁ 4×: (6nd + 4dk)·itemsize.
    diagonal:  sample 2nd, natural gradient 3nd, objective 2nd: 7nd; memory-bound.  Bytes: randn
               writes Z, sample reads Z and writes AZ, the mean add reads and writes X, the
               objective reads X, the gradient reads Z twice, the weighted sum reads Z: ~9nd.
    kronecker: sample A₁ Zᵢ A₂ᵀ 2nd(d₁ + d₂); natural gradient S₁, S₂ 2nd(d₁ + d₂); truncated
               retraction 2·2(d₁³ + d₂³).  Bytes: ~8nd.
    dense with n + 1 ≥ d (no Gram form): sample 2nd², M = Zᵀ W Z 2md², A·E 2d³ (+ the truncated
               series' one d×d product in bf16); the float32 expm's own products are left out (its
               Padé degree and squarings are torch's choice), so that row's roofline is a lower
               bound.
    All: the objective (sphere, 2nd flops) and the weighted sums (4nd) are added.
    """
    m = n + 1
    common = 6 * n * d
    if structure == "dense" and m >= d:  # no Gram form: M = Zᵀ W Z, A·expm(M) or A·h_p(M), d×d
        series = 2 * d ** 3 if bf16 else 0  # expm's own flops (its degree is its choice): not counted
        flops = 2 * n * d * d + 2 * d * d + 2 * m * d * d + 2 * d ** 3 + series
        nbytes = (6 * d * d + 6 * n * d) * itemsize
    elif structure == "dense":
        psi = 2 * m ** 3 if bf16 else 64 * m ** 3
        flops = 2 * n * d * d + 2 * d * d + 4 * m * m * d + 4 * m * d * d + psi
        nbytes = (4 * d * d + 6 * n * d) * itemsize
    elif structure.startswith("lowrank"):
        k = int(structure.removeprefix("lowrank"))
        flops = 2 * (2 * n * k * k + 2 * n * (d - k) * k) + 4 * n * (d - k) + 4 * (2 * d * k * k + 2 * k ** 3)
        nbytes = (6 * n * d + 4 * d * k) * itemsize
    elif structure == "kronecker":
        d1, d2 = kronecker_shape(d)
        flops = 4 * n * d * (d1 + d2) + 4 * (d1 ** 3 + d2 ** 3)
        nbytes = 8 * n * d * itemsize
    else:
        flops, nbytes = 5 * n * d, 9 * n * d * itemsize
    return float(flops + common), float(nbytes)


def memory_bytes(structure: str, d: int, n: int, itemsize: int) -> float:
    """Peak device memory of a generation, roughly: the factor twice (old and new) plus ~8 n×d
    arrays (Z, X, the rows of the update and temporaries) plus the n×n matrices of the dense
    update, in the dtype (float32 for the mean-side arrays: counted at 4 bytes)."""
    if structure == "dense":
        factor = 3 * d * d * itemsize + 40 * (n + 1) ** 2
    elif structure.startswith("lowrank"):
        factor = 3 * d * int(structure.removeprefix("lowrank")) * itemsize
    elif structure == "kronecker":
        factor = 3 * sum(s * s for s in kronecker_shape(d)) * itemsize
    else:
        factor = 3 * d * itemsize
    return factor + 8 * n * d * 4


def generation_fn(es: NaturalES):
    def generation():
        X = es.ask()
        es.tell(X, sphere(X))
    return generation


def run_row(structure: str, d: int, n: int, dtype: str, device: torch.device, generations: int,
            compile_: bool = False, row_seconds: float | None = None,
            graphs: bool = False) -> dict:
    """Time one (structure, d, n, dtype); returns the row (without roofline fractions)."""
    name, kw = options(structure, d)
    if dtype == "bfloat16":
        kw.pop("retraction", None)  # the bf16 default: truncated

    def strategy():
        return NaturalES(torch.full((d,), 0.5, device=device), 0.5, name, popsize=n, seed=0,
                         dtype=STORAGE[dtype], check_every=10 ** 9, device=device, **kw)

    with tf32(dtype == "tf32"):
        es = strategy()
        seconds = timed(generation_fn(es), device, generations, row_seconds)
        row = {"structure": structure, "d": d, "n": n, "dtype": dtype, "ms": 1e3 * seconds,
               "gen_per_s": 1 / seconds, "retraction": es.options.retraction}
        if compile_:
            row["ms_compiled"] = compiled_ms(es, device, generations, row_seconds)
        del es
        if graphs:
            row["ms_graph"] = graph_ms(strategy, device, generations, row_seconds)
    return row


def graph_ms(strategy, device: torch.device, generations: int,
             row_seconds: float | None = None, per_call: int = 10) -> float | str:
    """ms per generation of ``GraphedGeneration`` (``per_call`` generations a call, after the
    eager generations and the capture), or why not."""
    try:
        step = GraphedGeneration(strategy(), sphere)
        step(5)
        calls = max(1, -(-generations // per_call))
        return 1e3 * timed(lambda: step(per_call), device, calls,
                           None if row_seconds is None else row_seconds) / per_call
    except Exception as err:  # noqa: BLE001 - report a capture failure and go on
        cause = err.__cause__ or err
        return f"failed: {type(cause).__name__}: {str(cause).splitlines()[0][:160]}"


def compiled_ms(es: NaturalES, device: torch.device, generations: int,
                row_seconds: float | None = None) -> float | str:
    """ms per generation of ``torch.compile(generation)`` (after two warm-up calls), or why not."""
    try:
        step = torch.compile(generation_fn(es))
        step()
        return 1e3 * timed(step, device, generations, row_seconds)
    except Exception as err:  # noqa: BLE001 - report any compiler failure and go on
        return f"failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}"


# -- EvoTorch ---------------------------------------------------------------------------------------


def evotorch_rows(sizes, device: torch.device, generations: int, ours: dict,
                  deadline: float = math.inf, row_seconds: float | None = None,
                  dense_max_d: int = 10_000) -> list[dict]:
    """EvoTorch's XNES / SNES / CMAES on the vectorized sphere, float32, same sizes and device.

    XNES and CMAES keep d×d state (XNES an n×d×d tensor as well); beyond ``dense_max_d`` they are
    not run (at d = 3e4 a CMAES eigendecomposition alone takes tens of seconds)."""
    try:
        import logging

        from evotorch import Problem
        from evotorch.algorithms import CMAES, SNES, XNES
        logging.getLogger("evotorch").setLevel(logging.WARNING)
    except ImportError as err:
        print(f"EvoTorch comparison skipped: {err}")
        return []
    anchors = {"XNES": (XNES, "dense"), "SNES": (SNES, "diagonal"), "CMAES": (CMAES, "dense")}
    rows = []
    for d, n in sizes:
        for label, (cls, mine) in anchors.items():
            if time.perf_counter() > deadline:
                print(f"EvoTorch {label} d={d} n={n}: skipped (out of time)")
                continue
            if mine == "dense" and d > dense_max_d:
                print(f"EvoTorch {label} d={d} n={n}: not run (d×d state beyond d = {dense_max_d})")
                continue
            try:
                problem = Problem("min", lambda X: (X * X).sum(-1), solution_length=d,
                                  initial_bounds=(0.5, 0.5), vectorized=True, device=device)
                kw = {"stdev_init": 0.5, "popsize": n}
                if cls is CMAES:
                    kw["center_init"] = torch.full((d,), 0.5)
                searcher = cls(problem, **kw)
                seconds = timed(searcher.step, device, generations, row_seconds)
                ref = ours.get((mine, d, n, "float32"))
                rows.append({"library": "evotorch", "algorithm": label, "d": d, "n": n,
                             "ms": 1e3 * seconds, "ours": mine,
                             "speedup": None if ref is None else 1e3 * seconds / ref})
            except Exception as err:  # noqa: BLE001 - out of memory or API drift: report and go on
                print(f"EvoTorch {label} d={d} n={n}: skipped ({type(err).__name__}: "
                      f"{str(err).splitlines()[0][:100]})")
            finally:
                searcher = problem = None  # noqa: F841 - drop the state before the next row
                release(device)
    return rows


def release(device: torch.device) -> None:
    """Give cached device memory back between rows, so one row's peak does not crowd the next."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- main -------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes, few generations")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(generation)")
    parser.add_argument("--compile-max-d", type=int, default=None,
                        help="compile only rows with d at most this (compiling takes seconds a row)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="also time each row as a replayed CUDA graph (GraphedGeneration)")
    parser.add_argument("--dims", type=int, nargs="+")
    parser.add_argument("--pops", type=int, nargs="+")
    parser.add_argument("--structures", nargs="+", default=list(STRUCTURES), choices=STRUCTURES)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--tf32", nargs="*", choices=STRUCTURES, default=None,
                        help="add TF32 rows for these structures (no names: dense)")
    parser.add_argument("--generations", type=int, help="generations timed a row, at least")
    parser.add_argument("--row-seconds", type=float, help="time a row for about this long")
    parser.add_argument("--deadline", type=float, default=math.inf,
                        help="seconds for our rows; later rows are skipped")
    parser.add_argument("--evotorch-seconds", type=float, default=math.inf,
                        help="seconds for EvoTorch's rows, after ours")
    parser.add_argument("--max-gib", type=float)
    parser.add_argument("--max-seconds", type=float, help="skip rows estimated slower per generation")
    parser.add_argument("--no-evotorch", action="store_true")
    parser.add_argument("--gemm-size", type=int, help="side of the GEMM that measures the matmul rate")
    parser.add_argument("--copy-mib", type=int, help="MiB copied to measure the bandwidth")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_throughput.json"))
    args = parser.parse_args(argv)
    start = time.perf_counter()

    device = torch.device(args.device)
    cpu = device.type == "cpu"
    dims = args.dims or (QUICK_DIMS if args.quick else DIMS)
    pops = args.pops or (QUICK_POPS if args.quick else POPS)
    generations = args.generations or (3 if args.quick or cpu else 5)
    row_seconds = args.row_seconds if args.row_seconds is not None else (None if cpu else 1.0)
    max_gib = args.max_gib or (4.0 if cpu else 0.8 * torch.cuda.get_device_properties(device)
                               .total_memory / 2 ** 30)
    max_seconds = args.max_seconds or (2.0 if args.quick else 30.0)
    dtypes = list(args.dtypes)
    tf32_structures = set() if args.tf32 is None else set(args.tf32 or ["dense"])
    if tf32_structures:
        dtypes.append("tf32")

    what = "GPU " + torch.cuda.get_device_name(device) if not cpu else f"CPU {cpu_model()}"
    size = args.gemm_size or (2048 if cpu else 8192)
    rates = {name: matmul_rate(device, DTYPES[name], size) for name in DTYPES}
    if tf32_structures:
        with tf32(True):
            rates["tf32"] = matmul_rate(device, torch.float32, size)
    bandwidth = copy_bandwidth(device, args.copy_mib or (256 if cpu else 2048))
    print(f"{what}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"matmul {size}³: " + ", ".join(f"{k} {v / 1e12:.3g} TFLOP/s" for k, v in rates.items())
          + f"; copy {bandwidth / 1e9:.3g} GB/s", flush=True)

    result = {"device": what, "torch": torch.__version__, "matmul_flops": rates,
              "copy_bytes_per_s": bandwidth, "rows": [], "evotorch": [], "skipped": [],
              "argv": sys.argv[1:] if argv is None else list(argv)}
    rows, ours, failed = result["rows"], {}, set()

    def save():
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1, default=str))

    def skip(label: str, why: str):
        if not why.startswith("out of time"):  # those are counted once, at the end
            print(f"skip {label}: {why}", flush=True)
        result["skipped"].append({"row": label, "why": why})

    for d in sorted(dims):
        for n in sorted(pops):
            for structure in args.structures:
                for dtype in dtypes:
                    if dtype == "tf32" and structure not in tf32_structures:
                        continue
                    itemsize = torch.empty((), dtype=STORAGE[dtype]).element_size()
                    flops, nbytes = flops_and_bytes(structure, d, n, itemsize, dtype == "bfloat16")
                    bound = max(flops / rates[dtype], nbytes / bandwidth)
                    label = f"{structure} d={d} n={n} {dtype}"
                    need = memory_bytes(structure, d, n, itemsize) / 2 ** 30
                    if structure.startswith("lowrank") and int(structure[7:]) >= d:
                        skip(label, "rank >= d")
                        continue
                    if need > max_gib:
                        skip(label, f"needs ~{need:.1f} GiB > {max_gib:.1f} GiB")
                        continue
                    if bound > max_seconds:
                        skip(label, f"~{bound:.1f} s per generation at the roofline > {max_seconds} s")
                        continue
                    if time.perf_counter() - start > args.deadline:
                        skip(label, f"out of time (--deadline {args.deadline:g} s)")
                        continue
                    compile_ = args.compile and (args.compile_max_d is None
                                                 or d <= args.compile_max_d)
                    try:
                        row = run_row(structure, d, n, dtype, device, generations, compile_,
                                      row_seconds, args.cuda_graphs)
                    except Exception as err:  # noqa: BLE001 - report (once in full) and go on
                        skip(label, f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
                        if (structure, dtype) not in failed:
                            traceback.print_exc(limit=-8)
                        failed.add((structure, dtype))
                        continue
                    finally:
                        release(device)
                    seconds = row["ms"] / 1e3
                    row.update(flops=flops, bytes=nbytes, tflops=flops / seconds / 1e12,
                               gbps=nbytes / seconds / 1e9,
                               bound="matmul" if flops / rates[dtype] >= nbytes / bandwidth
                               else "memory", roofline=bound / seconds)
                    rows.append(row)
                    ours[(structure, d, n, dtype)] = row["ms"]
                    extra = ""
                    for key, what in (("ms_compiled", "compiled"), ("ms_graph", "graph")):
                        if key in row:
                            c = row[key]
                            extra += f", {what} {c:.3g} ms" if isinstance(c, float) else f", {c}"
                    print(f"{label}: {row['ms']:.3g} ms, {row['tflops']:.3g} TFLOP/s, "
                          f"{row['roofline']:.0%} of the {row['bound']} roofline{extra}", flush=True)
                    save()

    late = sum(s["why"].startswith("out of time") for s in result["skipped"])
    if late:
        print(f"{late} rows skipped: out of time (--deadline {args.deadline:g} s)")
    if not args.no_evotorch:
        result["evotorch"] = evotorch_rows(
            [(d, n) for d in sorted(dims) for n in sorted(pops)], device, generations, ours,
            time.perf_counter() + args.evotorch_seconds, row_seconds)
        save()

    headers = ["structure", "d", "n", "dtype", "ms / gen", "gen/s", "TFLOP/s", "GB/s", "bound",
               "roofline"] + (["ms compiled"] if args.compile else []) + (
                   ["ms graph", "graph roofline"] if args.cuda_graphs else [])
    print("\n| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
    for r in rows:
        cells = [r["structure"], f"{r['d']:g}", f"{r['n']:g}", r["dtype"], f"{r['ms']:.3g}",
                 f"{r['gen_per_s']:.3g}", f"{r['tflops']:.3g}", f"{r['gbps']:.3g}", r["bound"],
                 f"{r['roofline']:.0%}"]
        if args.compile:
            c = r.get("ms_compiled", "–")
            cells.append(f"{c:.3g}" if isinstance(c, float) else c)
        if args.cuda_graphs:
            c = r.get("ms_graph", "–")
            cells += ([f"{c:.3g}", f"{r['roofline'] * r['ms'] / c:.0%}"] if isinstance(c, float)
                      else [c, "–"])
        print("| " + " | ".join(cells) + " |")
    if result["evotorch"]:
        print("\n| EvoTorch | d | n | ms / gen | ours | its ms / ours |\n|---|---|---|---|---|---|")
        for r in result["evotorch"]:
            ratio = "–" if r["speedup"] is None else f"{r['speedup']:.3g}"
            print(f"| {r['algorithm']} | {r['d']:g} | {r['n']:g} | {r['ms']:.3g} | {r['ours']} | "
                  f"{ratio} |")
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    return result


if __name__ == "__main__":
    main()
