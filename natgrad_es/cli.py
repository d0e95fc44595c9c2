"""The ``natgrad-es`` command (also ``python -m natgrad_es``).

    natgrad-es minimize PROBLEM|module:function --dim D [--structure S] [--budget B] [--seed S]
                        [--log run.csv] [--plot run.png] [--sigma0 S0] [--x0 X0] [--ftarget F]
                        [--rank K] [--blocks N] [--shape D1xD2] [--method M] [--popsize N]
                        [--restarts ipop] [--bounds=LOWER,UPPER] [--vectorized] [--quiet]
    natgrad-es plot run.csv [-o run.png] [--title T]
    natgrad-es problems

``minimize`` runs ``natgrad_es.es.minimize`` on a built-in problem (``natgrad-es problems`` lists
them) or on any importable function ``module:function`` (``f(x)`` for x of shape (d,), or ``f(X)``
for X of shape (n, d) with ``--vectorized``), shows a live progress bar on a terminal (tqdm when it
is installed, a one-line text display otherwise; nothing when stderr is not a terminal or with
``--quiet``), logs every generation to ``--log`` (CSV, ``natgrad_es.logger``) and prints a summary.
``plot`` draws such a log (``natgrad_es.plotting``, needs matplotlib).

Exit status: 0 when the run finished (whatever criterion stopped it), 1 when the objective raised,
2 for bad input (unknown problem, bad ``--dim``, …; the message says what is allowed).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["main", "Progress", "build_parser"]

#: the default initial mean is drawn uniformly from [-X0_RANGE, X0_RANGE]^d (seeded by --seed)
X0_RANGE = 3.0
#: the default initial step size: a quarter of the default x0 box's width
SIGMA0 = 1.5


class UsageError(Exception):
    """Bad command-line input; the message says what is allowed (exit status 2)."""


class ObjectiveError(Exception):
    """The user's objective raised (exit status 1)."""


# -- progress ----------------------------------------------------------------------------------------


