"""Array backend: one code path for numpy and torch.

Everything above this module writes ``xp = namespace(x)`` once and then calls ``xp.<op>``; the op
names follow the array-API standard where it has one (``concat``, ``matrix_transpose`` as ``.mT``,
``linalg.solve``) and numpy's otherwise.

Why a thin helper of our own and not ``array_api_compat``: the structures need about twenty
operations, and the ones that matter most are *not* in the array-API standard — a matrix
exponential (scipy's ``expm`` vs ``torch.linalg.matrix_exp``), truncated exponential series, seeded
random streams with a checkpointable state, and dtype promotion for bfloat16 (which
``matrix_exp``/``solve`` refuse).  ``array_api_compat`` would add a runtime dependency and still
leave those to us; a 200-line module keeps the runtime dependencies at numpy and scipy and puts
every backend difference in one file.  Torch is imported lazily: numpy users never pay for it.

Notation (``../shared/design/algorithms.md``): a truncated exponential of order p is
h_p(M) = Σ_{j=0}^{p} M^j / j!, the series of expm cut after p terms; it needs matmuls only.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg

__all__ = [
    "Backend",
    "NumpyBackend",
    "TorchBackend",
    "RandomStream",
    "namespace",
    "get_backend",
    "limit_threads",
    "is_torch",
    "exp_series",
    "expm",
    "expm_truncated",
    "phi",
    "TRUNCATED_ORDERS",
]

TRUNCATED_ORDERS = (1, 2, 3, 4)


def _torch():
    import torch

    return torch


def is_torch(x: Any) -> bool:
    """True when ``x`` is a torch tensor (without importing torch when it is not loaded)."""
    return type(x).__module__.startswith("torch")


class Backend:
    """Operations whose spelling differs between numpy and torch.

    Arithmetic, ``@``, indexing, ``.mT``, ``.reshape`` and ``.shape`` are shared by both array types
    and are used directly; everything else goes through a Backend instance.
    """

    name: str

    # -- creation ---------------------------------------------------------------------------
    def asarray(self, x, dtype=None, device=None):
        raise NotImplementedError

    def zeros(self, shape, dtype=None, device=None):
        raise NotImplementedError

    def ones(self, shape, dtype=None, device=None):
        raise NotImplementedError

    def eye(self, n: int, dtype=None, device=None):
        raise NotImplementedError

    def default_dtype(self):
        raise NotImplementedError

    def dtype_of(self, name: str):
        """The dtype object for a name such as ``"float32"``."""
        raise NotImplementedError

    def device_of(self, x):
        raise NotImplementedError

    # -- inspection -------------------------------------------------------------------------
    def all_finite(self, x) -> bool:
        raise NotImplementedError

    def to_numpy(self, x) -> np.ndarray:
        raise NotImplementedError

    def copy(self, x):
        raise NotImplementedError

    def eps(self, dtype) -> float:
        raise NotImplementedError

    # -- elementwise and reductions shared by name ------------------------------------------
    def __getattr__(self, item):  # exp, log, abs, sqrt, sum, einsum, diagonal, ...
        return getattr(self._module, item)

    # -- linear algebra ---------------------------------------------------------------------
    def solve(self, a, b):
        raise NotImplementedError

    def slogdet(self, a):
        raise NotImplementedError

    def expm(self, a):
        raise NotImplementedError

    def diag(self, v):
        """Diagonal matrix with ``v`` on its diagonal (``v`` 1-D)."""
        raise NotImplementedError

    def block_diag(self, blocks):
        raise NotImplementedError

    def kron(self, a, b):
        raise NotImplementedError

    def diagonal(self, a):
        """The diagonal of the last two axes."""
        raise NotImplementedError


@functools.cache
def _numpy_eps(dtype: np.dtype) -> float:
    return float(np.finfo(dtype).eps)


class NumpyBackend(Backend):
    name = "numpy"
    _module = np

    def asarray(self, x, dtype=None, device=None):
        if device not in (None, "cpu"):
            raise ValueError(f"the numpy backend runs on the CPU only, got device={device!r}")
        return np.asarray(x, dtype=dtype)

    def zeros(self, shape, dtype=None, device=None):
        return np.zeros(shape, dtype=dtype or np.float64)

    def ones(self, shape, dtype=None, device=None):
        return np.ones(shape, dtype=dtype or np.float64)

    def eye(self, n, dtype=None, device=None):
        return np.eye(n, dtype=dtype or np.float64)

    def default_dtype(self):
        return np.dtype(np.float64)

    def dtype_of(self, name):
        return np.dtype(name)

    def device_of(self, x):
        return "cpu"

    def all_finite(self, x):
        return bool(np.isfinite(x).all())

    def to_numpy(self, x):
        return np.asarray(x)

    def copy(self, x):
        return np.array(x, copy=True)

    def eps(self, dtype):
        return _numpy_eps(np.dtype(dtype))

    def solve(self, a, b):
        return np.linalg.solve(a, b)

    def slogdet(self, a):
        return np.linalg.slogdet(a)

    def expm(self, a):
        return scipy.linalg.expm(a)

    def diag(self, v):
        return np.diag(v)

    def block_diag(self, blocks):
        return scipy.linalg.block_diag(*blocks)

    def kron(self, a, b):
        return np.kron(a, b)

    def diagonal(self, a):
        return np.diagonal(a, axis1=-2, axis2=-1)


class TorchBackend(Backend):
    name = "torch"

    @property
    def _module(self):
        return _torch()

    def asarray(self, x, dtype=None, device=None):
        torch = _torch()
        if isinstance(x, np.ndarray) and dtype is None and x.dtype == np.float64:
            dtype = torch.float64
        return torch.as_tensor(x, dtype=dtype, device=device)

    def zeros(self, shape, dtype=None, device=None):
        return _torch().zeros(shape, dtype=dtype, device=device)

    def ones(self, shape, dtype=None, device=None):
        return _torch().ones(shape, dtype=dtype, device=device)

    def eye(self, n, dtype=None, device=None):
        return _torch().eye(n, dtype=dtype, device=device)

    def default_dtype(self):
        return _torch().get_default_dtype()

    def dtype_of(self, name):
        return getattr(_torch(), name)

    def device_of(self, x):
        return x.device

    def all_finite(self, x):
        return bool(_torch().isfinite(x).all())

    def to_numpy(self, x):
        torch = _torch()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.detach().cpu().numpy()

    def copy(self, x):
        return x.detach().clone()

    def eps(self, dtype):
        return float(_torch().finfo(dtype).eps)

    # linalg kernels refuse half precision: compute in float32, return in the input's dtype
    def _wide(self, x):
        torch = _torch()
        return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x

    def solve(self, a, b):
        return _torch().linalg.solve(self._wide(a), self._wide(b)).to(b.dtype)

    def slogdet(self, a):
        sign, logabs = _torch().linalg.slogdet(self._wide(a))
        return sign, logabs

    def expm(self, a):
        if a.device.type != "cpu" and a.shape[-1] <= EXPM_DEVICE_MAX_SIZE:
            return _expm_device(a)  # matrix_exp picks its degree on the host: a sync
        return _torch().linalg.matrix_exp(self._wide(a)).to(a.dtype)

    def diag(self, v):
        return _torch().diag(v)

    def block_diag(self, blocks):
        return _torch().block_diag(*blocks)

    def kron(self, a, b):
        return _torch().kron(a, b)

    def diagonal(self, a):
        return _torch().diagonal(a, dim1=-2, dim2=-1)


_NUMPY = NumpyBackend()
_TORCH = TorchBackend()


def limit_threads(n: int = 1) -> None:
    """Cap torch's and the BLAS libraries' thread pools at ``n`` threads.

    Small problems (a population of tens, matrices of tens to hundreds) call numpy, scipy and torch
    in turn many times a second; on few cores their thread pools spin against each other and a step
    can cost 10× (measured here on 2 cores).  Call this once at the start of such a script.  Uses
    ``threadpoolctl`` for BLAS when it is installed (it comes with scikit-learn); torch only when it
    is installed.
    """
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        _torch().set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return
    threadpool_limits(n)


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (``"numpy"`` or ``"torch"``)."""
    if name == "numpy":
        return _NUMPY
    if name == "torch":
        _torch()  # fail here, with torch's ImportError, if torch is missing
        return _TORCH
    raise ValueError(f"unknown backend {name!r}; valid backends: 'numpy', 'torch'")


