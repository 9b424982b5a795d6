"""The learning-rate grid behind chinchilla_cpu3.py's rule: every shape of its smallest budget (3e11 FLOPs,
4 sequences a step) trained at 4 peak learning rates, 2^-8 to 2^-5 (the second design's 1/width rule gave
1e-2 to all of them), otherwise exactly as the sweep trains it.

    gpt2jax-sweep experiments/specs/chinchilla_cpu3_lr.py --root=runs/chinchilla_cpu3_lr
    gpt2jax-analyze --root=runs/chinchilla_cpu3_lr --out=experiments/results/isoflop_cpu/lr_grid

analyze fits lr_opt = k N^-x through each shape's optimum (a parabola in log2 lr through the best rate and its
neighbours; optima at an edge of the grid are left out), and chinchilla_cpu3.py reads that fit. The grid is
also the smallest budget's IsoFLOP profile with the learning rate tuned per size.
"""

import os

from gpt2jax.scaling import Sweep, spec_module

c3 = spec_module(os.path.join(os.path.dirname(__file__), "chinchilla_cpu3.py"))

BUDGET = 3e11
LRS = [2.0 ** -8, 2.0 ** -7, 2.0 ** -6, 2.0 ** -5]


def get_sweep():
    runs = []
    for lr in LRS:
        for s in c3.GRID[BUDGET]:
            name = f"lr{lr:.5f}-C3e11-L{s[0]}-D{s[1]}"
            runs.append(c3.wsd_run(name, s, BUDGET, lr, tags={"lr": lr}))
    return Sweep(runs=runs, name="chinchilla_cpu3_lr")
