"""The two update rules of ``NaturalES``, as pure functions of (state, Z, f, parameters).

Notation of algorithms.md: the search distribution is N(m, σ² A Aᵀ), a generation's samples are the
rows zᵢ ~ N(0, I) of Z (n×d) and xᵢ = m + σ A zᵢ.  Both rules only talk to the ``Factor``
interface: ``apply`` (rows A z), ``natural_gradient(Z, w)`` (the projection of Σᵢ wᵢ(zᵢzᵢᵀ − I) onto
the structure's Lie algebra), ``split_trace`` and ``retract`` (A ← A·h(t M)); they never know
which structure they drive.

**Path rule** (``method="path"``, algorithms.md §2b; CMA-ES's update [Hansen 2016] written in local
coordinates).  With CMA weights w⁺ (Σ = 1, best μ), w⁻ (Σ |w⁻| = 1, worst n − μ):

    z̄ = Σᵢ w⁺ᵢ zᵢ                                          m ← m + c_m σ A z̄
    p_σ ← (1 − c_σ) p_σ + √(c_σ(2 − c_σ) μ_eff) z̄           σ ← σ exp(min(1, (c_σ/d_σ)(‖p_σ‖/E‖N‖ − 1)))
    p_c ← (1 − c_c) p_c + h_σ √(c_c(2 − c_c) μ_eff) z̄
    M = c₁ (p_c p_cᵀ − I) + c_μ Σᵢ w⁺ᵢ (zᵢzᵢᵀ − I) + c_μ α⁻ Σⱼ w⁻ⱼ (ẑⱼẑⱼᵀ − I) + c₁(1 − h_σ)c_c(2 − c_c) I
    A ← A · expm(½ Π(M))                                   ẑ = z √d/‖z‖

where Π is the structure's projection: ``natural_gradient`` of the rows [z⁺…, ẑ⁻…, p_c] with the
weights [c_μ w⁺…, c_μ α⁻ w⁻…, c₁].  The trace of M stays in A (as the trace of CMA-ES's ΔC stays in
C); σ moves by the path length only.  Paths live in z-space for every structure; ``transport``
optionally carries them along when A moves (p ← A_new⁻¹ A_old p).

**Step size: CSA or TPA** (``step_size``; default CSA).  CSA is the σ update above.  Two-point
adaptation (TPA, Hansen 2008; pycma ``CMAAdaptSigmaTPA``, which pycma uses from d = 300 on) samples
the first two solutions of a generation along the last mean shift, z₁ = ℓ z̄_prev/‖z̄_prev‖ and
z₂ = −z₁ (ℓ the length of a fresh N(0, I) sample; they take part in the update like any other
row), and moves σ by which of the two ranks better:

    r = (#{i: fᵢ < f₂} − #{i: fᵢ < f₁}) / (n − 1) ∈ [−1, 1]
    s ← (1 − c) s + c sign(r) |r|^{1/2}          σ ← σ exp(s / d_TPA)        (c = 0.3)

with d_TPA = 0.7 + 2 ln d + 2 ln max(1, n − d).  A generation whose first two told rows are not
the pair (reordered or changed by the user) leaves s as it is.  At large d CSA settles at a
normalised step about 1.4× that of TPA, and TPA is faster on the sphere, but it keeps σ small
while the covariance is still learning, which stalls the diagonal adaptation on ill-conditioned
problems (``defaults.step_size_rule`` has the figures) — hence CSA stays the default.

**Momentum in local coordinates** (``momentum=α``, 0 ≤ α < 1; seed 000, Lin et al. ICML 2023,
algorithms-sources.md §4).  Let M_t be the generation's shape tangent — the tangent the rule
retracts with: the path rule's M above (its trace included, which stays in A), the xNES rule's
traceless G_A below.  The step uses the average

    V₁ = M₁,     V_t = α · T(V_{t−1}) + (1 − α) · M_t,        A ← A · h(t · V_t)

with T = ``Factor.transport`` from A_{t−1} to A_t (the identity on 𝔤 for the matrix groups, an
exact re-expression through QᵀQ' for "spectral"); ``State.velocity`` holds T(V_t), a tangent at
the new factor.  The (1 − α) form keeps the learning rates' meaning (at a fixed point V = M) and
starts from M₁ itself, as ``vi.GaussianVI(momentum=α)`` does.  Only the shape gets momentum: the
mean and σ of the path rule already move by evolution paths (p_σ is a cumulation of z̄, CSA), and
a heavy-ball mean w_t = α w_{t−1} + (1 − α) z̄_t, m ← m + c_m σ A w_t, measured worse with the
path rule (α = 0.9 missed f < 1e-8 in most runs: CSA's p_σ measures z̄ while the mean moves by w)
and within ±3% with xNES (``benchmarks/es_momentum.py --mean``, RESULTS.md "ES momentum").
Measured, shape momentum is neutral to costly on noiseless quadratics (path rule α = 0.9: +4 to +26%
evaluations; xNES ±2%); on noisy ones it leaves xNES's noise floor unchanged and gives the path rule
mixed results (its runs spread over two orders of magnitude).  α = 0 (default) is the rule without
momentum, bit for bit.

**Backends.**  numpy: f is a float64 numpy array and σ, h_σ, s are Python numbers.  torch: f is a
tensor on the factor's device and every quantity of the step, σ, ‖p_σ‖, h_σ and s included, stays
a 0-d tensor there, so a generation needs no host round-trip (``if`` on h_σ becomes arithmetic).
Both write the shape update with one row per sample instead of the rows [z⁺…, ẑ⁻…] (whose
number depends on the ranks, i.e. on the data, and which would copy Z): since ẑẑᵀ = (d/‖z‖²) zzᵀ,

    Σᵢ wᵢ⁺ (zᵢzᵢᵀ − I) + α⁻ Σⱼ wⱼ⁻ (ẑⱼẑⱼᵀ − I) = Σᵢ cᵢ (zᵢzᵢᵀ − I) + (Σᵢ cᵢ − Σ w⁺ − α⁻Σ w⁻) I,
    cᵢ = wᵢ⁺ + α⁻ wᵢ⁻ d/‖zᵢ‖²,

the same tangent (Π(I) = I for every structure) from n + 1 rows, whatever the ranks are.  The mean
m, σ, the paths p_σ, p_c and the weighted sums z̄ = Σ w zᵢ are kept in the mean's dtype, which is
float32 when the factor is bfloat16 (``NaturalES``): only the factor and the samples are bf16.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend as B
from ..structures import Factor, Tangent
from . import defaults
from .options import Options
from .shaping import RecombinationWeights, assign, rank_dtype, recombination_weights, xnes_utilities

__all__ = ["State", "PathParameters", "XNESParameters", "path_parameters", "xnes_parameters",
           "path_update", "xnes_update", "shape_step", "parameters", "update", "on_device"]


@dataclass(frozen=True)
class State:
    """The distribution N(m, σ² A Aᵀ) and the rule's memory; immutable (rules return a new one).

    Attributes:
        mean: m, shape (d,), in the factor's backend (float32 for a bfloat16 factor).
        sigma: σ > 0, a Python float (numpy) or a 0-d tensor of the mean's dtype (torch).
        factor: A.
        p_sigma, p_c: the z-space evolution paths, shape (d,) (zero and unused for xNES).
        iteration: generations completed.
        tpa_s: the TPA state s (step size rule ``"tpa"``; 0 otherwise; a 0-d tensor on torch).
        zbar: the last generation's z̄ = Σ w⁺ᵢ zᵢ (the mean shift in z-space; the direction of the
            TPA pair), None before the first update.
        velocity: the momentum buffer T(V_t), a ``Tangent`` at ``factor`` (module docstring); None
            without momentum and before the first update.
    """

    mean: Any
    sigma: Any
    factor: Factor
    p_sigma: Any
    p_c: Any
    iteration: int = 0
    tpa_s: Any = 0.0
    zbar: Any = None
    velocity: Tangent | None = None


@dataclass(frozen=True)
class PathParameters:
    """Constants of the path rule for one population size (``defaults`` gives the formulas)."""

    n: int
    weights: RecombinationWeights
    c_m: float
    c_sigma: float
    d_sigma: float
    c_c: float
    c_1: float
    c_mu: float
    alpha_minus: float
    hsig_threshold: float | None
    expected_norm: float
    max_delta_log_sigma: float
    transport: str
    retraction: str
    order: int
    step_size: str = "csa"
    tpa_damp: float = 1.0
    tpa_c: float = 0.3
    momentum: float = 0.0


@dataclass(frozen=True)
class XNESParameters:
    """Constants of the xNES rule for one population size."""

    n: int
    utilities: np.ndarray
    eta_m: float
    eta_sigma: float
    eta_A: float
    retraction: str
    order: int
    momentum: float = 0.0


def _pick(value, default):
    return default if value is None else float(value)


def path_parameters(d: int, n: int, num_parameters: int, options: Options) -> PathParameters:
    """The path rule's constants for dimension d, population n and a structure with P parameters."""
    w = recombination_weights(n)
    constants = options.constants
    dof = defaults.covariance_dof(d, num_parameters)
    cs = _pick(options.c_sigma, defaults.c_sigma(d, w.mu_eff, constants))
    mult = _pick(options.rate_multiplier, defaults.rate_multiplier(d, dof))
    base_c1 = defaults.c_1(d, w.mu_eff, dof, n, constants)
    c1 = _pick(options.c_1, mult * base_c1)
    cmu = options.c_mu
    if cmu is None:
        cmu = max(0.0, min(1 - c1, mult * defaults.c_mu(d, w.mu_eff, dof, base_c1, constants)))
    alpha = 0.0
    if options.active and w.mu_eff_minus > 0:
        alpha = _pick(options.alpha_minus, defaults.alpha_minus(c1, cmu, w.mu_eff, w.mu_eff_minus))
    return PathParameters(
        n=n, weights=w,
        c_m=_pick(options.c_m, defaults.c_m()),
        c_sigma=cs,
        d_sigma=_pick(options.d_sigma, defaults.d_sigma(d, w.mu_eff, cs, constants)),
        c_c=_pick(options.c_c, defaults.c_c(d, w.mu_eff, dof)),
        c_1=float(c1), c_mu=float(cmu), alpha_minus=alpha,
        hsig_threshold=defaults.hsig_threshold(d, constants) if options.hsig else None,
        expected_norm=defaults.expected_norm(d),
        max_delta_log_sigma=defaults.max_delta_log_sigma(),
        transport=options.transport, retraction=options.retraction, order=options.order,
        step_size=options.step_size or defaults.step_size_rule(d),
        tpa_damp=defaults.tpa_damping(d, n), tpa_c=defaults.tpa_cumulation(),
        momentum=float(options.momentum))


