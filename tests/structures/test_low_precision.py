"""bfloat16: every structure samples, takes a natural gradient and retracts in torch bf16, and the
results follow the float64 computation to bf16 accuracy (8 bits of mantissa)."""

import numpy as np
import pytest

from natgrad_es.structures import from_state_dict, make

torch = pytest.importorskip("torch")

CASES = [("full", {}), ("diagonal", {}), ("blockdiag", {"blocks": 3}), ("kronecker", {"shape": (3, 4)}),
         ("lowrank", {"rank": 3}), ("spectral", {})]


def _as(factor, dtype):
    state = factor.state_dict()

    def conv(v):
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, torch.Tensor):
            return v.to(dtype)
        if isinstance(v, str) and v.startswith(("float", "bfloat")):
            return str(dtype).removeprefix("torch.")
        return v

    return from_state_dict(conv(state))


@pytest.mark.parametrize("name, kw", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("method", ["expm", "truncated"])
def test_bfloat16_follows_float64(name, kw, method):
    gen = torch.Generator().manual_seed(0)
    ref = make(name, 12, backend="torch", dtype="float64", **kw)
    Z = torch.randn(8, 12, generator=gen, dtype=torch.float64)
    w = torch.linspace(0.5, -0.5, 8, dtype=torch.float64)
    ref = ref.retract(ref.natural_gradient(Z, w), 0.2)  # a non-trivial starting factor
    low = _as(ref, torch.bfloat16)
    outs = []
    for f in (ref, low):
        Zf, wf = Z.to(f.dtype), w.to(f.dtype)
        _, T0 = f.split_trace(f.natural_gradient(Zf, wf))
        g = f.retract(T0, 0.1, method=method, order=2)
        assert g.dtype == f.dtype
        outs.append((g.to_dense().double(), g.apply(Zf).double(), float(g.logdet())))
    scale = outs[0][0].abs().max().item()
    assert (outs[1][0] - outs[0][0]).abs().max().item() < 3e-2 * scale
    assert (outs[1][1] - outs[0][1]).abs().max().item() < 5e-2 * outs[0][1].abs().max().item()
    assert abs(outs[1][2] - outs[0][2]) < 0.1
    assert np.isfinite(outs[1][0].numpy()).all()
