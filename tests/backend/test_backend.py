"""natgrad_es.backend: exponentials, random streams and dispatch, for numpy and torch."""

import math
import os

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from natgrad_es import backend as B

try:
    import torch
except ImportError:  # pragma: no cover - torch is an optional extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


def _series(M, p):
    return sum(np.linalg.matrix_power(M, j) / math.factorial(j) for j in range(p + 1))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 2**31), order=st.sampled_from(B.TRUNCATED_ORDERS))
def test_expm_truncated_is_the_series(n, seed, order):
    M = np.random.default_rng(seed).standard_normal((n, n)) / n
    np.testing.assert_allclose(B.expm_truncated(M, order), _series(M, order), atol=1e-12)
    np.testing.assert_allclose(B.exp_series(np.diag(M), order), np.diag(_series(np.diag(np.diag(M)),
                                                                                  order)), atol=1e-12)
    if torch is not None:
        Mt = torch.as_tensor(M)
        np.testing.assert_allclose(B.expm_truncated(Mt, order).numpy(), _series(M, order), atol=1e-12)


@pytest.mark.parametrize("order", B.TRUNCATED_ORDERS)
def test_truncated_error_is_of_order_p_plus_one(order):
    M = np.random.default_rng(order).standard_normal((5, 5))
    M /= np.linalg.norm(M)
    errs = [np.linalg.norm(B.expm_truncated(t * M, order) - scipy.linalg.expm(t * M))
            for t in (0.02, 0.04)]
    assert abs(math.log2(errs[1] / errs[0]) - (order + 1)) < 0.3


@needs_torch
def test_expm_agrees_between_backends_and_in_bfloat16():
    M = np.random.default_rng(0).standard_normal((4, 4)) / 3
    np.testing.assert_allclose(B.expm(torch.as_tensor(M)).numpy(), scipy.linalg.expm(M), atol=1e-12)
    low = B.expm(torch.as_tensor(M, dtype=torch.bfloat16))
    assert low.dtype == torch.bfloat16
    np.testing.assert_allclose(low.float().numpy(), scipy.linalg.expm(M), atol=0.05)


@pytest.mark.parametrize("order", [0, 5, 1.5, "2"])
def test_bad_order(order):
    with pytest.raises(ValueError, match="order must be one of"):
        B.expm_truncated(np.eye(2), order)


def test_namespace_dispatch():
    assert B.namespace(np.ones(2)).name == "numpy"
    assert B.namespace([1.0, 2.0], 3.0).name == "numpy"
    if torch is not None:
        assert B.namespace(torch.ones(2), 1.0).name == "torch"
        with pytest.raises(TypeError, match="cannot mix"):
            B.namespace(torch.ones(2), np.ones(2))
    with pytest.raises(ValueError, match="valid backends"):
        B.get_backend("jax")


@pytest.mark.parametrize("backend", ["numpy", pytest.param("torch", marks=needs_torch)])
def test_random_stream_is_reproducible_and_checkpointable(backend):
    a, b = B.RandomStream(7, backend), B.RandomStream(7, backend)
    xa, xb = a.normal((3, 4)), b.normal((3, 4))
    assert B.get_backend(backend).to_numpy(xa).tolist() == B.get_backend(backend).to_numpy(xb).tolist()
    state = a.state_dict()
    first = B.get_backend(backend).to_numpy(a.normal(5))
    c = B.RandomStream(123, backend)
    c.load_state_dict(state)
    np.testing.assert_array_equal(B.get_backend(backend).to_numpy(c.normal(5)), first)
    other = B.RandomStream(8, backend).normal((3, 4))
    assert not np.allclose(B.get_backend(backend).to_numpy(other), B.get_backend(backend).to_numpy(xa))
    kids = a.spawn(2)
    k0, k1 = (B.get_backend(backend).to_numpy(k.normal(1000)) for k in kids)
    assert abs(np.corrcoef(k0, k1)[0, 1]) < 0.15  # independent streams
    assert abs(k0.mean()) < 0.15 and abs(k0.std() - 1) < 0.1


@needs_torch
def test_random_stream_dtypes_and_state_mismatch():
    s = B.RandomStream(0, "torch")
    assert s.normal(3, dtype=torch.bfloat16).dtype == torch.bfloat16
    f32 = B.RandomStream(0, "torch").normal(3, dtype=torch.float32)
    bf = B.RandomStream(0, "torch").normal(3, dtype=torch.bfloat16)
    np.testing.assert_allclose(bf.float().numpy(), f32.numpy(), rtol=1e-2)  # same draws, rounded
    with pytest.raises(ValueError, match="backend"):
        B.RandomStream(0, "numpy").load_state_dict(s.state_dict())


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 1500), threads=st.integers(1, 3),
       seed=st.integers(0, 2**31), dtype=st.sampled_from([np.float32, np.float64]))