def xnes_parameters(d: int, n: int, num_parameters: int, options: Options) -> XNESParameters:
    """The xNES rule's learning rates (SNES's for the diagonal structure)."""
    return XNESParameters(
        n=n, utilities=xnes_utilities(n),
        eta_m=_pick(options.eta_m, defaults.xnes_eta_m()),
        eta_sigma=_pick(options.eta_sigma, defaults.xnes_eta_sigma(d, num_parameters)),
        eta_A=_pick(options.eta_A, defaults.xnes_eta_A(d, num_parameters)),
        retraction=options.retraction, order=options.order, momentum=float(options.momentum))


def parameters(d: int, n: int, num_parameters: int, options: Options):
    """The parameters of ``options.method`` for population size n."""
    if options.method == "xnes":
        return xnes_parameters(d, n, num_parameters, options)
    return path_parameters(d, n, num_parameters, options)


def on_device(params, device):
    """``params`` with its utility tables as tensors on ``device`` (converted once, not per
    generation: a host-to-device copy each generation would be a round-trip of its own)."""
    import torch

    def dev(table):
        return torch.as_tensor(table, dtype=rank_dtype(device), device=device)

    if isinstance(params, XNESParameters):
        return dataclasses.replace(params, utilities=dev(params.utilities))
    w = params.weights
    return dataclasses.replace(params, weights=dataclasses.replace(
        w, positive=dev(w.positive), negative=dev(w.negative)))


