"""The Chinchilla IsoFLOP reproduction on a 2-core CPU (Hoffmann et al. 2022, approach 2), third design, on
Shakespeare as UTF-8 bytes (vocabulary 257):

    gpt2jax-prepare --source=shakespeare --split=tail --tokenizer=bytes --out_dir=data/shakespeare_bytes
    gpt2jax-sweep experiments/specs/chinchilla_cpu3_lr.py --root=runs/chinchilla_cpu3_lr     # the lr grid
    gpt2jax-analyze --root=runs/chinchilla_cpu3_lr --out=experiments/results/isoflop_cpu/lr_grid
    gpt2jax-sweep experiments/specs/chinchilla_cpu3.py --root=runs/chinchilla_cpu3           # the sweep
    gpt2jax-analyze --root=runs/chinchilla_cpu3 --out=experiments/results/isoflop_cpu

What changed from the second design (chinchilla_cpu.py, whose 3e12 profile had no minimum because its batch
changed along the profile, 32 -> 8 sequences, and the runs at 8 ended high):

- **One batch per budget, scaled with the budget**: 4, 8, 16 sequences of 128 bytes at 3e11, 1e12, 3e12 FLOPs
  (the batch doubles for each ~3.16x of compute, B = 8 (C / 1e12)^0.6 rounded to a power of 2). The optimal
  size grows about as C^0.5 and its tokens as C^0.5, so the batch growing with C keeps the number of steps at
  a given N / N_opt about the same at every budget; the points of one profile now differ only in N.
- **The learning rate per size from the learning-rate fit** (Porian et al. 2024's per-scale tuning, not a
  width rule): `chinchilla_cpu3_lr.py` trains every shape of the smallest budget at 4 rates (powers of 2);
  `gpt2jax-analyze` fits lr_opt = k N^-x through the interior optima, and this spec reads that fit
  (experiments/results/isoflop_cpu/lr_grid/fits.json) for every run.
- **A warmup per run** of 5% of its steps (at least 20), not of its shape's shortest run.
- Budgets 3e11, 1e12, 3e12 (10x), six shapes each around the second design's optima (56k parameters at 1e12,
  a ~ 0.42), so that the parabola's vertex sits inside the sizes tried; then 1e13 (33x in all), six shapes
  around the optimum the first three predict there (164k). No run repeats its data more than 4
  times (checked below). Each point is one WSD run (warmup, stable, 1-sqrt cooldown over the last 20%): with
  one batch per budget a stable parent could serve only one budget, so the cooldown branches of the second
  design save nothing here (a branch equals the fresh WSD run bit for bit, tests/test_branch.py).

Unchanged: context 128 bytes, AdamW beta2 0.99, weight decay 0.1, cooled to 0, fp32, C = 6 N D with N all
parameters, val loss over the first 512 windows (65,536 bytes) of the held-out tail.
"""

import json
import math
import os

from gpt2jax.scaling import Run, Sweep, spec_module

_first = spec_module(os.path.join(os.path.dirname(__file__), "isoflop_cpu.py"))
_second = spec_module(os.path.join(os.path.dirname(__file__), "chinchilla_cpu.py"))

GRID = {
    3e11: [(2, 16), (2, 24), (2, 32), (2, 40), (2, 48), (2, 64)],
    1e12: [(2, 24), (2, 32), (2, 40), (2, 48), (2, 64), (3, 64)],
    3e12: [(2, 32), (2, 40), (2, 48), (2, 64), (3, 64), (3, 80)],
    # added once the first three were done (their runs unchanged): 33x in all; the 4-epoch limit allows
    # N >= 87k at 1e13, so the profile starts there
    1e13: [(2, 56), (2, 64), (3, 64), (3, 72), (3, 80), (4, 96)],
}
SEQ = 128
TRAIN_TOKENS = _second.TRAIN_TOKENS
MAX_EPOCHS = 4
DECAY = 0.2
CONFIG = _first.CONFIG
OVERRIDES = dict(_second.OVERRIDES)
LR_FIT = os.path.join(os.path.dirname(__file__), "..", "results", "isoflop_cpu", "lr_grid", "fits.json")

n_head, n_total = _first.n_head, _first.n_total


def batch(C: float) -> int:
    """8 (C / 1e12)^0.6 sequences, rounded to a power of 2: 4, 8, 16, 32 at 3e11, 1e12, 3e12, 1e13."""
    return int(2 ** round(math.log2(8 * (C / 1e12) ** 0.6)))


def steps(shape, C: float) -> int:
    return math.ceil(C / (6 * n_total(shape)) / (batch(C) * SEQ))


def warmup(n_steps: int) -> int:
    return max(20, round(0.05 * n_steps))


def fitted_lr(shape) -> float:
    """lr_opt = k N^-x from the lr grid's fit (fits.json written by gpt2jax-analyze)."""
    if not os.path.exists(LR_FIT):
        raise FileNotFoundError(f"{LR_FIT} is missing: run the lr grid first (see this spec's docstring)")
    with open(LR_FIT) as f:
        fit = json.load(f)["lr"]
    if "skipped" in fit:
        raise ValueError(f"the lr grid's fit was skipped: {fit['skipped']}")
    return float(fit["k"] * n_total(shape) ** -fit["x"])


def wsd_run(name: str, shape, C: float, lr: float, extra: dict | None = None, tags: dict | None = None) -> Run:
    n_layer, n_embd = shape
    epochs = C / (6 * n_total(shape)) / TRAIN_TOKENS
    if epochs > MAX_EPOCHS:
        raise ValueError(f"{shape} at C={C:g} would see its data {epochs:.2f} times (> {MAX_EPOCHS})")
    s, b = steps(shape, C), batch(C)
    over = {**OVERRIDES, "model.n_layer": n_layer, "model.n_embd": n_embd, "model.n_head": n_head(shape),
            "model.block_size": SEQ, "train.seq_len": SEQ, "train.batch_size": b, "train.num_steps": s,
            "train.eval_batches": 512 // b, "train.eval_every": 0, "checkpoint.every": 0, "checkpoint.keep": 1,
            "optim.schedule": "wsd", "optim.decay_fraction": DECAY, "optim.lr": lr,
            "optim.warmup_steps": warmup(s), **(extra or {})}
    return Run(name, CONFIG, over, budget_flops=C,
               tags={"n_layer": n_layer, "n_embd": n_embd, "n_head": n_head(shape), **(tags or {})})


def get_sweep(lr_rule=fitted_lr):
    runs = [wsd_run(f"c3-C{C:.0e}-L{s[0]}-D{s[1]}".replace("e+", "e"), s, C, lr_rule(s))
            for C, shapes in GRID.items() for s in shapes]
    return Sweep(runs=runs, name="chinchilla_cpu3")
