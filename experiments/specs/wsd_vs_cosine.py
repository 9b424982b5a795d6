"""WSD (1-sqrt cooldown over the last 20%) against cosine at one size and token count, two seeds each
(Hagele et al. 2024 report that they match). The shape and recipe are the IsoFLOP sweep's 3-layer, 80-wide
byte model at its 3e12-FLOP budget (462 steps of 32 x 128 bytes, 1.89M tokens); the WSD runs are fresh runs
of that length, which a cooldown branch equals bit for bit (tests/test_branch.py).

    gpt2jax-sweep experiments/specs/wsd_vs_cosine.py --root=runs/wsd_vs_cosine
"""

import importlib.util
import os

from gpt2jax.scaling import Run, Sweep

_spec = importlib.util.spec_from_file_location("isoflop_cpu", os.path.join(os.path.dirname(__file__), "isoflop_cpu.py"))
iso = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(iso)


def get_sweep():
    base = next(r for r in iso.get_sweep().runs if r.name == "iso-C3e12-L3-D80")
    common = {k: v for k, v in base.overrides.items() if not k.startswith(("train.branch", "checkpoint.steps"))}
    runs = []
    for seed in (0, 1):
        for sched in ("wsd", "cosine"):
            runs.append(Run(f"{sched}-s{seed}", base.config, {**common, "optim.schedule": sched, "train.seed": seed},
                            tags={"schedule": sched, "seed": seed}))
    return Sweep(runs=runs, name="wsd_vs_cosine")