def update(state: State, Z, f: np.ndarray, params, tpa_pair: bool = False) -> State:
    """One generation of the rule that ``params`` belongs to (``tpa_pair``: rows 0 and 1 of Z are
    the TPA pair, see ``path_update``)."""
    if isinstance(params, XNESParameters):
        return xnes_update(state, Z, f, params)
    return path_update(state, Z, f, params, tpa_pair)


def path_update(state: State, Z, f, p: PathParameters, tpa_pair: bool = False) -> State:
    """One generation of the path rule (module docstring).

    Args:
        state: the current state.
        Z: (n, d) the generation's z-vectors, in the factor's backend.
        f: (n,) comparable f values (non-finite ones already mapped to +inf): float64 numpy, or a
            tensor on the factor's device (torch).
        p: ``path_parameters`` for this n (``on_device`` for torch).
        tpa_pair: rows 0 and 1 are the TPA pair ±ℓ z̄_prev/‖z̄_prev‖ (step size ``"tpa"``).
    """
    A, xp = state.factor, state.factor.xp
    d = A.dim
    t = state.iteration + 1
    if p.alpha_minus > 0:
        w_pos, w_neg = assign(f, p.weights.table)
    else:
        w_pos = assign(f, p.weights.positive)
        w_neg = 0 * w_pos

    zbar = _weighted_sum(A, w_pos, Z, state.mean.dtype)
    mean = state.mean + (p.c_m * state.sigma) * A.apply(zbar)
    mu_eff = p.weights.mu_eff
    ps = (1 - p.c_sigma) * state.p_sigma + math.sqrt(p.c_sigma * (2 - p.c_sigma) * mu_eff) * zbar
    ps_sq = _scalar((ps * ps).sum())
    hsig = True
    if p.hsig_threshold is not None:
        if B.is_torch(t):  # a device counter (a replayed CUDA graph, ``graphs``): float64 power
            torch = xp._module  # a fill, not a host copy: allowed in a capture
            decay = torch.full((), 1 - p.c_sigma, dtype=torch.float64, device=t.device) ** (2 * t)
        else:
            decay = (1 - p.c_sigma) ** (2 * t)
        hsig = ps_sq / (1 - decay) / d < p.hsig_threshold
    pc = (1 - p.c_c) * state.p_c
    pc = _where(hsig, pc + math.sqrt(p.c_c * (2 - p.c_c) * mu_eff) * zbar, pc)

    T = _shape_gradient(A, Z, w_pos, w_neg, pc, p)
    if p.c_1 > 0:  # the identity that the stalled rank-one path leaves out (h_σ = 0)
        stalled = p.c_1 * p.c_c * (2 - p.c_c)
        if B.is_torch(hsig):
            T = T.add_identity((~hsig).to(A.dtype) * stalled)
        elif not hsig:
            T = T.add_identity(stalled)
    A_new, velocity = shape_step(A, T, state.velocity, p.momentum, 0.5, p.retraction, p.order)

    s_tpa = state.tpa_s
    if p.step_size == "tpa":
        if tpa_pair and len(f) > 2:
            if xp.name == "numpy":
                r = (np.sum(f < f[1]) - np.sum(f < f[0])) / (len(f) - 1)
                s_tpa = (1 - p.tpa_c) * s_tpa + p.tpa_c * math.copysign(abs(r) ** 0.5, r)
            else:
                r = ((f < f[1]).sum() - (f < f[0]).sum()).to(state.mean.dtype) / (len(f) - 1)
                s_tpa = (1 - p.tpa_c) * s_tpa + p.tpa_c * xp.sign(r) * xp.abs(r) ** 0.5
        log_step = s_tpa / p.tpa_damp
    else:
        log_step = (p.c_sigma / p.d_sigma) * (_sqrt(ps_sq) / p.expected_norm - 1)
    sigma = state.sigma * _exp_clipped(log_step, p.max_delta_log_sigma)
    if p.transport in ("pc", "both"):
        pc = A_new.solve(A.apply(pc)).to(pc.dtype) if xp.name == "torch" else A_new.solve(A.apply(pc))
    if p.transport == "both":
        ps = A_new.solve(A.apply(ps)).to(ps.dtype) if xp.name == "torch" else A_new.solve(A.apply(ps))
    return State(mean, sigma, A_new, ps, pc, t, _scalar(s_tpa), zbar, velocity)


