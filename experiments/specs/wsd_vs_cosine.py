"""WSD (1-sqrt cooldown over the last 20%) against cosine at one size and token count, two seeds each
(Hagele et al. 2024 report that they match). The shape and recipe are the IsoFLOP sweep's 2-layer, 32-wide
byte model at its 3e12-FLOP budget, the best model of that budget (3231 steps of 32 x 128 bytes, 13.2M bytes,
2.75 epochs; lr 1e-2, 54 warmup steps, cooled to 0); the WSD runs are fresh runs of that length, which a
cooldown branch equals bit for bit (tests/test_branch.py).

    gpt2jax-sweep experiments/specs/wsd_vs_cosine.py --root=runs/wsd_vs_cosine
"""

import os

from gpt2jax.scaling import Run, Sweep, spec_module

iso = spec_module(os.path.join(os.path.dirname(__file__), "isoflop_cpu.py"))


def get_sweep():
    base = next(r for r in iso.get_sweep().runs if r.name == "iso-C3e12-L2-D32")
    common = {k: v for k, v in base.overrides.items() if not k.startswith(("train.branch", "checkpoint.steps"))}
    runs = []
    for seed in (0, 1):
        for sched in ("wsd", "cosine"):
            runs.append(Run(f"{sched}-s{seed}", base.config, {**common, "optim.schedule": sched, "train.seed": seed},
                            tags={"schedule": sched, "seed": seed}))
    return Sweep(runs=runs, name="wsd_vs_cosine")
