"""COCO bbob: natgrad-es (default rule, IPOP) against pycma (IPOP), runtime ECDFs in one run.

Protocol (shared/design/benchmarks.md): the 24 bbob functions, instances 1–5, d ∈ {2, 5, 10, 20},
budget 1e4·d evaluations per (function, d, instance); both methods start every run from the same
seeded x0 ~ U[−4, 4]^d with σ0 = 2 and restart IPOP-style (twice the population, a new x0) when
they stop before the budget and the final target.  Each run records when f − f* first fell below
each of the 51 targets 10^{2..−8} (``problems.bbob``, no COCO observer).  Printed: the fraction of
(function, instance, target) triples reached within 1e2·d, 1e3·d, 1e4·d evaluations and the area
under each runtime ECDF (over log₁₀(evaluations/d) ∈ [0, log₁₀ budget], normalised to [0, 1]),
with the ratio natgrad-es / pycma per dimension, and the functions that make up any gap.

    python benchmarks/bbob.py --quick                  # d = 2, 5, 10; instances 1-3; < 10 min, 2 cores
    python benchmarks/bbob.py                          # the full protocol (hours on 2 cores)
    python benchmarks/bbob.py --dims 2 5 10 --resume   # continue an interrupted run

Writes (prefix ``bbob`` or ``bbob_quick``) under benchmarks/results/: ``<prefix>_runs.jsonl`` (one
line per run, appended as runs finish; ``--resume`` reuses it), ``<prefix>.json`` and
``<prefix>_summary.csv`` (the tables), ``<prefix>.md`` (the markdown printed last),
``<prefix>_ecdf.png`` (one ECDF panel per dimension and all together) and
``<prefix>_convergence_d<d>.png`` (f − f* against evaluations per function at the largest d) and
``<prefix>_invocations.json`` (the wall time of each invocation that added runs).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # harness
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # problems

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import harness  # noqa: E402  (sets the BLAS thread variables before numpy is imported)
import numpy as np  # noqa: E402

from problems import bbob  # noqa: E402

METHODS = {
    "natgrad-es": bbob.NaturalESFactory(),
    "pycma": bbob.PycmaFactory(),
}
ANCHOR = "pycma"
REPORT_BUDGETS = (1e2, 1e3, 1e4)
QUICK = {"dims": [2, 5, 10], "instances": [1, 2, 3], "budget": 1e4}


def _job(job: tuple) -> dict:
    method, function, d, instance, budget, seed = job
    (r,) = bbob.run(METHODS[method], [function], [d], [instance], budget, seed=seed, method=method)
    return r.to_dict()


def _key(method, function, d, instance, budget, seed) -> tuple:
    return (method, int(function), int(d), int(instance), float(budget), int(seed))


def _curves_from_hits(runs: list[bbob.BbobRun]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(evaluations, f − f*) step points of each run: Δf ≤ TARGETS[k] from evaluation hits[k] on."""
    out = []
    for r in runs:
        ok = np.isfinite(r.hits)
        e, v = r.hits[ok], bbob.TARGETS[ok]
        # a run that reached no target still has a best Δf at its last evaluation
        if not ok.any():
            e, v = np.array([r.evaluations], float), np.array([max(r.best_delta, 1e-300)])
        elif not ok.all():
            e, v = np.append(e, r.evaluations), np.append(v, max(r.best_delta, 1e-300))
        out.append((e, v))
    return out


