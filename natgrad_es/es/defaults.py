"""Default strategy parameters as functions of the dimension d and the structure, with sources.

Every number the evolution strategies use by default is computed here, from

* d, the dimension of the search space,
* n, the population size, and the recombination weights derived from it (``shaping``),
* P = ``factor.num_parameters``, the free parameters of the factor's group (dense d², diagonal d,
  block-triangular low rank k² + (d−k)k + (d−k), …), through ``covariance_dof``.

Each function names its source; each value can be overridden by the option of the same name on
``NaturalES`` (``c_sigma=…``, ``c_1=…``, …).  Sources, with the keys used below:

* [H16] N. Hansen, "The CMA Evolution Strategy: A Tutorial", arXiv:1604.00772 (2016, 2023 rev.),
  Table 1 and eqs. (44)–(58).
* [pycma] pycma 4.5.0, read in its code: ``options_parameters.CMAParameters``,
  ``interfaces.StatisticalModelSamplerWithZeroMeanBaseClass.parameters``,
  ``sigma_adaptation.CMAAdaptSigmaCSA`` and ``recombination_weights.RecombinationWeights``.
  Its separable ("diagonal") learning rates are written for a number of degrees of freedom
  (``conedf``, ``cmudf``); we use the same formulas for every non-dense structure.
* [RH08] R. Ros, N. Hansen, "A Simple Modification in CMA-ES Achieving Linear Time and Space
  Complexity", PPSN 2008 (sep-CMA-ES: the diagonal learning rates).
* [G10] T. Glasmachers, T. Schaul, Y. Sun, D. Wierstra, J. Schmidhuber, "Exponential Natural
  Evolution Strategies", GECCO 2010, Table 1 (xNES).
* [S11] T. Schaul, T. Glasmachers, J. Schmidhuber, "High Dimensions and Heavy Tails for Natural
  Evolution Strategies", GECCO 2011 (SNES).

Two constant sets are offered for the path-based rule (``constants=`` option): ``"pycma"`` (the
default: c_σ = (μ_eff+2)/(d+μ_eff+3), d_σ = 1 + c_σ + …, c_μ with the ¼ offset, c₁ scaled by
min(1, n/6)) and ``"tutorial"`` (c_σ = (μ_eff+2)/(d+μ_eff+5), c_μ without the ¼).  The benchmark
``benchmarks/es_vs_pycma.py --variants`` measures both; see ``algorithms.md`` §2b.
"""

from __future__ import annotations

import math

__all__ = [
    "CONSTANT_SETS",
    "popsize",
    "covariance_dof",
    "expected_norm",
    "c_m",
    "c_sigma",
    "d_sigma",
    "c_c",
    "c_1",
    "c_mu",
    "rate_multiplier",
    "alpha_minus",
    "hsig_threshold",
    "max_delta_log_sigma",
    "step_size_rule",
    "tpa_damping",
    "tpa_cumulation",
    "repair_length",
    "xnes_eta_m",
    "xnes_eta_sigma",
    "xnes_eta_A",
    "structure_rate_multiplier",
    "tolfun",
    "tolx",
    "tolcondition",
    "tolstagnation",
    "tolfun_history",
    "maxiter",
]

CONSTANT_SETS = ("pycma", "tutorial")


def _check_constants(constants: str) -> None:
    if constants not in CONSTANT_SETS:
        raise ValueError(f"constants must be one of {CONSTANT_SETS}, got {constants!r}")


# -- population and structure --------------------------------------------------------------------


def popsize(d: int) -> int:
    """n = 4 + ⌊3 ln d⌋  [H16 Table 1; G10 Table 1; S11]."""
    return 4 + int(math.floor(3 * math.log(d)))


def covariance_dof(d: int, num_parameters: int) -> float:
    """Degrees of freedom of the covariance σ²AAᵀ that the structure can change: min(P, d(d+1)/2).

    A dense A has P = d² parameters, but its antisymmetric directions (rotations, d(d−1)/2 of them)
    leave AAᵀ unchanged, so the dense count is d(d+1)/2 — the count behind CMA-ES's c₁ ≈ 2/d².
    For the other structures P is used as it is (exact for the diagonal; it counts the rotations
    of dense sub-blocks too, which errs towards smaller, safer learning rates).
    """
    return float(min(num_parameters, d * (d + 1) / 2))


