"""The Chinchilla IsoFLOP reproduction on a 2-core CPU (Hoffmann et al. 2022, approach 2), on Shakespeare as
UTF-8 bytes (vocabulary 257, so the head is a few percent of each model):

    gpt2jax-prepare --source=shakespeare --split=tail --tokenizer=bytes --out_dir=data/shakespeare_bytes
    gpt2jax-sweep experiments/specs/isoflop_cpu.py --root=runs/isoflop_cpu

Budgets 1e12, 3e12 and 1e13 FLOPs (C = 6 N D, N all parameters as Hoffmann et al. counted), five shapes per
budget around the compute-optimal size sqrt(C / 120) (20 tokens per parameter), none repeating its data more
than 4 times (4.80M train bytes: D <= 19.2M). Cooldown branches (gpt2jax/scaling/cooldowns.py): one stable WSD parent
per shape, one 1-sqrt cooldown over the last 20% of each budget's run, branched from it.

Stated rules, one value per shape (its branches share the parent): context 128 bytes; batch
2^round(log2(D_min / (150 * 128))) sequences clipped to [8, 32] (the smallest budget's run gets ~150+ steps);
warmup 5% of the shortest branch's steps (>= 10); peak lr 4e-3 * 128 / n_embd capped at 1e-2 (Adam's
hidden-matrix rate ~ 1/width, as muP prescribes), cooled to 0; AdamW beta2 0.99 (small batches, as the
quickstart's search found), weight decay 0.1, fp32; val loss over the first 512 windows (65,536 bytes) of the
held-out tail.
"""

import math

from gpt2jax.scaling import Sweep, cooldowns, model_config

BUDGETS = [1e12, 3e12, 1e13]
SHAPES = [(2, 32), (2, 48), (2, 64), (3, 80), (4, 96), (4, 128), (5, 160), (6, 192)]
SEQ = 128
TRAIN_TOKENS = 4_804_378
PER_BUDGET = 5
CONFIG = "configs/tiny.py"


def n_head(shape):
    return max(2, shape[1] // 32)


def n_total(shape):
    from gpt2jax.model import num_params

    cfg = model_config(CONFIG, shape[0], shape[1], n_head(shape), SEQ)
    cfg.model.vocab_size, cfg.model.vocab_multiple = 257, 1
    return num_params(cfg.model)


def assign():
    """{shape: [budgets]}: for each budget the PER_BUDGET shapes nearest (in log N) to sqrt(C / 120) among
    those that see their data at most 4 times."""
    out = {}
    for C in BUDGETS:
        ok = [s for s in SHAPES if C / (6 * n_total(s)) <= 4 * TRAIN_TOKENS]
        ok.sort(key=lambda s: abs(math.log(n_total(s) / math.sqrt(C / 120))))
        for s in ok[:PER_BUDGET]:
            out.setdefault(s, []).append(C)
    return out


def get_sweep():
    budgets = assign()
    shapes = [s for s in SHAPES if s in budgets]

    def batch(shape, Ds):
        return int(min(32, max(8, 2 ** round(math.log2(min(Ds) / (150 * SEQ))))))

    runs = cooldowns(
        "iso", CONFIG, shapes, budgets=budgets, seq_len=SEQ, count="total",
        batch_size=batch, n_head=n_head,
        lr=lambda shape, Ds: min(1e-2, 4e-3 * 128 / shape[1]),
        warmup=lambda shape, steps: max(10, round(0.05 * min(steps))),
        overrides={
            "data.dir": "data/shakespeare_bytes",
            "model.vocab_size": 257,
            "model.vocab_multiple": 1,
            "optim.min_lr": 0.0,
            "optim.b2": 0.99,
            "optim.weight_decay": 0.1,
            "train.log_every": 50,
            "train.compile_cache": "",
        },
    )
    for r in runs:  # the same 512 val windows for every run, whatever its batch
        r.overrides["train.eval_batches"] = 512 // r.overrides["train.batch_size"]
    return Sweep(runs=runs, name="isoflop_cpu")