def _bootstrap_ratio(runs: list[bbob.BbobRun], anchor: list[bbob.BbobRun], budget: float,
                     n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """5% and 95% quantiles of the ECDF-area ratio when the (function, d, instance) problems are
    resampled with replacement, each problem keeping both methods' runs (a paired bootstrap)."""
    mine = {(r.function, r.dimension, r.instance): bbob.ecdf_area([r], budget) for r in runs}
    ref = {(r.function, r.dimension, r.instance): bbob.ecdf_area([r], budget) for r in anchor}
    keys = sorted(set(mine) & set(ref))
    if not keys:
        return math.nan, math.nan
    a, b = np.array([mine[k] for k in keys]), np.array([ref[k] for k in keys])
    idx = np.random.default_rng(seed).integers(0, len(keys), (n, len(keys)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = a[idx].mean(1) / b[idx].mean(1)
    return float(np.quantile(ratios, 0.05)), float(np.quantile(ratios, 0.95))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"d = {QUICK['dims']}, instances {QUICK['instances']}, budget "
                             f"{QUICK['budget']:g}·d: under ten minutes on 2 cores")
    parser.add_argument("--dims", type=int, nargs="+", default=None, help="default 2 5 10 20")
    parser.add_argument("--functions", type=int, nargs="+", default=list(range(1, 25)))
    parser.add_argument("--instances", type=int, nargs="+", default=None, help="default 1..5")
    parser.add_argument("--budget", type=float, default=None, help="budget multiplier (·d), default 1e4")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--prefix", default=None, help="result file prefix (default bbob / bbob_quick)")
    parser.add_argument("--resume", action="store_true", help="reuse runs already in <prefix>_runs.jsonl")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    dims = args.dims or (QUICK["dims"] if args.quick else [2, 5, 10, 20])
    instances = args.instances or (QUICK["instances"] if args.quick else [1, 2, 3, 4, 5])
    budget = args.budget or (QUICK["budget"] if args.quick else 1e4)
    prefix = args.prefix or ("bbob_quick" if args.quick else "bbob")
    runs_file = f"{prefix}_runs.jsonl"
    bbob.require_cocoex()

    wanted = [_key(m, f, d, i, budget, args.seed) for d in sorted(dims)
              for f in args.functions for i in instances for m in args.methods]
    done: dict[tuple, dict] = {}
    if args.resume:
        for rec in harness.read_jsonl(runs_file):
            k = _key(rec["method"], rec["function"], rec["dimension"], rec["instance"],
                     rec.get("budget_multiplier", rec["budget"] / rec["dimension"]),
                     rec.get("seed", args.seed))
            done[k] = rec
    else:
        harness._path(runs_file).unlink(missing_ok=True)
    jobs = [k for k in wanted if k not in done]
    print(f"# bbob: {len(wanted)} runs ({len(wanted) - len(jobs)} reused), d = {dims}, "
          f"{len(args.functions)} functions, instances {instances}, budget {budget:g}·d, "
          f"{args.jobs} worker(s)", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    for job, rec in harness.run_parallel(_job, jobs, args.jobs, desc="bbob",
                                         disable_progress=args.no_progress or None):
        rec["budget_multiplier"], rec["seed"] = job[-2], job[-1]
        harness.append_jsonl(runs_file, rec)
        done[job] = rec
    wall = time.perf_counter() - t0
    # wall time of every invocation that added runs (a resumed run reports their sum)
    log = f"{prefix}_invocations.json"
    invocations = [] if not args.resume or not harness._path(log).exists() else \
        json.loads(harness._path(log).read_text())
    if jobs or not invocations:
        invocations.append({"command": " ".join(sys.argv[1:]) if argv is None else " ".join(argv),
                            "runs": len(jobs), "wall_seconds": wall, "jobs": args.jobs})
        harness.write_json(log, invocations)
    wall = sum(inv["wall_seconds"] for inv in invocations)

    runs: dict[tuple[str, int], list[bbob.BbobRun]] = defaultdict(list)
    for k in wanted:
        rec = {kk: v for kk, v in done[k].items() if kk not in ("seed", "budget_multiplier")}
        r = bbob.BbobRun.from_dict(rec)
        runs[r.method, r.dimension].append(r)
    report(runs, args.methods, sorted(dims), args.functions, instances, budget, prefix, wall,
           " ".join(sys.argv[1:]) if argv is None else " ".join(argv))
    return 0


def report(runs, methods, dims, functions, instances, budget, prefix, wall, command) -> None:
    env = harness.environment()
    cpu_seconds = sum(r.seconds for rs in runs.values() for r in rs)
    budgets = [b for b in REPORT_BUDGETS if b <= budget * (1 + 1e-12)]
    others = [m for m in methods if m != ANCHOR]
    have_anchor = ANCHOR in methods
    groups = [(str(d), [d]) for d in dims] + ([("all", dims)] if len(dims) > 1 else [])

    def pooled(m, ds):
        return [r for d in ds for r in runs[m, d]]

    # -- per function: ECDF area per (function, d), and each function's share of the gap ---------
    per_function = []
    lines = []
    for d in dims:
        for fn in functions:
            row = {"d": d, "function": fn, "name": bbob.FUNCTION_NAMES[fn]}
            for m in methods:
                rs = [r for r in runs[m, d] if r.function == fn]
                row[f"area {m}"] = bbob.ecdf_area(rs, budget)
                row[f"solved {m}"] = sum(bool(np.isfinite(r.hits[-1])) for r in rs)
            per_function.append(row)
    if have_anchor and others:
        m = others[0]
        lines.append(f"\nECDF area per function (budget {budget:g}·d), {m} − {ANCHOR}; the "
                     f"function's share of the gap of the pooled area = difference / "
                     f"{len(functions)}; instances reaching 1e-8 in brackets.\n")
        head = ["f", "name"] + [f"d={d}" for d in dims]
        rows = []
        for fn in functions:
            cells = [str(fn), bbob.FUNCTION_NAMES[fn]]
            for d in dims:
                row = next(r for r in per_function if r["d"] == d and r["function"] == fn)
                diff = row[f"area {m}"] - row[f"area {ANCHOR}"]
                mark = "**" if abs(diff) >= 0.05 else ""
                cells.append(f"{mark}{diff:+.2f}{mark} ({row[f'solved {m}']}/{row[f'solved {ANCHOR}']})")
            rows.append(cells)
        lines.append(harness.markdown_table(head, rows))
        for d in dims:
            diffs = sorted(((r[f"area {m}"] - r[f"area {ANCHOR}"]) / len(functions), r["function"])
                           for r in per_function if r["d"] == d)
            worst = [f"f{fn} {bbob.FUNCTION_NAMES[fn]} ({s:+.3f})" for s, fn in diffs[:4] if s < -0.002]
            best = [f"f{fn} {bbob.FUNCTION_NAMES[fn]} ({s:+.3f})" for s, fn in diffs[::-1][:4]
                    if s > 0.002]
            lines.append(f"\nd={d}: behind on {', '.join(worst) or 'none'}; ahead on "
                         f"{', '.join(best) or 'none'}")
    print("\n".join(lines))

    # -- the main table ------------------------------------------------------------------------------
    summary_rows = []
    table = []
    for label, ds in groups:
        areas = {m: bbob.ecdf_area(pooled(m, ds), budget) for m in methods}
        for m in methods:
            rs = pooled(m, ds)
            fr = {b: bbob.fraction_reached(rs, b) for b in budgets}
            ratio = areas[m] / areas[ANCHOR] if have_anchor and areas[ANCHOR] > 0 else math.nan
            lo, hi = (_bootstrap_ratio(rs, pooled(ANCHOR, ds), budget) if have_anchor and m != ANCHOR
                      else (math.nan, math.nan))
            summary_rows.append({"d": label, "method": m, "runs": len(rs),
                                 **{f"reached@{b:g}d": fr[b] for b in budgets},
                                 "ecdf_area": areas[m], "area_ratio_to_pycma": ratio,
                                 "ratio_bootstrap_5%": lo, "ratio_bootstrap_95%": hi,
                                 "solved_1e-8": sum(bool(np.isfinite(r.hits[-1])) for r in rs)})
            table.append([label, m, len(rs), *[f"{fr[b]:.3f}" for b in budgets], f"{areas[m]:.3f}",
                          "—" if m == ANCHOR else f"**{ratio:.3f}** ({lo:.3f}–{hi:.3f})",
                          sum(bool(np.isfinite(r.hits[-1])) for r in rs)])

    harness.write_csv(f"{prefix}_summary.csv", summary_rows)
    harness.write_json(f"{prefix}.json", {
        "command": f"python benchmarks/bbob.py {command}".strip(), "environment": env,
        "dims": dims, "functions": functions, "instances": instances, "budget_multiplier": budget,
        "targets": bbob.TARGETS, "wall_seconds": wall, "cpu_seconds_in_runs": cpu_seconds,
        "summary": summary_rows,
        "per_function": per_function})

    # -- plots ---------------------------------------------------------------------------------------
    x = np.geomspace(0.5, budget, 400)
    panels = {}
    for label, ds in groups:
        panels[f"d = {label}" if label != "all" else f"all d ({', '.join(map(str, dims))})"] = {
            m: (x, bbob.ecdf(pooled(m, ds), x)) for m in methods}
    harness.plot_ecdf(panels, f"{prefix}_ecdf.png", budget=budget,
                      suptitle=f"bbob f{min(functions)}–f{max(functions)}, instances "
                               f"{','.join(map(str, instances))}, 51 targets 1e2..1e-8, "
                               f"budget {budget:g}·d")
    dmax = max(dims)
    plt = harness._pyplot()
    cols = 6
    rows_n = math.ceil(len(functions) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.0 * cols, 2.4 * rows_n), squeeze=False)
    for ax, fn in zip(axes.flat, functions):
        curves = {m: _curves_from_hits([r for r in runs[m, dmax] if r.function == fn]) for m in methods}
        harness.plot_convergence(curves, None, ax=ax, title=f"f{fn} {bbob.FUNCTION_NAMES[fn]}",
                                 ylabel="", xlim=(1, budget * dmax))
    for ax in list(axes.flat)[len(functions):]:
        ax.set_visible(False)
    handles, labels_ = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="upper right", fontsize=8, ncol=len(methods))
    fig.suptitle(f"bbob d = {dmax}: f − f* (best so far, at target resolution) against evaluations, "
                 f"median and min–max over instances", fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(harness._path(f"{prefix}_convergence_d{dmax}.png"), dpi=100)
    plt.close(fig)

    # -- the table, last -----------------------------------------------------------------------------
    head = (["d", "method", "runs"] + [f"reached ≤ {b:g}·d" for b in budgets]
            + ["ECDF area", f"area ratio / {ANCHOR} (90% bootstrap)", "runs to 1e-8"])
    md = harness.markdown_table(head, table)
    header = (f"bbob, functions {functions[0]}–{functions[-1]}, instances "
              f"{','.join(map(str, instances))}, budget {budget:g}·d, IPOP restarts, x0 ~ U[−4,4]^d, "
              f"σ0 = 2. Fraction of (function, instance, target) triples reached (51 targets "
              f"10^{{2..−8}}); ECDF area over log10(evaluations/d) ∈ [0, {math.log10(budget):g}], "
              f"normalised; the ratio's range is a paired bootstrap over the (function, instance) "
              f"problems.\n`python benchmarks/bbob.py {command}`: {wall:.0f} s wall (summed over the "
              f"invocations that ran them; {cpu_seconds:.0f} s summed over the runs), {env['cpu']}, "
              f"{env['cores']} cores, {env['date']}; numpy {env['numpy']}, pycma {env['cma']}, "
              f"cocoex {env['cocoex']}, python {env['python']}.\n")
    with open(harness._path(f"{prefix}.md"), "w") as fh:
        fh.write(header + "\n" + md + "\n" + "\n".join(lines) + "\n")
    print("\n" + header)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