def expected_norm(d: int) -> float:
    """E‖N(0, I_d)‖ ≈ √d (1 − 1/(4d) + 1/(21d²))  [H16 p. 29]."""
    return math.sqrt(d) * (1 - 1 / (4 * d) + 1 / (21 * d * d))


# -- path-based rule (algorithms.md §2b) -----------------------------------------------------------


def c_m() -> float:
    """Learning rate of the mean, 1  [H16 eq. (9)]."""
    return 1.0


def c_sigma(d: int, mu_eff: float, constants: str = "pycma") -> float:
    """Cumulation constant of the step-size path p_σ.

    pycma: (μ_eff + 2)/(d + μ_eff + 3), capped at ½  [pycma ``compute_cs``];
    tutorial: (μ_eff + 2)/(d + μ_eff + 5)  [H16 eq. (55)].
    """
    _check_constants(constants)
    if constants == "pycma":
        return min(0.5, (mu_eff + 2) / (d + mu_eff + 3))
    return (mu_eff + 2) / (d + mu_eff + 5)


def d_sigma(d: int, mu_eff: float, cs: float, constants: str = "pycma") -> float:
    """Damping of the step-size update σ ← σ exp((c_σ/d_σ)(‖p_σ‖/E‖N‖ − 1)).

    tutorial: 1 + 2 max(0, √((μ_eff − 1)/(d + 1)) − 1) + c_σ  [H16 eq. (55)];
    pycma: the same with the inner root multiplied by max(1, 3(1 − 2^(−d/9)))  [pycma
    ``compute_damps`` with its module constants; = 1 + c_σ for the default population size].
    """
    _check_constants(constants)
    root = math.sqrt(max(0.0, (mu_eff - 1) / (d + 1)))
    if constants == "pycma":
        root *= max(1.0, 3 * (1 - 0.5 ** (d / 9)))
    return 1 + 2 * max(0.0, root - 1) + cs


def c_c(d: int, mu_eff: float, dof: float) -> float:
    """Cumulation constant of the rank-one path p_c.

    Dense: (4 + μ_eff/d)/(d + 4 + 2μ_eff/d)  [H16 eq. (56); pycma ``sp.cc``].
    Other structures: pycma's separable value (1 + 1/d + μ_eff/d)/(√d + 1/d + 2μ_eff/d)
    [pycma ``sp.cc_sep``; RH08], a horizon of ~√d generations to go with c₁ ≈ 1/dof.
    """
    if dof >= d * (d + 1) / 2:
        return (4 + mu_eff / d) / (d + 4 + 2 * mu_eff / d)
    return (1 + 1 / d + mu_eff / d) / (math.sqrt(d) + 1 / d + 2 * mu_eff / d)


def c_1(d: int, mu_eff: float, dof: float, n: int, constants: str = "pycma") -> float:
    """Learning rate of the rank-one update.

    Dense: 2/((d + 1.3)² + μ_eff)  [H16 eq. (57)], times min(1, n/6) for pycma
    [pycma ``parameters()``].  Other structures, with D = ``covariance_dof``:
    1/(D + 2√D + μ_eff/d)  [pycma ``conedf``; for the diagonal D = d this is sep-CMA's rate].
    """
    _check_constants(constants)
    if dof >= d * (d + 1) / 2:
        c = 2 / ((d + 1.3) ** 2 + mu_eff)
        return c * min(1.0, n / 6) if constants == "pycma" else c
    return 1 / (dof + 2 * math.sqrt(dof) + mu_eff / d)


def c_mu(d: int, mu_eff: float, dof: float, c1: float, constants: str = "pycma") -> float:
    """Learning rate of the rank-μ update, at most 1 − c₁.

    Dense: 2(¼ + μ_eff − 2 + 1/μ_eff)/((d + 2)² + μ_eff) for pycma [pycma ``parameters()``],
    without the ¼ for the tutorial [H16 eq. (58) with α_μ = 2].  Other structures, with D =
    ``covariance_dof``: (¼ + μ_eff − 2 + 1/μ_eff)/(D + 4√D + μ_eff/2)  [pycma ``cmudf``]
    (the ¼ dropped for the tutorial set).
    """
    _check_constants(constants)
    offset = 0.25 if constants == "pycma" else 0.0
    num = offset + mu_eff - 2 + 1 / mu_eff
    if dof >= d * (d + 1) / 2:
        value = 2 * num / ((d + 2) ** 2 + mu_eff)
    else:
        value = num / (dof + 4 * math.sqrt(dof) + mu_eff / 2)
    return max(0.0, min(1 - c1, value))


