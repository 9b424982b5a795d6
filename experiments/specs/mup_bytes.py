"""muP against SP on the byte vocabulary (257 tokens, so the embedding and head are a few percent of each model
and the hidden matrices, which muP rescales, carry the model): learning-rate grids at widths 16 (muP's base
width, where muP and SP are the same model), 32 and 128 (8x), 2 layers, 2 heads (the head size grows with the
width, 8 -> 64), tied embeddings, on Shakespeare as bytes.

    gpt2jax-prepare --source=shakespeare --split=tail --tokenizer=bytes --out_dir=data/shakespeare_bytes
    gpt2jax-sweep experiments/specs/mup_bytes.py --root=runs/mup_bytes
    python -m experiments.lr_transfer --root=runs/mup_bytes --out=experiments/results/mup_bytes

Every run: 3,000 steps of 16 x 128 bytes (6.1M bytes, 1.3 epochs), 150 warmup steps, cosine to lr / 10,
AdamW beta2 0.99, weight decay 0.1, fp32, val loss on the first 512 windows of the held-out tail. Byte-level
models here sit near a bigram model's loss (~2.5 nats/byte) for their first several hundred steps and leave it
slowly: a pilot of widths 16 and 32 at 1,000 steps (experiments/results/mup_bytes/pilot/) found a second seed
moving a loss by up to 0.47 nats/byte, more than the learning rate does; at 3,000 steps the same points differ
by 0.01-0.04 between seeds and width 32 beats width 16 by 0.22-0.25 (results/mup_bytes/seeds/). (The first
version, 300 steps of 8 sequences, would have compared models on the plateau.)

Learning rates are powers of 2: 2^-8 .. 2^-4 for the base width and for muP; for SP at the wider widths the
grid moves down with Adam's 1 / width rule (32: 2^-9 .. 2^-5, 128: 2^-11 .. 2^-7). A second seed
(`train.seed=1`: another init and data order) at the middle three points of each grid (at width 128, whose
runs cost most, SP's two around its optimum and muP's 2^-7 .. 2^-5). 39 runs. Measured at 3,000 steps: ~50 s a run at width 16, ~65 s at 32; width 128 estimated
at ~6 min a run from experiments/results/step_overhead/, so about 1 h 45 min on the 2-core machine, more than
the issue's hour: not run in full yet.
"""

import os

from gpt2jax.scaling import Sweep, spec_module

_transfer = spec_module(os.path.join(os.path.dirname(__file__), "mup_transfer.py"))

BASE = 16
WIDTHS = (32, 128)
SP_GRID = {32: (-9, -5), 128: (-11, -7)}  # SP's grid per wide width (exponents of 2)
# The second seed's points (exponents of 2), muP and SP: the middle of each grid; at width 128 SP's two
# around its optimum, and muP's three up to its optimum at 2^-5 (added once the first seed put it there)
SEED1 = {32: ((-7, -5), (-8, -6)), 128: ((-7, -5), (-10, -9))}
COMMON = {
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.block_size": 128,
    "model.vocab_size": 257,
    "model.vocab_multiple": 1,
    "model.scan_layers": False,
    "model.mup_base_width": BASE,
    "model.dtype": "float32",
    "data.dir": "data/shakespeare_bytes",
    "train.seq_len": 128,
    "train.batch_size": 16,
    "train.num_steps": 3000,
    "train.log_every": 50,
    "train.eval_every": 0,
    "train.eval_batches": 32,  # x 16 sequences: 512 windows
    "train.compile_cache": "",
    "optim.warmup_steps": 150,
    "optim.b2": 0.99,
    "optim.weight_decay": 0.1,
    "checkpoint.every": 0,
    "checkpoint.keep": 1,
}


def _pow2(lo: int, hi: int) -> list[float]:
    return [2.0**k for k in range(lo, hi + 1)]


def lr_runs(prefix, width, parametrization, lrs, common=COMMON):
    """One run per learning rate (cosine to lr / 10), as in mup_transfer.py, on the tiny config's layout."""
    return _transfer.lr_runs(prefix, width, parametrization, lrs, common, config="configs/tiny.py")


def get_sweep():
    seed1 = {**COMMON, "train.seed": 1}
    runs = lr_runs(f"base-w{BASE}", BASE, "sp", _pow2(-8, -4)) + lr_runs(f"s1-base-w{BASE}", BASE, "sp",
                                                                          _pow2(-7, -5), seed1)
    for w in WIDTHS:
        (m_lo, m_hi), (s_lo, s_hi) = SEED1[w]
        runs += lr_runs(f"mup-w{w}", w, "mup", _pow2(-8, -4)) + lr_runs(f"sp-w{w}", w, "sp", _pow2(*SP_GRID[w]))
        runs += lr_runs(f"s1-mup-w{w}", w, "mup", _pow2(m_lo, m_hi), seed1)
        runs += lr_runs(f"s1-sp-w{w}", w, "sp", _pow2(s_lo, s_hi), seed1)
    return Sweep(runs=runs, name="mup_bytes")
