"""The Chinchilla IsoFLOP sweep (chinchilla_cpu.py) as first run: the same shapes, budgets, batches and
cooldowns, but one learning rate per shape whatever its batch (no sqrt(batch / 32) factor). Its runs at 8 and
16 sequences a step lie above the profiles of the runs at 32 (experiments/results/isoflop_cpu/one_lr/), which
is why chinchilla_cpu.py scales the learning rate with the batch.

    gpt2jax-sweep experiments/specs/chinchilla_cpu_one_lr.py --root=runs/chinchilla_cpu_one_lr
    gpt2jax-analyze --root=runs/chinchilla_cpu_one_lr --out=experiments/results/isoflop_cpu/one_lr
"""

import os

from gpt2jax.scaling import spec_module

_spec = spec_module(os.path.join(os.path.dirname(__file__), "chinchilla_cpu.py"))


def get_sweep():
    return _spec.get_sweep(batch_scaling=False)
