"""Shared fixtures of the VI tests.

Small problems mix torch (autograd) and numpy (BLAS) calls every step; on a 2-core machine their
thread pools spin against each other and a 0.5 ms step takes 10 ms.  One thread each keeps the whole
VI test set well under its time budget.
"""

import pytest

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - comes with scikit-learn
    threadpool_limits = None

from vi_helpers import make_linear_regression


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    if threadpool_limits is None:
        yield
    else:
        with threadpool_limits(1):
            yield
    if torch is not None:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def blr():
    """Bayesian linear regression, d = 5, N = 50: posterior precision ~ 200 per direction."""
    return make_linear_regression()
