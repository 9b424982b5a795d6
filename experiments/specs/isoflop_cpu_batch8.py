"""One of Porian et al.'s causes measured: the batch size. The IsoFLOP sweep (isoflop_cpu.py) trains most shapes
with 32 sequences a step, so at a fixed budget the larger shapes get few steps (154-504 at 1e12-3e12 FLOPs)
and its minima sit at the smallest shape. This spec trains the 3e12-FLOP budget's five shapes again with 8
sequences a step (4x the steps, the same tokens, learning rates and cooldown), as fresh WSD runs (a cooldown
branch equals a fresh run bit for bit, tests/test_branch.py), so the two IsoFLOP profiles compare directly.

    gpt2jax-sweep experiments/specs/isoflop_cpu_batch8.py --root=runs/isoflop_cpu_batch8
"""

import os

from gpt2jax.scaling import Run, Sweep, spec_module

iso = spec_module(os.path.join(os.path.dirname(__file__), "isoflop_cpu.py"))
BATCH = 8


def get_sweep():
    runs = []
    for r in iso.get_sweep().runs:
        if not r.name.startswith("iso-C3e12-"):
            continue
        o = {k: v for k, v in r.overrides.items() if not k.startswith(("train.branch", "checkpoint.steps"))}
        scale = o["train.batch_size"] // BATCH
        o.update({"train.batch_size": BATCH, "train.num_steps": o["train.num_steps"] * scale,
                  "optim.warmup_steps": o["optim.warmup_steps"] * scale, "train.eval_batches": 512 // BATCH})
        runs.append(Run(r.name.replace("iso-", f"b{BATCH}-"), r.config, o, budget_flops=r.budget_flops,
                        tags={**r.tags, "role": "fresh", "batch": BATCH}))
    return Sweep(runs=runs, name="isoflop_cpu_batch8")
