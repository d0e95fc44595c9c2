"""``LogJoint``: one call that returns ℓ = −log p(x, data), its gradients and Hessian-vector products.

A user writes ``log_joint(X)`` for a batch of rows X (n, d) returning n values.  The VI estimators
need ℓ(xᵢ) = −log_joint(xᵢ), ∇ℓ(xᵢ) and products ∇²ℓ(xᵢ) v for a few directions v shared by every
row.  They come from one of two sources:

* **torch autograd** (the default when ``log_joint`` is written with torch operations): the function
  is called once per step on all rows; gradients are one backward pass, each Hessian-vector product
  one more (double backward).  A numpy state is converted to float64 tensors and back.
* **callables** for numpy users: ``grad(X)`` → (n, d) rows ∇ log_joint, and ``hvp(X, V)`` → (n, d)
  rows ∇² log_joint(xᵢ) vᵢ or ``hess(X)`` → (n, d, d).  They are derivatives of *log_joint* (the
  sign users write); the oracle flips them to ℓ.

Which source is used is decided on the first call: user callables win; otherwise ``log_joint`` is
tried on a torch tensor and used through autograd if it returns a tensor; otherwise values only
(enough for the zeroth-order estimator).  Every output is checked for shape and finiteness, with an
error that names the function, the expected and the received shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend as B

__all__ = ["LogJoint", "Evaluation", "VIWarning"]


class VIWarning(UserWarning):
    """Warnings of the variational-inference layer (refused steps, reduced step sizes, …)."""


@dataclass(frozen=True)
class Evaluation:
    """ℓ(xᵢ) (n,), ∇ℓ(xᵢ) (n, d) or None, and H(xᵢ)vⱼ as (k, n, d) or None — in the caller's backend."""

    values: Any
    grads: Any = None
    hvps: Any = None


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:  # pragma: no cover - torch is optional
        return False
    return True


