"""Why the IsoFLOP sweep's runs at 8 sequences a step lie above its runs at 32 (chinchilla_cpu.py): AdamW's
decoupled weight decay shrinks the weights by lr x wd every step, so at a fixed number of tokens a run at 8
sequences a step takes 4x the steps and decays its weights over a 4x shorter stretch of data (the EMA
timescale 1 / (lr x wd) counted in tokens; Wang & Aitchison 2024 argue it should be held fixed in data as
batch and dataset change). This spec trains three of those runs again as fresh WSD runs (a cooldown branch
equals a fresh run bit for bit, tests/test_branch.py) with the weight decay scaled by batch / 32, so the
timescale in tokens is that of a run at 32 sequences; everything else as in chinchilla_cpu.py.

    gpt2jax-sweep experiments/specs/chinchilla_cpu_wd.py --root=runs/chinchilla_cpu_wd
"""

import os

from gpt2jax.scaling import Run, Sweep, spec_module

_spec = spec_module(os.path.join(os.path.dirname(__file__), "chinchilla_cpu.py"))
NAMES = ("chin-C3e12-L2-D48", "chin-C3e12-L3-D80", "chin-C1e13-L2-D64")


def get_sweep():
    runs = []
    for r in _spec.get_sweep().runs:
        if r.name not in NAMES:
            continue
        o = {k: v for k, v in r.overrides.items() if not k.startswith(("train.branch", "checkpoint.steps"))}
        o["optim.weight_decay"] = o["optim.weight_decay"] * o["train.batch_size"] / 32
        runs.append(Run(r.name.replace("chin-", "wd-"), r.config, o, budget_flops=r.budget_flops,
                        tags={**r.tags, "role": "fresh", "weight_decay": o["optim.weight_decay"]}))
    return Sweep(runs=runs, name="chinchilla_cpu_wd")