class Progress:
    """A live progress display of a run: tqdm when installed, else one rewritten text line.

    Args:
        total: the evaluation budget (None: unknown, the bar counts without an end).
        enabled: show anything at all (default: only when ``stream`` is a terminal).
        stream: where to draw (default ``sys.stderr``).
        use_tqdm: force (True) or refuse (False) tqdm; None: use it when it can be imported.
    """

    def __init__(self, total: int | None, *, enabled: bool | None = None,
                 stream: IO[str] | None = None, use_tqdm: bool | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty()) if callable(isatty) else False
        self.enabled = enabled
        self.total = total
        self._bar = None
        self._done = 0
        self._last_draw = -math.inf
        self._width = 0
        if enabled and use_tqdm is not False:
            try:
                from tqdm import tqdm
            except ImportError:
                if use_tqdm:
                    raise
            else:
                self._bar = tqdm(total=total, unit="eval", file=self.stream, dynamic_ncols=True,
                                 leave=True, smoothing=0.1)

    @property
    def kind(self) -> str:
        """"tqdm", "text" or "off"."""
        return "off" if not self.enabled else ("tqdm" if self._bar is not None else "text")

    def update(self, es) -> None:
        """Show the state of ``es`` after a generation (evaluations, best f, σ)."""
        if not self.enabled:
            return
        evaluations = int(es.evaluations)
        fbest, sigma = float(es.result.fbest), float(es.sigma)
        if self._bar is not None:
            self._bar.update(evaluations - self._done)
            self._bar.set_postfix_str(f"f_best={fbest:.4e} sigma={sigma:.2e}", refresh=False)
        else:
            now = time.perf_counter()
            if now - self._last_draw >= 0.1:
                self._last_draw = now
                total = f"/{self.total}" if self.total else ""
                line = (f"{evaluations}{total} evals  it {int(es.iterations)}  "
                        f"f_best {fbest:.4e}  sigma {sigma:.2e}")
                self.stream.write("\r" + line.ljust(self._width))
                self.stream.flush()
                self._width = len(line)
        self._done = evaluations

    def close(self) -> None:
        """End the display (the bar stays on screen, the cursor goes to the next line)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        elif self._width:
            self.stream.write("\n")
            self.stream.flush()


# -- the parser ----------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def _shape(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        d1, d2 = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must look like 4x5, got {text!r}") from None
    if d1 < 1 or d2 < 1:
        raise argparse.ArgumentTypeError(f"both sizes must be positive, got {text!r}")
    return d1, d2


def _bounds(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        lower, upper = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must look like -5,5 (LOWER,UPPER), got {text!r}") from None
    if not lower < upper:
        raise argparse.ArgumentTypeError(f"LOWER must be below UPPER, got {text!r}")
    return lower, upper


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``natgrad-es`` (subcommands minimize, plot, problems)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="natgrad-es",
        description="Natural-gradient evolution strategies on structured Gaussians.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    m = sub.add_parser(
        "minimize", help="minimise a built-in problem or module:function",
        description="Minimise PROBLEM (a built-in name, see `natgrad-es problems`) or an importable "
                    "function module:function with natgrad_es.es.minimize.")
    m.add_argument("problem", metavar="PROBLEM|module:function")
    m.add_argument("--dim", "-d", type=_positive_int,
                   help="dimension d (required unless --x0 gives d values)")
    m.add_argument("--structure", "-s", default="full",
                   help="covariance structure: full, diagonal, lowrank, blockdiag, kronecker, spectral "
                        "(default full)")
    m.add_argument("--rank", type=_positive_int, help="rank k of --structure lowrank (1 <= k < d)")
    m.add_argument("--blocks", type=_positive_int, help="number of blocks of --structure blockdiag")
    m.add_argument("--shape", type=_shape, help="d1xd2 of --structure kronecker (d1*d2 = d)")
    m.add_argument("--budget", "-b", type=_positive_int,
                   help="largest number of f evaluations (default: the strategy's own criteria)")
    m.add_argument("--seed", type=int, help="random seed (default: fresh, printed in the summary)")
    m.add_argument("--sigma0", type=_positive_float, default=SIGMA0,
                   help=f"initial step size (default {SIGMA0})")
    m.add_argument("--x0", help=f"initial mean: one number (every coordinate) or d comma-separated "
                                f"numbers (default: uniform in [-{X0_RANGE:g}, {X0_RANGE:g}]^d, "
                                f"seeded by --seed)")
    m.add_argument("--ftarget", type=_float, help="stop once f <= FTARGET")
    m.add_argument("--method", choices=("path", "xnes"), default="path",
                   help="update rule (default path)")
    m.add_argument("--popsize", type=_positive_int, help="samples per generation")
    m.add_argument("--restarts", choices=("ipop",),
                   help="restart with a doubled population whenever the strategy stops (IPOP)")
    m.add_argument("--bounds", type=_bounds, metavar="LOWER,UPPER",
                   help="the same box [LOWER, UPPER] for every coordinate; write --bounds=-5,5 "
                        "(with =) when LOWER is negative")
    m.add_argument("--vectorized", action="store_true",
                   help="module:function takes a batch X of shape (n, d) and returns n values")
    m.add_argument("--log", metavar="CSV", help="write one row per generation to this CSV file")
    m.add_argument("--plot", metavar="PNG", help="draw the run to this image at the end (matplotlib)")
    m.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    m.add_argument("--disp", type=_positive_int, metavar="K",
                   help="print a pycma-style progress line every K generations (on any output, "
                        "terminal or not; replaces the live bar)")

    p = sub.add_parser("plot", help="draw a CSV log as a pycma-style figure",
                       description="Draw a log written by `natgrad-es minimize --log` (f - f_best, "
                                   "the mean, the axis lengths, sigma) to an image.")
    p.add_argument("log", metavar="CSV")
    p.add_argument("-o", "--output", help="image file (default: the CSV's name with .png)")
    p.add_argument("--title", help="figure title (default: the CSV's file name)")
    p.add_argument("--dpi", type=_positive_int, default=100)

    sub.add_parser("problems", help="list the built-in problems",
                   description="List the built-in problems that `natgrad-es minimize` accepts.")
    return parser


# -- commands ----------------------------------------------------------------------------------------


def _problem_names(variants: bool = False) -> tuple[str, ...]:
    """The built-in problem names (``problems.names()``; with ``variants`` also the prefixed names
    ``problems.get`` accepts, where the registry has them)."""
    import problems

    names = getattr(problems, "names", None)
    if callable(names):
        if variants:
            try:
                return tuple(names(variants=True))
            except TypeError:
                pass
        return tuple(names())
    return tuple(n for n in ("sphere", "ellipsoid", "rosenbrock") if callable(getattr(problems, n, None)))


def _resolve(spec: str, dim: int | None) -> tuple[Callable, bool, Any]:
    """(function, vectorized, the problem object or None) for PROBLEM or module:function."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise UsageError(f"expected module:function, got {spec!r}")
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as err:
            raise UsageError(f"cannot import module {module_name!r} of {spec!r}: {err}") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        if not callable(obj):
            raise UsageError(f"{spec!r} is not callable (a {type(obj).__name__})")
        return obj, False, None
    if spec not in _problem_names(variants=True):
        raise UsageError(f"unknown problem {spec!r}; built-in problems: {', '.join(_problem_names())} "
                         f"(see `natgrad-es problems`), or give module:function")
    if dim is None:
        raise UsageError(f"problem {spec!r} needs --dim")
    import problems

    get = getattr(problems, "get", None)
    if not callable(get):
        return getattr(problems, spec), True, None
    try:
        problem = get(spec, dim)
    except (ValueError, TypeError) as err:
        raise UsageError(str(err)) from None
    return problem, True, problem


