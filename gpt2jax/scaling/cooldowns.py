"""Cooldown sweeps: one stable WSD parent run per model shape, and one cooldown branch per token budget.

`cooldowns(...)` returns sweep `Run`s (gpt2jax/scaling/spec.py): for each shape, a parent trained with
`optim.schedule='wsd'` that stops (`train.stop_after`) where its longest branch's cooldown begins and keeps
a checkpoint at every branch point (`checkpoint.steps`), then one branch per budget that starts from the
parent's checkpoint (`train.branch_from=<parent run name>`: a sibling workdir under the sweep's root) and
cools down over the last `decay_fraction` of its own length. A branch of S + k steps ends exactly where a
fresh WSD run of S + k steps would (tests/test_branch.py), so the sweep costs about one run per shape.
The parents come first in the list, each before its branches; the launchers keep that order (local: one
after another; SLURM: the branches as a second job array that waits for the parents'; TPU: a parent and
its branches on one slice, the branches after the parent).

Too small a budget: a branch whose cooldown, round(decay_fraction x num_steps) steps as the WSD schedule
counts it (gpt2jax/optim.py `decay_steps`), would be 0 steps, or would start at step 0 or inside the
warmup, is refused with a SweepError naming the run. A cooldown is never lengthened to 1 step: the trainer's
schedule would not decay over it, so the branch point would not be where the cooldown starts.
"""

from __future__ import annotations

import math

from gpt2jax.errors import SweepError
from gpt2jax.scaling.spec import Run, model_config


def _fmt(x: float) -> str:
    return f"{x:.0e}".replace("+", "")


def _branch_name(prefix: str, C, D, n_layer: int, n_embd: int) -> str:
    label = f"C{_fmt(C)}" if C is not None else f"T{_fmt(D)}"
    return f"{prefix}-{label}-L{n_layer}-D{n_embd}"


def cooldowns(prefix: str, config: str, shapes, *, budgets=None, tokens=None, seq_len: int,
              batch_size, n_head, lr, decay_fraction: float = 0.2, warmup, count="total",
              overrides: dict | None = None) -> list:
    """shapes: [(n_layer, n_embd)]; budgets: {shape: [C, ...]} FLOPs (tokens = C / (6 N), `count`: 'total'
    or 'non_embedding' N), or tokens: {shape: [D, ...]}. batch_size, n_head, lr, warmup: functions of
    (shape, [token counts of its branches]) -> value (one per shape: its branches share the parent's batch,
    learning rate and warmup). Returns parents and branches, each with budget_flops (branches) and tags.
    A budget too small for a cooldown (see above) is a SweepError naming the branch."""
    from gpt2jax.model import num_params

    runs = []
    for shape in shapes:
        n_layer, n_embd = shape
        heads = n_head(shape)
        cfg = model_config(config, n_layer, n_embd, heads, seq_len)
        for k, v in (overrides or {}).items():  # e.g. the vocabulary, which the parameter count depends on
            if k.startswith("model."):
                cfg.model[k[len("model."):]] = v
        N = num_params(cfg.model, non_embedding=(count == "non_embedding"))
        points = [(C, C / (6.0 * N)) for C in budgets[shape]] if budgets else [(None, D) for D in tokens[shape]]
        points.sort(key=lambda p: p[1])
        Ds = [D for _, D in points]
        B = batch_size(shape, Ds)
        steps = [max(1, math.ceil(D / (B * seq_len))) for D in Ds]
        decays = [int(round(decay_fraction * s)) for s in steps]
        starts = [s - k for s, k in zip(steps, decays)]
        warm = int((overrides or {}).get("optim.warmup_steps", warmup(shape, steps)))
        for (C, D), s, k in zip(points, steps, decays):
            if k < 1 or s - k < max(1, warm):
                why = (f"its cooldown, round(decay_fraction={decay_fraction} x {s}), is {k} steps" if k < 1 else
                       f"its cooldown would start at step {s - k}, "
                       + ("before any stable step" if s - k < 1 else f"inside the warmup of {warm} steps"))
                raise SweepError(f"cooldowns: run {_branch_name(prefix, C, D, n_layer, n_embd)!r} ({s} steps) is "
                                 f"too short for a cooldown branch: {why}; give it a larger budget (or more "
                                 "tokens), a smaller batch_size, a shorter warmup or another decay_fraction")
        common = {"model.n_layer": n_layer, "model.n_embd": n_embd, "model.n_head": heads,
                  "model.block_size": seq_len, "train.seq_len": seq_len, "train.batch_size": B,
                  "optim.schedule": "wsd", "optim.lr": lr(shape, Ds), "optim.warmup_steps": warm,
                  **(overrides or {})}
        parent = f"{prefix}-L{n_layer}-D{n_embd}-stable"
        tags = {"cooldowns": prefix, "n_layer": n_layer, "n_embd": n_embd, "n_head": heads}
        runs.append(Run(parent, config, {**common, "train.num_steps": steps[-1],
                                         "optim.decay_fraction": decay_fraction,
                                         "train.stop_after": starts[-1], "checkpoint.every": 0,
                                         "checkpoint.keep": 1, "checkpoint.steps": tuple(sorted(set(starts))),
                                         "train.eval_every": 0},
                        tags={**tags, "role": "parent"}))
        for (C, D), s, start in zip(points, steps, starts):
            runs.append(Run(_branch_name(prefix, C, D, n_layer, n_embd), config,
                            {**common, "train.num_steps": s, "optim.decay_fraction": decay_fraction,
                             "train.branch_from": parent, "train.branch_step": start,
                             "checkpoint.every": 0, "checkpoint.keep": 1, "train.eval_every": 0},
                            budget_flops=C, tags={**tags, "role": "branch", "parent": parent}))
    return runs
