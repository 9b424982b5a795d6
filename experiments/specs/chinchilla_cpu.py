"""The Chinchilla IsoFLOP reproduction on a 2-core CPU (Hoffmann et al. 2022, approach 2), second design, on
Shakespeare as UTF-8 bytes (vocabulary 257, so the head is a few percent of each model):

    gpt2jax-prepare --source=shakespeare --split=tail --tokenizer=bytes --out_dir=data/shakespeare_bytes
    gpt2jax-sweep experiments/specs/chinchilla_cpu.py --root=runs/chinchilla_cpu
    gpt2jax-analyze --root=runs/chinchilla_cpu --out=experiments/results/isoflop_cpu/second_design

What changed from the first attempt (experiments/specs/isoflop_cpu.py, whose minima all sat at the smallest
shape; experiments/results/isoflop_cpu/first_attempt/): every run gets at least ~1,300 optimizer steps (the
batch rule below; the first attempt gave the large shapes of small budgets 154-504 steps, and its batch-8
profile at 3e12 showed that this alone moves the minimum inside the grid), and each budget's five shapes sit
around the optimum that profile measured (74k parameters at 3e12) instead of around Chinchilla's 20 tokens
per parameter, with two smaller shapes (2x16, 2x24) for the smallest budget.

Budgets 1e12, 3e12 and 1e13 FLOPs (10x; C = 6 N D with N all parameters, as Hoffmann et al. counted). No run
repeats its data more than 4 times (4.80M training bytes: D <= 19.2M; checked below). One stable WSD parent per
shape and a 1-sqrt cooldown over the last 20% of each budget's run, branched from it (a branch ends bit for bit
where a fresh run would, tests/test_branch.py).

Stated rules, one value per shape (its branches share the parent's): context 128 bytes; batch: the largest of
32, 16, 8 sequences that gives the shape's shortest run at least 1,500 steps, else 8; warmup 5% of the shortest
run's steps (>= 10); peak lr 4e-3 * 128 / n_embd capped at 1e-2 (Adam's hidden-matrix rate ~ 1/width, as muP
prescribes), whatever the batch (chinchilla_cpu_sqrt_lr.py tried Adam's square-root rule, lr x sqrt(batch / 32):
every run it changed got worse), cooled to 0; AdamW beta2 0.99 (small batches, as the quickstart's search found), weight decay
0.1, fp32; val loss over the first 512 windows (65,536 bytes) of the held-out tail.
"""

import math
import os

from gpt2jax.scaling import Sweep, cooldowns, spec_module

_first = spec_module(os.path.join(os.path.dirname(__file__), "isoflop_cpu.py"))

GRID = {
    1e12: [(2, 16), (2, 24), (2, 32), (2, 48), (2, 64)],
    3e12: [(2, 32), (2, 40), (2, 48), (2, 64), (3, 80)],
    1e13: [(2, 56), (2, 64), (3, 64), (3, 80), (4, 96)],
}
SEQ = 128
TRAIN_TOKENS = 4_804_378
MAX_EPOCHS = 4
MIN_STEPS = 1500
CONFIG = _first.CONFIG
OVERRIDES = {
    "data.dir": "data/shakespeare_bytes",
    "model.vocab_size": 257,
    "model.vocab_multiple": 1,
    "optim.min_lr": 0.0,
    "optim.b2": 0.99,
    "optim.weight_decay": 0.1,
    "train.log_every": 100,
    "train.compile_cache": "",
}


# the first attempt's shapes rules: heads max(2, width / 32), N all parameters at context 128 and 257 tokens
n_head, n_total = _first.n_head, _first.n_total


def batch(shape, Ds):
    for b in (32, 16, 8):
        if min(Ds) / (b * SEQ) >= MIN_STEPS:
            return b
    return 8


def budgets():
    out = {}
    for C, shapes in GRID.items():
        for s in shapes:
            epochs = C / (6 * n_total(s)) / TRAIN_TOKENS
            if epochs > MAX_EPOCHS:
                raise ValueError(f"{s} at C={C:g} would see its data {epochs:.2f} times (> {MAX_EPOCHS})")
            out.setdefault(s, []).append(C)
    return out


def lr(shape, Ds, batch_scaling=False):
    """4e-3 x 128 / width capped at 1e-2 at 32 sequences a step, times sqrt(batch / 32) with batch_scaling
    (Adam's square-root rule, Malladi et al. 2022)."""
    base = min(1e-2, 4e-3 * 128 / shape[1])
    return base * math.sqrt(batch(shape, Ds) / 32) if batch_scaling else base


def get_sweep(batch_scaling=False):
    b = budgets()
    shapes = sorted(b, key=n_total)
    runs = cooldowns(
        "chin", CONFIG, shapes, budgets=b, seq_len=SEQ, count="total",
        batch_size=batch, n_head=n_head,
        lr=lambda shape, Ds: lr(shape, Ds, batch_scaling),
        warmup=lambda shape, steps: max(10, round(0.05 * min(steps))),
        overrides=dict(OVERRIDES),
    )
    for r in runs:  # the same 512 val windows for every run, whatever its batch
        r.overrides["train.eval_batches"] = 512 // r.overrides["train.batch_size"]
    return Sweep(runs=runs, name="chinchilla_cpu")