def _x0(text: str | None, dim: int | None, rng: np.random.Generator) -> np.ndarray:
    if text is None:
        if dim is None:
            raise UsageError("give --dim (or --x0 with d comma-separated values)")
        return rng.uniform(-X0_RANGE, X0_RANGE, dim)
    try:
        values = np.array([float(v) for v in text.replace(" ", "").split(",") if v != ""])
    except ValueError:
        raise UsageError(f"--x0 must be a number or comma-separated numbers, got {text!r}") from None
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise UsageError(f"--x0 must be finite numbers, got {text!r}")
    if values.size == 1 and dim is not None:
        return np.full(dim, values[0])
    if dim is not None and values.size != dim:
        raise UsageError(f"--x0 has {values.size} values but --dim is {dim}")
    return values


class _Guarded:
    """The objective, with its exceptions turned into ``ObjectiveError``."""

    def __init__(self, fun: Callable) -> None:
        self.fun = fun

    def __call__(self, x):
        try:
            return self.fun(x)
        except Exception as err:  # noqa: BLE001 - any failure of user code ends the run cleanly
            raise ObjectiveError(f"the objective raised {type(err).__name__}: {err}") from err


def _minimize(args: argparse.Namespace, out: IO[str]) -> int:
    from .es import minimize
    from .logger import Logger

    fun, vectorized, problem = _resolve(args.problem, args.dim)
    vectorized = vectorized or args.vectorized
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2 ** 32)
    x0 = _x0(args.x0, args.dim, np.random.default_rng(seed))
    d = x0.size
    if problem is not None and getattr(problem, "dim", d) != d:
        raise UsageError(f"--x0 has {d} values but --dim is {problem.dim}")
    options: dict[str, Any] = {"method": args.method}
    for key in ("rank", "blocks", "shape", "popsize", "restarts", "bounds"):
        if getattr(args, key) is not None:  # restarts and bounds only when given (newer minimize)
            options[key] = getattr(args, key)
    log = Logger(args.log) if args.log or args.plot else None  # in memory for --plot alone
    objective = _Guarded(fun)
    if log is not None:
        objective = log.watch(objective, vectorized=vectorized)
    progress = Progress(args.budget, enabled=False if args.quiet or args.disp else None)

    def callback(es) -> bool:
        if log is not None:
            log(es)
        progress.update(es)
        if args.disp and es.iterations % args.disp == 0:
            es.disp()
        return False

    t0 = time.perf_counter()
    try:
        res = minimize(objective, x0, args.sigma0, args.structure, budget=args.budget,
                       ftarget=args.ftarget, vectorized=vectorized, seed=seed, callback=callback,
                       **options)
    except (ValueError, TypeError, NotImplementedError) as err:  # options, or f values tell rejects
        raise UsageError(str(err)) from None
    finally:
        progress.close()
    elapsed = time.perf_counter() - t0
    es = res.es
    if args.disp and es.iterations % args.disp:
        es.disp()
    if log is not None:
        log.log(es, force=True)

    name = args.problem
    lines = [f"natgrad-es minimize {name}: d={d}, structure={args.structure}, method={args.method}, "
             f"popsize={es.popsize}, seed={seed}",
             f"  stop:        {res.message or 'none'}",
             f"  success:     {bool(res.success)}",
             f"  f best:      {res.fun:.6e}"]
    if problem is not None and hasattr(problem, "fopt"):
        lines[-1] += f"   (f - f* = {res.fun - float(problem.fopt):.3e})"
    if args.restarts is not None:
        lines.append(f"  restarts:    {res.get('restarts', 0)}")
    lines += [f"  evaluations: {res.nfev}   iterations: {res.nit}   time: {elapsed:.2f} s",
              f"  sigma:       {res.sigma:.3e}",
              f"  x best:      {_short(res.x)}"]
    if args.log:
        lines.append(f"  log:         {args.log} ({len(log)} rows; natgrad-es plot {args.log} -o "
                     f"{Path(args.log).with_suffix('.png')})")
    print("\n".join(lines), file=out)
    if args.plot:
        from .plotting import plot

        plot(log, args.plot, title=f"{name}, d={d}, {args.structure}")
        print(f"  plot:        {args.plot}", file=out)
    return 0


