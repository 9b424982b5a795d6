"""How long must the muP-on-bytes runs be for the seed to stop deciding? The pilot of experiments/specs/mup_bytes.py
(results/mup_bytes/pilot/) found a second seed moving a 1,000-step run's loss by up to 0.47 nats/byte. This
trains three of its points again with that spec's settings, now 3,000 steps (warmup 150), seeds 0 and 1:
the base width 16 at lr 2^-6, muP width 32 at 2^-5 and SP width 32 at 2^-6 (the pilot's largest seed gaps).

    gpt2jax-sweep experiments/specs/mup_bytes_seeds.py --root=runs/mup_bytes_seeds
    python -m experiments.lr_transfer --root=runs/mup_bytes_seeds --out=experiments/results/mup_bytes/seeds
"""

import os

from gpt2jax.scaling import Sweep, spec_module

_spec = spec_module(os.path.join(os.path.dirname(__file__), "mup_bytes.py"))


def get_sweep():
    runs = []
    for seed in (0, 1):
        common = {**_spec.COMMON, "train.seed": seed}
        p = f"s{seed}-"
        runs += _spec.lr_runs(p + "base-w16", 16, "sp", [2.0**-6], common)
        runs += _spec.lr_runs(p + "mup-w32", 32, "mup", [2.0**-5], common)
        runs += _spec.lr_runs(p + "sp-w32", 32, "sp", [2.0**-6], common)
    return Sweep(runs=runs, name="mup_bytes_seeds")