def rate_multiplier(d: int | None = None, dof: float | None = None) -> float:
    """Factor on the default c₁ and c_μ of the path rule: 2 for the diagonal structure
    (``dof == d``), 1.5 otherwise (measured here, not from a paper).

    CMA-ES's rates carry a safety margin for positive definiteness of C ← C + ΔC; the exponential
    map A ← A·expm(½M) keeps A invertible for any M (algorithms.md §2b), and larger rates pay off.
    Measured with ``benchmarks/es_vs_pycma.py`` and a sweep (full structure, 5–7 seeds, x0 = 0.5·1,
    σ0 = 0.5, target 1e-8), evaluations ×1.5 / ×1: ellipsoid 0.85–0.90, rotated ellipsoid
    0.76–0.86, discus 0.82–0.93, different powers 0.72–1.08, cigar 0.90–0.98, rosenbrock
    0.95–1.00, sphere 0.87–1.06 (d = 2 … 40); diagonal structure 0.85–0.99.  ×2 is better still
    at d ≤ 5 but not at d ≥ 10 on sphere, cigar and rosenbrock.  The multiplied c_μ is still capped
    at 1 − c₁.

    Diagonal structure (sep-CMA's rates, ``benchmarks/highdim_separable.py --variants x1 x2 x3``,
    7 seeds, evaluations to 1e-8 with ×1 / ×1.5 / ×2 / ×3): separable ellipsoid d = 10: 1990 /
    1720 / 1570 / 1500, d = 20: 3996 / 3516 / 3312 / 3216, d = 100: 21760 / 19159 / 17085 / 16235,
    d = 1000 (3 seeds): 376176 / 352800 / 297240 / –; sphere d = 10, 20, 100: within ±3 % of each
    other; rosenbrock (not separable) d = 20: 134736 / 143904 / 154224 / 182376, d = 40: 179580 /
    190275 / 199110 / 228105.  ×2 is the compromise: 6–16 % fewer evaluations on the separable
    problems the diagonal structure is for, 5–7 % more on rosenbrock.
    """
    if d is not None and dof is not None and dof <= d:
        return 2.0
    return 1.5


def alpha_minus(c1: float, cmu: float, mu_eff: float, mu_eff_minus: float) -> float:
    """Scale of the negative (active) weights, whose |w⁻| sum to 1 before it.

    α⁻ = min(1 + c₁/c_μ, 1 + 2μ⁻_eff/(μ_eff + 2))  [H16 eq. (53): α⁻_μ and α⁻_μeff; pycma
    ``finalize_negative_weights``].  With α⁻ = 1 + c₁/c_μ the identity terms of the update cancel
    ("zero decay").  CMA-ES's third bound (positive definiteness, α⁻_posdef) is not needed: the
    exponential map keeps A invertible for any weights (algorithms.md §2b).
    """
    if cmu <= 0:
        return 0.0
    return min(1 + c1 / cmu, 1 + 2 * mu_eff_minus / (mu_eff + 2))


def hsig_threshold(d: int, constants: str = "pycma") -> float:
    """Stall the rank-one path when ‖p_σ‖²/(1 − (1 − c_σ)^{2t}) / d ≥ this value.

    pycma: 2 + 4/(d + 1)  [pycma ``CMAAdaptSigmaBase.hsig``]; tutorial:
    (1.4 + 2/(d + 1))² E‖N‖² / d  [H16 p. 30, h_σ].
    """
    _check_constants(constants)
    if constants == "pycma":
        return 2 + 4 / (d + 1)
    return (1.4 + 2 / (d + 1)) ** 2 * expected_norm(d) ** 2 / d


def max_delta_log_sigma() -> float:
    """Cap on |Δ log σ| per generation, 1  [pycma ``max_delta_log_sigma``]."""
    return 1.0