def namespace(*arrays) -> Backend:
    """The backend of ``arrays``: torch if any is a tensor, numpy otherwise.

    Python scalars and lists count as numpy.  Mixing a torch tensor with a numpy array raises, so a
    host round-trip never happens silently.
    """
    kinds = {"torch" if is_torch(a) else "numpy"
             for a in arrays if a is not None and not isinstance(a, (int, float))}
    if len(kinds) > 1:
        raise TypeError("cannot mix torch tensors and numpy arrays in one call; convert one side first")
    return _TORCH if kinds == {"torch"} else _NUMPY


# -- exponentials ------------------------------------------------------------------------------


def _check_order(order: int) -> int:
    if int(order) != order or int(order) not in TRUNCATED_ORDERS:
        raise ValueError(f"order must be one of {TRUNCATED_ORDERS}, got {order!r}")
    return int(order)


def exp_series(x, order: int):
    """Elementwise truncated exponential e_p(x) = Σ_{j≤p} x^j / j! (Horner form)."""
    order = _check_order(order)
    result = 1.0 + x / order
    for j in range(order - 1, 0, -1):
        result = 1.0 + x * result / j
    return result


def expm(a):
    """Matrix exponential of ``a`` (…, n, n), numpy (scipy) or torch."""
    return namespace(a).expm(a)


