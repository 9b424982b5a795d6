"""The Chinchilla IsoFLOP sweep (chinchilla_cpu.py) with the learning rate scaled by sqrt(batch / 32) (Adam's
square-root rule, Malladi et al. 2022): the runs at 8 and 16 sequences a step lay above the profiles of the
runs at 32, and a learning rate too high for their batch was one explanation. The runs at 32 sequences are the
same as chinchilla_cpu.py's (copied, not run again); the sweep was stopped after the four runs it changed at
1e12 and 3e12 FLOPs were all worse than with one learning rate (experiments/results/isoflop_cpu/second_design/README.md).

    gpt2jax-sweep experiments/specs/chinchilla_cpu_sqrt_lr.py --root=runs/chinchilla_cpu_sqrt_lr
"""

import os

from gpt2jax.scaling import spec_module

_spec = spec_module(os.path.join(os.path.dirname(__file__), "chinchilla_cpu.py"))


def get_sweep():
    return _spec.get_sweep(batch_scaling=True)