#: entries of Z (n·d) from which p_c enters the natural gradient by a call of its own (the sum of
#: the two tangents, by linearity) rather than as a row appended to Z: appending copies Z, an
#: (n, d) pass that took 12% of a generation of the low rank at d = 3e4, n = 1e4 on an H200
SEPARATE_PATH_ROW = 2 ** 20


def _shape_gradient(A: Factor, Z, w_pos, w_neg, pc, p: PathParameters) -> Tangent:
    """The shape update M of the path rule (module docstring), identity part included.

    One row per sample, no copies of Z's rows: a negative row ẑ = z √d/‖z‖ enters as z with its
    weight scaled by d/‖z‖², since c (ẑẑᵀ − I) = c d/‖z‖² (zzᵀ − I) + c (d/‖z‖² − 1) I; p_c is
    the last row, weight c₁.
    """
    xp, d = A.xp, A.dim
    if xp.name == "numpy":
        sq = np.einsum("ij,ij->i", Z, Z)
        ratio = d / np.maximum(sq, xp.eps(A.dtype))
    else:
        torch = xp._module
        sq = torch.linalg.vector_norm(Z, dim=-1,
                                      dtype=torch.promote_types(Z.dtype, torch.float32)) ** 2
        ratio = d / sq.clamp(min=xp.eps(A.dtype))
    neg = (p.c_mu * p.alpha_minus) * w_neg
    shift = (neg * (ratio - 1)).sum()
    weights = p.c_mu * w_pos + neg * ratio
    row = None
    if p.c_1 > 0:
        row = pc[None, :].to(Z.dtype) if xp.name == "torch" else pc[None, :]
        path_weight = weights[:1] * 0 + p.c_1
    separate = row is not None and Z.shape[0] * d >= SEPARATE_PATH_ROW
    if row is not None and not separate:
        # one call: a structure's natural gradient has a fixed cost (projections)
        Z = xp.concat([Z, row], axis=0)
        weights = xp.concat([weights, path_weight], axis=0)
    T = A.natural_gradient(Z, _vector(A, weights))
    if separate:
        # a large Z: a second call for the p_c row costs less than a copy of Z with it appended
        T = T + A.natural_gradient(row, _vector(A, path_weight))
    return T.add_identity(float(shift) if xp.name == "numpy" else shift.to(A.dtype))


