"""A whole ES generation as one CUDA graph: ``GraphedGeneration``.

    python examples/gpu_graphs.py

On a GPU a generation of small size is bound by kernel launches (~1.5–2.5 ms whatever the size on
an H200); replayed from a captured CUDA graph it costs its kernels' time (0.2–0.5 ms).  This runs
the separable problem d = 1000 with the diagonal structure both ways from the same seed, shows that
the runs are the same, and prints their speed.  Without a GPU it runs the same steps eagerly
(``capture`` is False off CUDA), so the script also works on a CPU, slower and without the gain.
"""

import time

import torch

import problems
from natgrad_es.es import GraphedGeneration, NaturalES

device = "cuda" if torch.cuda.is_available() else "cpu"
d, n = 1000, 100
f = problems.get("ellipsoid", d)  # batched and device-resident: f(X) for X of shape (n, d)


def strategy():
    return NaturalES(torch.full((d,), 0.5, device=device), 0.5, "diagonal", popsize=n, seed=1,
                     check_every=25, ftarget=1e-8)


def sync():
    if device == "cuda":
        torch.cuda.synchronize()


eager = strategy()
sync()
t0 = time.perf_counter()
while not eager.stop():
    X = eager.ask()
    eager.tell(X, f(X))
sync()
t_eager = time.perf_counter() - t0

graphed = strategy()
step = GraphedGeneration(graphed, f)  # captures one generation at the first replay
sync()
t0 = time.perf_counter()
while not graphed.stop():
    step(25)  # 25 generations between two checks (check_every)
    if graphed.iterations % 250 == 0:
        graphed.disp()
sync()
t_graph = time.perf_counter() - t0

for name, es, t in (("ask/tell", eager, t_eager), ("graphed", graphed, t_graph)):
    r = es.result
    print(f"{name:>8}: {r.stop} after {r.iterations} generations, f = {r.fbest:.3e}, "
          f"{1e3 * t / r.iterations:.3f} ms a generation")
print("same run:", torch.equal(eager.mean, graphed.mean), "| captured:", step.capture)
