"""structures.make: names, keywords, backends and clear errors."""

import numpy as np
import pytest

from natgrad_es import structures
from natgrad_es.structures import make, names

KW = {"full": {}, "diagonal": {}, "blockdiag": {"blocks": 2}, "kronecker": {"shape": (2, 3)},
      "lowrank": {"rank": 2}, "spectral": {}, "lowrank-cov": {"rank": 2}, "lowrank-precision": {"rank": 2}}


@pytest.mark.parametrize("name", names())
def test_make_gives_the_identity(name):
    f = make(name, 6, **KW[name])
    assert f.dim == 6 and f.name == name
    np.testing.assert_array_equal(f.to_dense(), np.eye(6))
    assert f.logdet() == 0.0
    assert structures.from_state_dict(f.state_dict()).name == name


@pytest.mark.parametrize("name", names())
def test_make_in_torch(name):
    torch = pytest.importorskip("torch")
    f = make(name, 6, backend="torch", dtype="float32", **KW[name])
    assert f.xp.name == "torch" and f.dtype == torch.float32
    out = f.apply(torch.ones(3, 6))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32


def test_unknown_name_lists_valid_names():
    valid = "valid names: full, diagonal, blockdiag, kronecker, lowrank, spectral"
    with pytest.raises(ValueError, match=valid):
        make("tridiagonal", 4)


def test_keywords_are_checked():
    with pytest.raises(TypeError, match="needs the keyword 'rank'"):
        make("lowrank", 4)
    with pytest.raises(TypeError, match="unexpected keyword"):
        make("full", 4, rank=2)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        make("diagonal", 0)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        make("full", 2.5)


def test_aliases():
    assert make("dense", 3).name == "full" and make("diag", 3).name == "diagonal"


def test_from_state_dict_rejects_unknown():
    with pytest.raises(ValueError, match="unknown structure"):
        structures.from_state_dict({"structure": "nope"})
    with pytest.raises(ValueError, match="not a 'full' state_dict"):
        structures.Dense.from_state_dict({"structure": "diagonal", "a": np.ones(2)})