def expm_truncated(a, order: int = 2):
    """h_p(a) = Σ_{j≤p} a^j / j! for a square (…, n, n) array, by Horner's rule: matmuls only."""
    order = _check_order(order)
    xp = namespace(a)
    eye = xp.eye(a.shape[-1], dtype=a.dtype, device=xp.device_of(a))
    result = eye + a / order
    for j in range(order - 1, 0, -1):
        result = eye + (a @ result) / j
    return result


_PHI_RADIUS = 0.25  # scale K until ‖K‖_F ≤ this; the Taylor remainder is then < 0.25¹³/13! ≈ 1e-16
_PHI_DEGREE = 12
#: squarings the device path of ``phi`` can do: ‖K‖_F up to 0.25·2¹⁰ = 256 (beyond: NaN, see ``phi``)
PHI_MAX_SQUARINGS = 10


def phi(K):
    """φ(K) = Σ_{j≥0} K^j/(j+1)! = (e^K − I) K⁻¹ for a square K, by scaling and squaring (matmuls only).

    φ is the upper-right block of expm([[K, I], [0, 0]]); squaring that block matrix gives
    E₂ = E², F₂ = E F + F for E = e^{K/2^s}, F = φ(K/2^s)/2^s, so the Taylor series is only ever
    evaluated where it is accurate.  This is what the dense Gram-matrix retraction needs
    (algorithms.md §2) and it avoids LAPACK's solve in scipy's Padé expm, which is slow for the small
    n×n matrices of a population on a busy machine.

    numpy: s is the smallest count with ‖K/2^s‖_F ≤ 1/4.  torch: s is chosen on the device (no
    host round-trip): ``PHI_MAX_SQUARINGS`` squarings are always computed and those beyond s are
    masked out by ``torch.where`` (2 n×n matmuls each, whatever s is); a K too large for them
    (‖K‖_F > 256, far beyond an ES step) gives NaN instead of a silently wrong φ.  Half-precision K
    is computed in float32 and returned in its own dtype.
    """
    xp = namespace(K)
    if xp.name == "torch":
        return _phi_device(K)
    n = K.shape[-1]
    eye = xp.eye(n, dtype=K.dtype, device=xp.device_of(K))
    norm = float(xp.to_numpy((K * K).sum() ** 0.5))
    s = max(0, math.ceil(math.log2(norm / _PHI_RADIUS))) if norm > _PHI_RADIUS else 0
    X = K / 2**s
    F, E = _phi_taylor(X, eye)
    F = F / 2**s
    for _ in range(s):
        F = E @ F + F
        E = E @ E
    return F


def _phi_taylor(X, eye):
    """(φ(X), e^X) by Horner: φ(X) = I + X/2! + X²/3! + …, e^X = I + X φ(X)."""
    F = eye / math.factorial(_PHI_DEGREE + 1)
    for j in range(_PHI_DEGREE, 0, -1):
        F = eye / math.factorial(j) + X @ F
    return F, eye + X @ F