def step_size_rule(d: int) -> str:
    """The path rule's default σ update: ``"csa"`` in every dimension.

    pycma 4.5.0 switches to two-point adaptation (TPA) from d = 300 on (``TPA_dimension``).
    Measured here with ``benchmarks/highdim_separable.py`` (diagonal structure, d = 1000,
    x0 = 0.5·1, σ0 = 0.5, target 1e-8, budget 1e6, ``--variants tpa``):

    * sphere (``--function sphere``), 2 seeds: TPA 63,396 evaluations, CSA 96,468 (pycma
      ``CMA_diagonal``, which runs TPA there: 58,944).  CSA settles at a normalised step
      σ‖A‖_rms d/‖m‖ ≈ 13, pycma's TPA at ≈ 9 (traced over a run each, at the earlier ×1.5
      diagonal rates; CSA alone, without covariance learning, needs 100,032 evaluations);
    * separable ellipsoid (condition 1e6), 3 seeds: CSA 297,240 (289,488–318,120), TPA 0/3
      (stopped by tolcondition after 4.9e5–5.7e5 evaluations at f = 177–301): with TPA's smaller
      σ, selection sees an almost linear f, the diagonal adaptation turns noisy and A's condition
      overshoots (pycma ``CMA_diagonal`` is also slow there: f = 1.3e-8–1.1e-4 after 1e6).

    So CSA stays the default; ``step_size="tpa"`` is an option for sphere-like problems in large
    dimension.
    """
    return "csa"


def tpa_damping(d: int, n: int) -> float:
    """d_TPA = 0.7 + 2 ln d + 2 ln max(1, n − d)  [pycma ``CMAAdaptSigmaTPA.initialize_settings``]."""
    return 0.7 + 2 * math.log(d) + 2 * math.log(max(1, n - d))


def tpa_cumulation() -> float:
    """c = 0.3, the smoothing of the TPA state s  [pycma ``CMAAdaptSigmaTPA``, ``sp.c``]."""
    return 0.3


def repair_length(d: int) -> float:
    """Largest ‖z‖ accepted for a solution the user changed: √d + 2d/(d + 2).

    Longer recovered z = A⁻¹(x − m)/σ are shortened to this length  [pycma
    ``repair_genotype``], so a far-off injected or repaired point cannot wreck the update.
    """
    return math.sqrt(d) + 2 * d / (d + 2)


# -- textbook xNES / SNES (algorithms.md §2) -------------------------------------------------------


def structure_rate_multiplier(d: int, num_parameters: int) -> float:
    """max(1, d²/(3P)): 1 for the dense group, d/3 for the diagonal.

    It turns the xNES rate 0.6(3 + ln d)/d^{3/2} [G10] into the SNES rate (3 + ln d)/(5√d) [S11]
    exactly for P = d, and scales the rates of intermediate structures by their parameter count.
    """
    return max(1.0, d * d / (3.0 * num_parameters))


def xnes_eta_m() -> float:
    """η_m = 1  [G10 Table 1; S11]."""
    return 1.0


def xnes_eta_sigma(d: int, num_parameters: int) -> float:
    """η_σ = 0.6 (3 + ln d)/d^{3/2} × ``structure_rate_multiplier``  [G10 Table 1; S11]."""
    return 0.6 * (3 + math.log(d)) / (d * math.sqrt(d)) * structure_rate_multiplier(
        d, num_parameters)


def xnes_eta_A(d: int, num_parameters: int) -> float:
    """η_A (η_B in [G10]) = η_σ: 0.6 (3 + ln d)/d^{3/2} for dense, (3 + ln d)/(5√d) diagonal."""
    return xnes_eta_sigma(d, num_parameters)


# -- termination (pycma ``CMAOptions`` defaults) ---------------------------------------------------


def tolfun() -> float:
    """Stop when the f-range of the current and recent generations is below 1e-11  [pycma]."""
    return 1e-11


def tolx() -> float:
    """Stop when every sampled step σ|A z|ⱼ of a generation is below 1e-11  [pycma ``tolx``]."""
    return 1e-11


def tolcondition() -> float:
    """Stop when the condition number of AAᵀ exceeds 1e14  [pycma ``tolconditioncov``]."""
    return 1e14


def tolstagnation(d: int, n: int) -> int:
    """Generations without improvement of the median f: int(100 + 100 d^{1.5}/n)  [pycma]."""
    return int(100 + 100 * d ** 1.5 / n)


def tolfun_history(d: int, n: int) -> int:
    """Length of the history of best f used by ``tolfun``: 10 + ⌈30 d/n⌉  [pycma ``fit.hist``]."""
    return 10 + int(math.ceil(30 * d / n))


def maxiter(d: int, n: int) -> int:
    """100 + 150 (d + 3)²/√n generations  [pycma ``maxiter``]."""
    return int(100 + 150 * (d + 3) ** 2 / math.sqrt(n))