def _short(x, k: int = 5) -> str:
    x = np.asarray(x, dtype=float).reshape(-1)
    body = ", ".join(f"{v:.4g}" for v in x[:k])
    return f"[{body}{', ...' if x.size > k else ''}]  (d={x.size})"


def _plot(args: argparse.Namespace, out: IO[str]) -> int:
    from .plotting import plot

    source = Path(args.log)
    if not source.is_file():
        raise UsageError(f"no such log file: {args.log}")
    target = Path(args.output) if args.output else source.with_suffix(".png")
    try:
        plot(source, target, title=args.title, dpi=args.dpi)
    except ValueError as err:
        raise UsageError(f"{args.log}: {err}") from None
    print(f"wrote {target}", file=out)
    return 0


def _problems(args: argparse.Namespace, out: IO[str]) -> int:
    import problems

    names = _problem_names()
    width = max((len(n) for n in names), default=0)
    get = getattr(problems, "get", None)
    for name in names:
        description = ""
        for dim in (2, 4, 6):
            try:
                obj = get(name, dim) if callable(get) else getattr(problems, name)
            except Exception:  # noqa: BLE001 - some problems need another dimension
                continue
            description = getattr(obj, "description", "") or inspect.getdoc(getattr(obj, "f", obj)) or ""
            description = description.strip().splitlines()[0] if description.strip() else ""
            break
        print(f"{name:<{width}}  {description}".rstrip(), file=out)
    return 0


# -- entry point -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``natgrad-es`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a parse error (already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    out = sys.stdout
    try:
        if args.command == "minimize":
            return _minimize(args, out)
        if args.command == "plot":
            return _plot(args, out)
        return _problems(args, out)
    except UsageError as err:
        print(f"natgrad-es {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ObjectiveError as err:
        print(f"natgrad-es {args.command}: error: {err}", file=sys.stderr)
        return 1
    except ImportError as err:
        print(f"natgrad-es {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("natgrad-es: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
