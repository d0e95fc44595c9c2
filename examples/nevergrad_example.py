"""natgrad-es optimizers inside nevergrad: registered names, bounds, workers, your own settings.

    python examples/nevergrad_example.py

Needs nevergrad (``pip install 'natgrad-es[interop]'``).  Takes about 20 seconds.  The diagonal
(SNES) and low-rank structures cannot learn the rotated ellipsoid's rotation in this budget: that is
the point of choosing a structure.
"""

from concurrent.futures import ThreadPoolExecutor

import nevergrad as ng
import numpy as np

import natgrad_es.integrations.nevergrad  # noqa: F401  (registers the NatGrad* optimizers)
import problems
from natgrad_es.integrations.nevergrad import NatGradES

f = problems.get("rotated_ellipsoid", 8)  # batched; nevergrad calls it on one point at a time


def loss(x: np.ndarray) -> float:
    return float(f(x))


# 1. A registered name, like any nevergrad optimizer.
for name in ("NatGradXNES", "NatGradSNES", "NatGradLowRank", "NatGradIPOP", "CMA"):
    opt = ng.optimizers.registry[name](parametrization=8, budget=3000)
    opt.parametrization.random_state.seed(0)
    rec = opt.minimize(loss)
    print(f"{name:15s} f = {loss(rec.value):.3e}")

# 2. Bounds belong to the parametrization: here the optimum (x = 1.5 everywhere) is outside the box,
#    so the answer is the corner x = 1.
box = ng.p.Array(shape=(5,), lower=-1.0, upper=1.0)
rec = ng.optimizers.registry["NatGradXNES"](parametrization=box, budget=1000).minimize(
    lambda x: float(np.sum((x - 1.5) ** 2)))
print("bounded:", np.round(rec.value, 4))

# 3. Several evaluations in flight (num_workers): a full generation is asked before it is told.
opt = ng.optimizers.registry["NatGradXNES"](parametrization=8, budget=3000, num_workers=4)
with ThreadPoolExecutor(max_workers=4) as pool:
    rec = opt.minimize(loss, executor=pool, batch_mode=False)
print(f"4 workers: f = {loss(rec.value):.3e}  (popsize {opt.es.popsize})")

# 4. Your own settings, registered under a name of your choice.
NatGradES(structure="diagonal", popsize=20, restarts="ipop").set_name("MySNES", register=True)
ellipsoid = problems.get("ellipsoid", 8)
rec = ng.optimizers.registry["MySNES"](parametrization=8, budget=3000).minimize(
    lambda x: float(ellipsoid(x)))
print(f"MySNES on the (separable) ellipsoid: f = {float(ellipsoid(rec.value)):.3e}")
