"""muP against SP on the byte vocabulary (257 tokens, so the embedding and head are a few percent of each model
and the hidden matrices, which muP rescales, carry the model): learning-rate grids at widths 24 (muP's base
width, where muP and SP are the same model), 48 and 192 (8x), 2 layers, 2 heads (the head size grows with the
width, 12 -> 96), tied embeddings, on Shakespeare as bytes.

    gpt2jax-prepare --source=shakespeare --split=tail --tokenizer=bytes --out_dir=data/shakespeare_bytes
    gpt2jax-sweep experiments/specs/mup_bytes.py --root=runs/mup_bytes
    python -m experiments.lr_transfer --root=runs/mup_bytes --out=experiments/results/mup_bytes

Every run: 300 steps of 8 x 128 bytes (307,200 bytes, 6% of an epoch), 30 warmup steps, cosine to lr / 10,
AdamW beta2 0.99, weight decay 0.1, fp32, val loss on the first 256 windows of the held-out tail. Learning
rates are powers of 2: 2^-9 .. 2^-3 for the base width and for muP, 2^-11 .. 2^-5 for SP at the wider widths
(SP's optimum falls as the width grows); a second seed (`train.seed=1`: another init and data order) at
2^-7 .. 2^-5 for every curve but SP's wide ones, and 2^-9 .. 2^-7 for those.
"""

import os

from gpt2jax.scaling import Sweep, spec_module

_transfer = spec_module(os.path.join(os.path.dirname(__file__), "mup_transfer.py"))

BASE = 24
WIDTHS = (48, 192)
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
    "train.batch_size": 8,
    "train.num_steps": 300,
    "train.log_every": 50,
    "train.eval_every": 0,
    "train.eval_batches": 32,
    "train.compile_cache": "",
    "optim.warmup_steps": 30,
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
    runs = lr_runs(f"base-w{BASE}", BASE, "sp", _pow2(-9, -3)) + lr_runs(f"s1-base-w{BASE}", BASE, "sp",
                                                                          _pow2(-7, -5), seed1)
    for w in WIDTHS:
        runs += lr_runs(f"mup-w{w}", w, "mup", _pow2(-9, -3)) + lr_runs(f"sp-w{w}", w, "sp", _pow2(-11, -5))
        runs += lr_runs(f"s1-mup-w{w}", w, "mup", _pow2(-7, -5), seed1)
        runs += lr_runs(f"s1-sp-w{w}", w, "sp", _pow2(-9, -7), seed1)
    return Sweep(runs=runs, name="mup_bytes")