class LogJoint:
    """ℓ = −log_joint with derivatives, from torch autograd or user callables (see module docstring).

    Args:
        log_joint: X (n, d) → (n,) values of log p(x, data).
        dim: d.
        grad: optional, X → (n, d) rows ∇ log_joint(xᵢ) (numpy users).
        hvp: optional, (X, V) → (n, d) rows ∇² log_joint(xᵢ) vᵢ.
        hess: optional, X → (n, d, d) Hessians of log_joint.

    Attributes:
        source: "torch", "callables" or "values" once the first call has decided it.
        n_values, n_grads, n_hvps: counts of rows evaluated, gradients and Hessian-vector products.
    """

    def __init__(self, log_joint: Callable, dim: int, *, grad: Callable | None = None,
                 hvp: Callable | None = None, hess: Callable | None = None):
        for name, f in (("log_joint", log_joint), ("grad", grad), ("hvp", hvp), ("hess", hess)):
            if f is not None and not callable(f):
                raise TypeError(f"{name} must be callable, got {type(f).__name__}")
        if log_joint is None:
            raise TypeError("log_joint is required: a function of a batch X (n, d) returning n values")
        self.fn, self.dim = log_joint, dim
        self._grad, self._hvp, self._hess = grad, hvp, hess
        self.source: str | None = "callables" if (grad or hvp or hess) else None
        self.n_values = self.n_grads = self.n_hvps = 0
        self._batched_hvp = True

    # -- capabilities ------------------------------------------------------------------------------
    def can(self, need: str) -> bool:
        """Whether the oracle supplies ``need`` ("values", "grad", "hvp"); decided on first call."""
        if need == "values":
            return True
        if self.source == "torch":
            return True
        if self.source == "callables":
            return self._grad is not None if need == "grad" else (
                self._hvp is not None or self._hess is not None)
        return False

    def require(self, need: str, estimator: str) -> None:
        if not self.can(need):
            what = {"grad": "gradients (pass grad=)",
                    "hvp": "Hessian-vector products (pass hvp= or hess=)"}[need]
            raise ValueError(f"estimator {estimator!r} needs {what}: write log_joint with torch operations "
                             f"so that autograd supplies them, or pass the callables (derivatives of "
                             f"log_joint); estimator 'zeroth' needs values only")

    # -- evaluation --------------------------------------------------------------------------------
    def __call__(self, X, *, grad: bool = False, directions=None) -> Evaluation:
        """Evaluate ℓ at the rows of X; with ``grad`` also ∇ℓ; with ``directions`` (k, d) also
        H(xᵢ)vⱼ for every row i and direction j (as (k, n, d))."""
        xp = B.namespace(X)
        self.prepare(X)
        need_grad = grad or directions is not None
        if self.source == "torch":
            ev = self._torch_eval(X, xp, need_grad, directions)
        else:
            ev = self._callable_eval(X, xp, need_grad, directions)
        n = X.shape[0]
        self.n_values += n
        self.n_grads += n if need_grad else 0
        self.n_hvps += n * (0 if directions is None else directions.shape[0])
        return ev

    def prepare(self, X) -> str:
        """Decide the source of derivatives (once), probing ``log_joint`` at the rows X."""
        if self.source is None:
            self.source = self._detect(X)
        return self.source

    def _detect(self, X) -> str:
        if not _torch_available():
            return "values"
        import torch

        if B.is_torch(X):
            Xt = X.detach().clone()
        else:
            Xt = torch.as_tensor(np.asarray(X), dtype=torch.float64)
        Xt.requires_grad_(True)
        try:
            with torch.enable_grad():
                out = self.fn(Xt)
        except Exception:  # a numpy-only function: values only
            return "values"
        return "torch" if isinstance(out, torch.Tensor) else "values"

    def _check_values(self, out, n: int):
        shape = tuple(getattr(out, "shape", ()))
        if shape != (n,):
            raise ValueError(f"log_joint must return one value per row: expected shape ({n},) for X of "
                             f"shape ({n}, {self.dim}), got {shape if shape else type(out).__name__}")

    def _finite(self, arr, what: str, xp: B.Backend) -> None:
        if not xp.all_finite(arr):
            bad = int((~xp.isfinite(arr)).sum())
            raise ValueError(f"{what} returned {bad} non-finite value(s) (NaN or inf); check the model "
                             f"for overflow at these parameters, or start closer (init_mean, smaller "
                             f"init_scale) / take smaller steps (lr)")

    def _torch_eval(self, X, xp: B.Backend, need_grad: bool, directions) -> Evaluation:
        import torch

        n = X.shape[0]
        if xp.name == "torch":
            Xt = X.detach()
        else:
            Xt = torch.as_tensor(np.asarray(X), dtype=torch.float64)
        Xt = Xt.clone().requires_grad_(need_grad)
        with torch.enable_grad():
            out = self.fn(Xt)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"log_joint returned {type(out).__name__} for a torch input; it was "
                                f"detected as a torch function and must keep returning tensors")
            self._check_values(out, n)
            ell = -out.to(Xt.dtype)
            self._finite(ell.detach(), "log_joint", B.get_backend("torch"))
            grads = hvps = None
            if need_grad:
                g = torch.autograd.grad(ell.sum(), Xt, create_graph=directions is not None,
                                        allow_unused=True)[0]
                if g is None:
                    g = torch.zeros_like(Xt)
                grads = g
                if directions is not None:
                    D = directions.detach() if xp.name == "torch" else torch.as_tensor(
                        np.asarray(directions), dtype=Xt.dtype)
                    D = D.to(dtype=Xt.dtype, device=Xt.device)
                    hvps = self._torch_hvps(torch, g, Xt, D)
                grads = grads.detach()
        values = ell.detach()
        tb = B.get_backend("torch")
        if grads is not None:
            self._finite(grads, "the gradient of log_joint", tb)
        if hvps is not None:
            self._finite(hvps, "a Hessian-vector product of log_joint", tb)
        if xp.name == "numpy":
            values = values.numpy()
            grads = None if grads is None else grads.numpy()
            hvps = None if hvps is None else hvps.numpy()
        else:
            values, grads, hvps = (None if a is None else a.to(X.dtype) for a in (values, grads, hvps))
        return Evaluation(values, grads, hvps)

    def _torch_hvps(self, torch, g, Xt, D):
        """H(xᵢ)vⱼ for all rows i and directions j, as (k, n, d): one batched double-backward (vmap),
        falling back to a loop over j for functions vmap cannot trace."""
        k, (n, d) = D.shape[0], Xt.shape
        if not g.requires_grad:  # log_joint is linear in x: its Hessian is 0
            return torch.zeros((k, n, d), dtype=Xt.dtype, device=Xt.device)
        V = D[:, None, :].expand(k, n, d)
        if self._batched_hvp:
            try:
                h = torch.autograd.grad(g, Xt, grad_outputs=V, retain_graph=True, allow_unused=True,
                                        is_grads_batched=True)[0]
                return torch.zeros((k, n, d), dtype=Xt.dtype, device=Xt.device) if h is None else h.detach()
            except RuntimeError:
                self._batched_hvp = False
        hv = []
        for j in range(k):
            h = torch.autograd.grad(g, Xt, grad_outputs=V[j], retain_graph=True, allow_unused=True)[0]
            hv.append(torch.zeros_like(Xt) if h is None else h)
        return torch.stack(hv).detach()

    def _callable_eval(self, X, xp: B.Backend, need_grad: bool, directions) -> Evaluation:
        n, d = X.shape
        out = self.fn(X)
        if xp.name == "numpy" and B.is_torch(out):
            out = out.detach().numpy()
        self._check_values(out, n)
        ell = -xp.asarray(out, dtype=X.dtype, device=xp.device_of(X))
        self._finite(ell, "log_joint", xp)
        grads = hvps = None
        if need_grad:
            if self._grad is None:
                raise ValueError("gradients are needed: pass grad= (the gradient of log_joint)")
            g = xp.asarray(self._grad(X), dtype=X.dtype, device=xp.device_of(X))
            if tuple(g.shape) != (n, d):
                raise ValueError(f"grad must return rows of gradients, shape ({n}, {d}), got "
                                 f"{tuple(g.shape)}")
            grads = -g
            self._finite(grads, "grad", xp)
        if directions is not None:
            if self._hess is not None:
                H = xp.asarray(self._hess(X), dtype=X.dtype, device=xp.device_of(X))
                if tuple(H.shape) != (n, d, d):
                    raise ValueError(f"hess must return one Hessian per row, shape ({n}, {d}, {d}), got "
                                     f"{tuple(H.shape)}")
                hvps = -xp.einsum("nij,kj->kni", H, directions)
            elif self._hvp is not None:
                hv = []
                for j in range(directions.shape[0]):
                    V = directions[j][None, :] + 0 * X
                    h = xp.asarray(self._hvp(X, V), dtype=X.dtype, device=xp.device_of(X))
                    if tuple(h.shape) != (n, d):
                        raise ValueError(f"hvp must return rows ∇²log_joint(xᵢ)vᵢ, shape ({n}, {d}), got "
                                         f"{tuple(h.shape)}")
                    hv.append(-h)
                hvps = xp.stack(hv)
            else:
                raise ValueError("Hessian-vector products are needed: pass hvp= or hess=")
            self._finite(hvps, "hvp/hess", xp)
        return Evaluation(ell, grads, hvps)