def xnes_update(state: State, Z, f, p: XNESParameters) -> State:
    """One generation of textbook xNES / SNES (module docstring); arguments as ``path_update``."""
    A = state.factor
    u = assign(f, p.utilities)
    g_m = _weighted_sum(A, u, Z, state.mean.dtype)
    g_sigma, G_A = A.split_trace(A.natural_gradient(Z, _vector(A, u)))
    mean = state.mean + (p.eta_m * state.sigma) * A.apply(g_m)
    if A.xp.name == "numpy":
        sigma = state.sigma * math.exp(0.5 * p.eta_sigma * float(g_sigma))
    else:
        sigma = state.sigma * A.xp.exp(0.5 * p.eta_sigma * g_sigma.to(state.mean.dtype))
    A_new, velocity = shape_step(A, G_A, state.velocity, p.momentum, 0.5 * p.eta_A, p.retraction,
                                 p.order)
    return State(mean, sigma, A_new, state.p_sigma, state.p_c, state.iteration + 1, state.tpa_s,
                 state.zbar, velocity)


def shape_step(A: Factor, M: Tangent, velocity: Tangent | None, momentum: float, step: float,
               retraction: str, order: int) -> tuple[Factor, Tangent | None]:
    """(A · h(step · V_t), T(V_t)) with V_t = α · velocity + (1 − α) · M_t (V₁ = M₁); without
    momentum (α = 0) just (A · h(step · M_t), None).

    ``velocity`` is T(V_{t−1}), a tangent at A; the returned buffer is V_t carried to A_new by
    ``Factor.transport`` (module docstring).
    """
    if not momentum:
        return A.retract(M, step, method=retraction, order=order), None
    V = M if velocity is None else velocity * momentum + M * (1.0 - momentum)
    A_new = A.retract(V, step, method=retraction, order=order)
    return A_new, A.transport(V, A_new)


# -- numpy / torch scalars: Python numbers on numpy (as before), 0-d tensors on torch -----------------


def _vector(factor: Factor, w):
    """Weights as an array of the factor's backend (a numpy array or a device tensor)."""
    if B.is_torch(w):
        return w
    return factor.xp.asarray(w, dtype=factor.dtype, device=factor.device)


def _weighted_sum(A: Factor, w, Z, dtype):
    """Σᵢ wᵢ zᵢ = wᵀ Z, accumulated in ``dtype`` (the mean's: float32 for bf16 samples)."""
    if A.xp.name == "numpy":
        return _vector(A, w) @ Z
    return w.to(dtype) @ Z.to(dtype)


def _scalar(x):
    """A 0-d numpy result as a Python float; a tensor stays on its device."""
    return x if B.is_torch(x) else float(x)


def _sqrt(x):
    return x.sqrt() if B.is_torch(x) else math.sqrt(x)


def _where(cond, a, b):
    """``a if cond else b`` for a Python bool, ``torch.where`` for a 0-d tensor (no host sync)."""
    if B.is_torch(cond):
        return B.get_backend("torch").where(cond, a, b)
    return a if cond else b


def _exp_clipped(x, limit: float):
    """exp(clip(x, −limit, limit))."""
    if B.is_torch(x):
        return B.get_backend("torch").exp(x.clamp(-limit, limit))
    return math.exp(max(-limit, min(limit, x)))
