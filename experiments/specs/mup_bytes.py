"""muP against SP on the byte vocabulary (257 tokens, so the embedding and head are a few percent of each model
and the hidden matrices, which muP rescales, carry the model): learning-rate grids at widths 16 (muP's base
width, where muP and SP are the same model), 32 and 128 (8x), 2 layers, 2 heads (the head size grows with the
width, 8 -> 64), tied embeddings, on Shakespeare as bytes.

    gpt2jax-prepare --source=shakespeare --split=tail --tokenizer=bytes --out_dir=data/shakespeare_bytes
    gpt2jax-sweep experiments/specs/mup_bytes.py --root=runs/mup_bytes
    python -m experiments.lr_transfer --root=runs/mup_bytes --out=experiments/results/mup_bytes

Every run: 1,000 steps of 16 x 128 bytes (2.05M bytes, 0.43 of an epoch), 50 warmup steps, cosine to lr / 10,
AdamW beta2 0.99, weight decay 0.1, fp32, val loss on the first 512 windows of the held-out tail. Byte-level
models here sit near a bigram model's loss (~2.5 nats/byte) for their first few hundred steps: the first
version of this spec (300 steps of 8 sequences) would have compared models on that plateau, as the detection
ladder's first try did (experiments/specs/detect_ladder.py); at 1,563 steps of 16 sequences that ladder's 2x16
and 2x32 end at 2.19 and 1.98, so width pays here.

Learning rates are powers of 2: 2^-8 .. 2^-4 for the base width and for muP; for SP at the wider widths the
grid moves down with Adam's 1 / width rule (32: 2^-9 .. 2^-5, 128: 2^-11 .. 2^-7). A second seed
(`train.seed=1`: another init and data order) at the middle three points of each grid (two at width 128, whose
runs cost most). 38 runs; estimated from experiments/results/step_overhead (a step costs its tokens: ~1.4,
~2 and ~9.5 ms per sequence at widths 16, 32, 128, plus ~15 s of start-up per run) at about 55 minutes on the
2-core machine. A pilot of its widths 16 and 32 (experiments/results/mup_bytes/pilot/) found 1,000 steps too
few: the runs are still leaving the plateau when they end, and a second seed moves a loss by up to 0.47
nats/byte, more than the learning rate does; run it longer (>= 3,000 steps) before reading a muP result off it.
"""

import os

from gpt2jax.scaling import Sweep, spec_module

_transfer = spec_module(os.path.join(os.path.dirname(__file__), "mup_transfer.py"))

BASE = 16
WIDTHS = (32, 128)
SP_GRID = {32: (-9, -5), 128: (-11, -7)}
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
    "train.num_steps": 1000,
    "train.log_every": 50,
    "train.eval_every": 0,
    "train.eval_batches": 32,  # x 16 sequences: 512 windows
    "train.compile_cache": "",
    "optim.warmup_steps": 50,
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
        lo, hi = SP_GRID[w]
        s_mup, s_sp = (_pow2(-7, -5), _pow2(lo + 1, hi - 1)) if w < 128 else (_pow2(-7, -6), _pow2(lo + 1, lo + 2))
        runs += lr_runs(f"mup-w{w}", w, "mup", _pow2(-8, -4)) + lr_runs(f"sp-w{w}", w, "sp", _pow2(lo, hi))
        runs += lr_runs(f"s1-mup-w{w}", w, "mup", s_mup, seed1)
        runs += lr_runs(f"s1-sp-w{w}", w, "sp", s_sp, seed1)
    return Sweep(runs=runs, name="mup_bytes")