def _phi_device(K, exp_only: bool = False):
    """``phi`` for torch with the number of squarings s decided on the device (see ``phi``);
    ``exp_only``: e^K instead, by the same scaling and squaring (one matmul a squaring)."""
    torch = _torch()
    out_dtype = K.dtype
    K = _TORCH._wide(K)
    eye = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
    norm = torch.linalg.matrix_norm(K)
    s = torch.ceil(torch.log2(norm / _PHI_RADIUS)).clamp(min=0)  # ‖K/2^s‖_F ≤ 1/4 (NaN for a NaN K)
    s = s[..., None, None]  # one count per matrix of a batch
    scale = torch.exp2(-s.clamp(max=PHI_MAX_SQUARINGS))
    if K.ndim == 2:  # fused: one kernel a Horner step (eye/j! + X F) and a squaring's E F + F
        X = K * scale
        F = eye / math.factorial(_PHI_DEGREE + 1)
        for j in range(_PHI_DEGREE, 0, -1):
            F = torch.addmm(eye, X, F, beta=1 / math.factorial(j))
        E = torch.addmm(eye, X, F)
    else:
        F, E = _phi_taylor(K * scale, eye)
    F = F * scale
    ons = torch.arange(PHI_MAX_SQUARINGS, device=K.device) < s  # squaring j is done: j < s
    for j in range(PHI_MAX_SQUARINGS):
        on = ons[..., j:j + 1]
        if not exp_only:
            F = torch.where(on, torch.addmm(F, E, F) if K.ndim == 2 else E @ F + F, F)
        E = torch.where(on, E @ E, E)
    out = E if exp_only else F
    out = torch.where(s <= PHI_MAX_SQUARINGS, out, torch.full_like(out, math.nan))
    return out.to(out_dtype)


#: on a GPU, ``expm`` of matrices up to this size goes by ``_expm_device`` (no host sync, ~22 small
#: matmuls); larger ones by ``torch.linalg.matrix_exp``, whose sync is small beside its own cost
EXPM_DEVICE_MAX_SIZE = 512


def _expm_device(a):
    """e^a for a torch matrix on an accelerator with no host round-trip: the scaling and squaring
    of ``phi`` (Taylor degree 13 at ‖a/2^s‖_F ≤ 1/4, s ≤ ``PHI_MAX_SQUARINGS`` chosen on the
    device).  ``torch.linalg.matrix_exp`` reads ‖a‖ on the host to pick its degree, which waits for
    the device.  An ``a`` too large for the squarings (‖a‖_F > 256) gives NaN, never a wrong e^a."""
    return _phi_device(a, exp_only=True)


# -- random streams ----------------------------------------------------------------------------

_LANES_KEY = 0x4C414E45  # the spawn key of a stream's sampling lanes ("LANE")
_LANE_MIN_SIZE = 1 << 14  # smaller draws stay on one thread: a hand-off costs ~20 µs
_LANE_POOLS: dict[int, ThreadPoolExecutor] = {}


