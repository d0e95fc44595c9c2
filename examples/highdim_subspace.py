"""A stiff random subspace in d = 200: the low-rank precision structure and its pairs route.

f(x) = ‖x‖² + (c − 1)‖Pᵀx‖², P a random 200×5 orthonormal basis, c = 10⁶: five stiff directions that
no coordinate sees.  ``structure="lowrank-precision"`` (Σ⁻¹ = D⁻¹(I + VVᵀ)D⁻¹, rank k ≥ 5) uses the
pairs route by default: mirrored pairs around the mean, a least-squares fit of the Hessian's low-rank
part to their second differences, whitening by it, Newton steps inside the pairs' span.  The
diagonal structure (SNES-like, rank-based) is run beside it with the same budget.

Run:  python examples/highdim_subspace.py
"""

import numpy as np

from natgrad_es import NaturalES
from problems.functions import StiffSubspace

d, budget = 200, 60_000
f = StiffSubspace(d, rank=5, condition=1e6, seed=3)
x0, sigma0 = np.full(d, 0.5), 0.5

for structure, options in [("lowrank-precision", {"rank": 8}), ("diagonal", {})]:
    es = NaturalES(x0, sigma0, structure, seed=1, ftarget=1e-8, maxfevals=budget, **options)
    while not es.stop():
        X = es.ask()
        es.tell(X, f(X))  # f is vectorized: one call per generation
        if es.iterations % 500 == 0:
            print(f"  {structure:18s} evaluations {es.evaluations:7d}  f {es.result.fbest:.3e}")
    r = es.result
    print(f"{structure:18s} f = {r.fbest:.2e} after {r.evaluations} evaluations ({', '.join(r.stop)})")
    if structure == "lowrank-precision":
        fits = es.curvature_fits
        accepted = [fit for fit in fits if fit["accepted"]]
        print(f"  curvature fits: {len(fits)} tried, accepted at {accepted[0]['pairs']} pairs "
              f"(held-out residual {accepted[0]['held_out']:.1e})" if accepted else "  no fit accepted")
