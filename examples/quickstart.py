"""Quickstart: minimise a rotated ellipsoid (d = 10, condition 1e6) with the default rule.

    python examples/quickstart.py

The explicit ask / tell loop, with a progress line every 50 generations, then the same problem
through ``minimize``.  Takes about a second.
"""

import numpy as np

import problems
from natgrad_es.es import NaturalES, minimize

d = 10
f = problems.get("rotated_ellipsoid", d)  # batched: f(X) for X of shape (n, d)

es = NaturalES(np.full(d, 0.5), 0.5, seed=1, ftarget=1e-8)  # full covariance, default rule
while not es.stop():
    X = es.ask()  # (n, d) numpy array
    es.tell(X, f(X))  # one f value per row
    if es.iterations % 50 == 0:
        es.disp()
es.disp()
r = es.result
print(f"stopped on {r.stop} after {r.evaluations} evaluations: f(xbest) = {r.fbest:.3e}")
print(f"distance to the optimum: {np.linalg.norm(r.xbest - f.xopt):.2e}")

res = minimize(f, np.full(d, 0.5), 0.5, vectorized=True, seed=1, ftarget=1e-8)
print(f"minimize: success={res.success}, nfev={res.nfev}, fun={res.fun:.3e} ({res.message})")