def _lane_pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads for ``RandomStream`` lanes."""
    if workers not in _LANE_POOLS:
        _LANE_POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="natgrad-es-rng")
    return _LANE_POOLS[workers]


_AHEAD_POOL: list[ThreadPoolExecutor] = []


def _ahead_pool() -> ThreadPoolExecutor:
    """The process-wide thread that draws ``RandomStream.prefetch`` blocks."""
    if not _AHEAD_POOL:
        _AHEAD_POOL.append(ThreadPoolExecutor(1, thread_name_prefix="natgrad-es-ahead"))
    return _AHEAD_POOL[0]


def _forget_pools_in_child() -> None:
    """A forked child inherits the pools but not their threads: a job queued there would never
    run, so the child starts pools of its own."""
    _AHEAD_POOL.clear()
    _LANE_POOLS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)


def _fresh_generator(g: np.random.Generator) -> np.random.Generator:
    """A new generator of the same kind as ``g`` (its own lock; the caller sets its state)."""
    return np.random.Generator(type(g.bit_generator)())


class _Block(NamedTuple):
    """A ``RandomStream.prefetch`` block: what it is, the job filling it, the generators' states
    before it, and the process that started it (a forked child never sees the job finish)."""

    shape: tuple
    dtype: Any
    job: Any
    states: list
    pid: int


class RandomStream:
    """A seeded stream of standard normal numbers, the same interface for numpy and torch.

    ``RandomStream(seed)`` always gives the same sequence for the same seed, backend and device.
    Seeds go through ``numpy.random.SeedSequence`` so that ``spawn`` gives independent child
    streams for both backends, and ``state_dict`` / ``load_state_dict`` checkpoint the exact
    position in the stream.  Torch draws in float32 (or float64) and casts to the asked dtype, so a
    bfloat16 run sees the same numbers, rounded, as a float32 one.

    ``threads=t`` (numpy): draws of at least 2¹⁴ numbers are split by rows into t fixed blocks,
    each drawn by a generator of its own ("lane") in a thread of its own, so t cores share the
    sampling (numpy's normal draws cost ~10 ns each: at d = 1000 they are most of a cheap
    generation).  The numbers depend on the seed and t, not on how many cores there are; t = 1
    is the single-generator stream.

    ``prefetch(shape, dtype)`` (numpy): draw the next ``normal(shape, dtype)`` now, in a background
    thread, so that it overlaps other work (the evaluation of f, an ES's update).  It changes no
    number: the next ``normal`` of that shape returns the block, a draw of another shape first puts
    the generators back where they were, and ``state_dict`` gives the position before the block.
    """

    def __init__(self, seed: int | np.random.SeedSequence | None = None, backend: str = "numpy",
                 device: Any = None, threads: int = 1):
        self.backend = get_backend(backend)
        self.seed_sequence = (seed if isinstance(seed, np.random.SeedSequence)
                              else np.random.SeedSequence(seed))
        self.device = device
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.threads = int(threads)
        self._lanes: list[np.random.Generator] = []
        self._ahead: _Block | None = None  # a prefetched block, pending
        if self.backend.name == "numpy":
            if device not in (None, "cpu"):
                raise ValueError(f"the numpy backend runs on the CPU only, got device={device!r}")
            self._generator = np.random.Generator(np.random.PCG64(self.seed_sequence))
            if self.threads > 1:  # a seed sequence of their own: ``spawn`` stays as it was
                lanes = np.random.SeedSequence(self.seed_sequence.entropy,
                                               spawn_key=(*self.seed_sequence.spawn_key, _LANES_KEY))
                self._lanes = [np.random.Generator(np.random.PCG64(s)) for s in lanes.spawn(threads)]
        else:
            if self.threads > 1:
                raise ValueError("threads > 1 is for the numpy backend (torch draws with its own "
                                 "vectorised generator)")
            torch = _torch()
            self._generator = torch.Generator(device=device or "cpu")
            self._generator.manual_seed(int(self.seed_sequence.generate_state(1, np.uint64)[0] >> 1))

    @property
    def seed(self):
        """The entropy the stream was made from (``None`` seeds draw fresh entropy)."""
        return self.seed_sequence.entropy

    def normal(self, shape: Sequence[int] | int, dtype=None, out=None):
        """An array of independent N(0, 1) numbers of the given shape and dtype.

        ``out``: an array of that shape and dtype to fill instead of a new one, with the same
        numbers as without it: numpy a C-contiguous one; torch a float32 or float64 tensor (the
        dtypes torch draws in; a replayed CUDA graph reads its draws from such a buffer).
        """
        if self.backend.name == "numpy":
            dtype = np.dtype(dtype or np.float64)
            if dtype not in (np.float32, np.float64):
                raise ValueError(f"numpy normal numbers come as float32 or float64, not {dtype}")
            shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
            if out is not None and (out.shape != shape or out.dtype != dtype
                                    or not out.flags.c_contiguous):
                raise ValueError(f"out must be a C-contiguous {dtype} array of shape {shape}")
            block = self._take_ahead(shape, dtype)
            if block is not None:
                if out is None:
                    return block
                out[...] = block
                return out
            return self._fill(np.empty(shape, dtype=dtype) if out is None else out)
        torch = _torch()
        dtype = dtype or torch.get_default_dtype()
        draw = torch.float64 if dtype == torch.float64 else torch.float32
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if out is not None:  # torch: the draw itself, float32 or float64, into out
            if tuple(out.shape) != shape or out.dtype != dtype or dtype != draw:
                raise ValueError(f"out must be a float32 or float64 tensor of shape {shape} and "
                                 f"the asked dtype {dtype}")
            return torch.randn(shape, generator=self._generator, dtype=draw, device=self.device,
                               out=out)
        out = torch.randn(shape, generator=self._generator, dtype=draw, device=self.device)
        return out.to(dtype)

    def _fill(self, out: np.ndarray) -> np.ndarray:
        """``out`` filled with the stream's next numbers (in lanes when they pay)."""
        if self._lanes and out.ndim >= 1 and out.shape[0] >= self.threads \
                and out.size >= _LANE_MIN_SIZE:
            return self._normal_in_lanes(out)
        return self._generator.standard_normal(out=out, dtype=out.dtype)

    def _generator_states(self) -> list:
        return [g.bit_generator.state for g in (self._generator, *self._lanes)]

    def prefetch(self, shape: Sequence[int] | int, dtype=None) -> None:
        """Start drawing the next ``normal(shape, dtype)`` in a background thread (numpy only;
        the class docstring says why it changes no number)."""
        if self.backend.name != "numpy":
            raise ValueError("prefetch is for the numpy backend (torch draws asynchronously on its "
                             "device)")
        dtype = np.dtype(dtype or np.float64)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"numpy normal numbers come as float32 or float64, not {dtype}")
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        self._drop_ahead()
        states = self._generator_states()
        job = _ahead_pool().submit(self._fill, np.empty(shape, dtype=dtype))
        self._ahead = _Block(shape, dtype, job, states, os.getpid())

    def _take_ahead(self, shape: tuple, dtype) -> np.ndarray | None:
        """The prefetched block if it has this shape and dtype, else None (and none pending)."""
        ahead = self._live_ahead()
        if ahead is None:
            return None
        if (ahead.shape, ahead.dtype) == (shape, dtype):
            self._ahead = None
            return ahead.job.result()
        self._drop_ahead()
        return None

    def _live_ahead(self) -> _Block | None:
        """The pending block, once one inherited by a forked child (whose job never runs) is
        dropped."""
        if self._ahead is not None and self._ahead.pid != os.getpid():
            self._drop_ahead()
        return self._ahead

    def _drop_ahead(self) -> None:
        """Discard a pending block: the generators go back to where they were before it."""
        if self._ahead is not None:
            if self._ahead.pid == os.getpid():
                self._ahead.job.result()
            else:  # a forked child: the job never runs here, and the generators' locks may have
                # been held by the parent's drawing thread at the fork (held for ever here)
                self._generator = _fresh_generator(self._generator)
                self._lanes = [_fresh_generator(g) for g in self._lanes]
            for g, state in zip((self._generator, *self._lanes), self._ahead.states):
                g.bit_generator.state = state
            self._ahead = None

    def __getstate__(self) -> dict:
        """Pickling and copying drop a pending block first (the generators go back to before it,
        so the copy and the original draw the same numbers next)."""
        self._drop_ahead()
        return self.__dict__.copy()

    def _normal_in_lanes(self, out: np.ndarray) -> np.ndarray:
        """``out``'s rows split in ``threads`` fixed blocks, block i drawn by lane i, the blocks
        filled concurrently (numpy releases the GIL while it fills an array).  Which numbers come
        out depends on the seed and ``threads`` only, not on the machine's cores."""
        dtype = out.dtype
        blocks = np.array_split(out, self.threads, axis=0)
        pool = _lane_pool(self.threads - 1)
        jobs = [pool.submit(lane.standard_normal, out=block, dtype=dtype)
                for lane, block in zip(self._lanes[1:], blocks[1:])]
        self._lanes[0].standard_normal(out=blocks[0], dtype=dtype)
        for job in jobs:
            job.result()
        return out

    def spawn(self, n: int) -> list[RandomStream]:
        """``n`` independent child streams (same backend and device)."""
        return [RandomStream(s, self.backend.name, self.device, self.threads)
                for s in self.seed_sequence.spawn(n)]

    def state_dict(self) -> dict:
        ahead = self._live_ahead()
        if ahead is not None:  # the position before the pending block, which stays
            ahead.job.result()
            states = ahead.states
            out = {"backend": self.backend.name, "state": states[0]}
            if self._lanes:
                out["lanes"] = list(states[1:])
            return out
        if self.backend.name == "numpy":
            state = self._generator.bit_generator.state
        else:
            state = self._generator.get_state()
        out = {"backend": self.backend.name, "state": state}
        if self._lanes:
            out["lanes"] = [lane.bit_generator.state for lane in self._lanes]
        return out

    def load_state_dict(self, state: dict) -> None:
        if state.get("backend") != self.backend.name:
            raise ValueError(f"state is for the {state.get('backend')!r} backend, "
                             f"this stream uses {self.backend.name!r}")
        lanes = state.get("lanes", [])
        self._drop_ahead()
        if len(lanes) != len(self._lanes):
            raise ValueError(f"state has {len(lanes) or 1} sampling lane(s), this stream "
                             f"{len(self._lanes) or 1} (threads={self.threads})")
        if self.backend.name == "numpy":
            self._generator.bit_generator.state = state["state"]
            for lane, lane_state in zip(self._lanes, lanes):
                lane.bit_generator.state = lane_state
        else:
            self._generator.set_state(state["state"])
