"""Learning-rate transfer under muP vs SP on a 2-core CPU: one learning-rate grid at width 64 (muP's base width,
where muP and SP are the same model) and at width 512 (8x) under each parametrization; 2 layers, 4 heads (the
head size grows with the width, 16 -> 128), tied embeddings, on the quickstart corpus.

    gpt2jax-prepare --source=shakespeare --split=tail --out_dir=data/shakespeare
    gpt2jax-sweep experiments/specs/mup_transfer.py --root=runs/mup_transfer
    python -m experiments.lr_transfer --root=runs/mup_transfer --out=experiments/results/mup

At width 512 muP divides the hidden matrices' init std by sqrt(8) and their Adam learning rate by 8, multiplies
the logits by 1/8 and scales attention by sqrt(K0)/K (gpt2jax/model.py ParamSpec). Every run: 250 steps of
8 x 64 tokens (128,000 tokens), 25 warmup steps, cosine to lr/10, weight decay 0.1, val loss on the first
40 x 512 tokens of the val split at the end. Learning rates are powers of 2: the base width over
2^-11 .. 2^-3, muP at width 512 over 2^-8 .. 2^-3 and SP at width 512 over 2^-13 .. 2^-9 (where their optima
lay in the earlier width-32 -> 256 sweep, experiments/results/mup/w32_256/); then a second seed
(`train.seed=1`: another init and data order) at 2^-9 .. 2^-5 for the base width and 2^-8 .. 2^-5 for muP at
width 512. The wide runs take ~3.5 min each on 2 cores, the whole sweep ~70 min.

The earlier sweep (base width 32, experiments/specs/mup_transfer_w32.py) found the curves too flat at the top
to place an optimum within one grid step; this one uses a wider base (head size 16 instead of 8), more steps,
and lr_transfer.py places each curve's optimum by a parabola through the grid's best point and its neighbours.
"""

from gpt2jax.scaling import Sweep, grid

BASE, WIDE = 64, 512
COMMON = {
    "model.n_layer": 2,
    "model.n_head": 4,
    "model.block_size": 64,
    "model.scan_layers": False,
    "model.mup_base_width": BASE,
    "train.batch_size": 8,
    "train.num_steps": 250,
    "train.log_every": 25,
    "train.eval_every": 0,
    "train.eval_batches": 40,
    "optim.warmup_steps": 25,
    "checkpoint.every": 0,
    "checkpoint.keep": 1,
    "data.dir": "data/shakespeare",
    "train.loss_rows": 0,  # dense logits, as these results were trained (the quickstart uses the fused loss)
    "model.dtype": "float32",  # fp32 matmuls, as these results were trained (the quickstart uses bf16)
    "optim.b2": 0.95,  # as these results were trained (the quickstart now uses 0.99)
}


def _pow2(lo: int, hi: int) -> list[float]:
    return [2.0**k for k in range(lo, hi + 1)]


def lr_runs(prefix, width, parametrization, lrs, common=COMMON, config="configs/shakespeare.py"):
    """One run per learning rate at this width and parametrization, cosine to lr / 10."""
    runs = grid(prefix, config, {"optim.lr": lrs},
                overrides={**common, "model.n_embd": width, "model.parametrization": parametrization},
                tags={"width": width, "parametrization": parametrization})
    for r in runs:  # cosine to lr / 10
        r.overrides["optim.min_lr"] = r.overrides["optim.lr"] / 10
    return runs


def get_sweep():
    runs = (lr_runs(f"base-w{BASE}", BASE, "sp", _pow2(-11, -3))
            + lr_runs(f"mup-w{WIDE}", WIDE, "mup", _pow2(-8, -3))
            + lr_runs(f"sp-w{WIDE}", WIDE, "sp", _pow2(-13, -9)))
    # A second seed (init and data order) around the two optima muP compares: lr_transfer averages it in.
    seed1 = {**COMMON, "train.seed": 1}
    runs += (lr_runs(f"s1-base-w{BASE}", BASE, "sp", _pow2(-9, -5), seed1)
             + lr_runs(f"s1-mup-w{WIDE}", WIDE, "mup", _pow2(-8, -5), seed1))
    return Sweep(runs=runs, name="mup_transfer")