def test_random_stream_lanes_shapes_dtypes_and_reproducibility(rows, cols, threads, seed, dtype):
    """Lanes give the asked shape and dtype, the same numbers for the same (seed, threads), and a
    draw too small for lanes is the single stream's."""
    a, b = B.RandomStream(seed, threads=threads), B.RandomStream(seed, threads=threads)
    x, y = a.normal((rows, cols), dtype=dtype), b.normal((rows, cols), dtype=dtype)
    assert x.shape == (rows, cols) and x.dtype == dtype
    np.testing.assert_array_equal(x, y)
    if rows * cols < 1 << 14 or rows < threads:
        np.testing.assert_array_equal(x, B.RandomStream(seed).normal((rows, cols), dtype=dtype))
    assert B.RandomStream(seed, threads=threads).spawn(1)[0].threads == threads


def test_random_stream_lanes_are_independent_normals():
    x = B.RandomStream(3, threads=2).normal((64, 1024))
    top, bottom = x[:32].ravel(), x[32:].ravel()
    assert abs(np.corrcoef(top, bottom)[0, 1]) < 0.02
    assert abs(top.std() - 1) < 0.02 and abs(bottom.mean()) < 0.02
    with pytest.raises(ValueError, match="threads"):
        B.RandomStream(0, threads=0)
    if torch is not None:
        with pytest.raises(ValueError, match="numpy backend"):
            B.RandomStream(0, "torch", threads=2)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), threads=st.integers(1, 2), first=st.integers(1, 30),
       second=st.integers(1, 30), cols=st.sampled_from([3, 700]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_prefetch_changes_no_number(seed, threads, first, second, cols, dtype):
    """A prefetched block is the next draw of its shape; a draw of another shape, a state_dict or a
    load_state_dict sees the stream as if nothing had been prefetched."""
    plain = B.RandomStream(seed, threads=threads)
    ahead = B.RandomStream(seed, threads=threads)
    ahead.prefetch((first, cols), dtype=dtype)  # taken
    np.testing.assert_array_equal(ahead.normal((first, cols), dtype=dtype),
                                  plain.normal((first, cols), dtype=dtype))
    ahead.prefetch((first, cols), dtype=dtype)  # dropped if the next draw is another shape
    state = ahead.state_dict()
    assert repr(state) == repr(plain.state_dict())
    np.testing.assert_array_equal(ahead.normal((second, cols), dtype=dtype),
                                  plain.normal((second, cols), dtype=dtype))
    ahead.prefetch(5)
    out = np.empty(5)
    assert ahead.normal(5, out=out) is out
    np.testing.assert_array_equal(out, plain.normal(5))
    ahead.prefetch(7)
    ahead.load_state_dict(state)  # drops the block
    resumed = B.RandomStream(seed, threads=threads)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(ahead.normal(7), resumed.normal(7))


def _draw_in_child(stream, queue):
    stream.prefetch((8, 3000))  # in lanes: the child needs lane threads of its own too
    queue.put(stream.normal((8, 3000)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_prefetch_in_a_forked_child_neither_hangs_nor_changes_numbers():
    """A forked child inherits the block's Future but not the thread that fills it: the child
    restores the generators and draws with threads of its own.  The block is large (6e6 numbers,
    tens of ms) so that the fork lands while the parent's threads draw: the generators' locks are
    then held at the fork, for ever in the child, which must draw with generators of its own."""
    import multiprocessing

    stream, plain = B.RandomStream(4, threads=2), B.RandomStream(4, threads=2)
    stream.prefetch((200, 30_000))  # being drawn at the fork
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_draw_in_child, args=(stream, queue))
    child.start()
    try:
        got = queue.get(timeout=30)
    finally:
        child.join(timeout=30)
        if child.is_alive():  # a hung child must not hang the test run at exit
            child.kill()
            child.join()
    np.testing.assert_array_equal(got, plain.normal((8, 3000)))


def test_prefetch_rejects_torch_and_bad_dtypes():
    with pytest.raises(ValueError, match="float32 or float64"):
        B.RandomStream(0).prefetch(3, dtype=np.int64)
    if torch is not None:
        with pytest.raises(ValueError, match="numpy backend"):
            B.RandomStream(0, "torch").prefetch(3)


def test_numpy_stream_rejects_devices_and_ints():
    with pytest.raises(ValueError, match="CPU only"):
        B.RandomStream(0, "numpy", device="cuda")
    with pytest.raises(ValueError, match="float32 or float64"):
        B.RandomStream(0).normal(3, dtype=np.int64)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 2**31), scale=st.floats(1e-3, 30.0))
def test_phi_matches_the_block_exponential(n, seed, scale):
    K = np.random.default_rng(seed).standard_normal((n, n)) * scale / n
    block = np.zeros((2 * n, 2 * n))
    block[:n, :n], block[:n, n:] = K, np.eye(n)
    ref = scipy.linalg.expm(block)[:n, n:]
    np.testing.assert_allclose(B.phi(K), ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    if torch is not None:
        np.testing.assert_allclose(B.phi(torch.as_tensor(K)).numpy(), ref, rtol=1e-10,
                                   atol=1e-12 * np.abs(ref).max())
