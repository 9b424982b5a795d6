"""muP with its base model tuned, against SP, on bytes: the study of experiments/specs/mup_bytes.py again, with
muP's one base hyperparameter that the ablations found to matter, the hidden matrices' init
(`model.mup_hidden_init = sqrt(8)`: at the base width 16 their std is 0.02 x sqrt(8) = 0.057, so that at width
128 it is SP's 0.02; see experiments/results/mup_bytes/README.md for the ablations that found it), and the
grids cut to what the three criteria need, so that the whole study fits in an hour on the 2-core machine.

    gpt2jax-prepare --source=shakespeare --split=tail --tokenizer=bytes --out_dir=data/shakespeare_bytes
    gpt2jax-sweep experiments/specs/mup_bytes_tuned.py --root=runs/mup_bytes_tuned
    python -m experiments.lr_transfer --root=runs/mup_bytes_tuned --nobase_is_sp \\
        --out=experiments/results/mup_bytes/tuned

Every run as in mup_bytes.py (3,000 steps of 16 x 128 bytes, 2 layers, 2 heads, tied embeddings, cosine to
lr / 10 after 150 warmup steps, AdamW beta2 0.99, weight decay 0.1, fp32). Widths 16, 32 and 128 (8x).
SP: three or four learning rates around each width's optimum (Adam's 1 / width rule moves them down with the
width) and a second seed (`train.seed=1`) at one point near it; muP: 2^-6, 2^-5 and 2^-4 at every width (the
base width's optimum and its neighbours), each with seeds 0 and 1, so that every muP curve is seed-averaged at
all three points its parabola goes through (a second seed at the middle point only would compare a two-seed
mean with single seeds beside it). At width 16 muP is not SP here (its init differs), so both are run there
and lr_transfer takes `--nobase_is_sp`. 31 runs; then 2^-7 at width 128, seeds 0 and 1, added once its best
came out at 2^-6, the grid's edge: 33.
"""

import os

from gpt2jax.scaling import Sweep, spec_module

_bytes = spec_module(os.path.join(os.path.dirname(__file__), "mup_bytes.py"))
HIDDEN_INIT = 8**0.5
SP = {16: ((-7, -4), -5), 32: ((-7, -5), -6), 128: ((-9, -7), -9)}  # width -> (grid exponents, seed-1 point)
MUP = (-6, -4)  # every width, seeds 0 and 1 at each point
BELOW = (128,)  # widths whose muP grid goes one step lower (2^-7): width 128's best was 2^-6, the grid's edge


def get_sweep():
    c = _bytes.COMMON
    tuned = {**c, "model.mup_hidden_init": HIDDEN_INIT}
    runs = []
    for w, ((lo, hi), s1) in SP.items():
        name = "base-w16" if w == 16 else f"sp-w{w}"
        runs += _bytes.lr_runs(name, w, "sp", _bytes._pow2(lo, hi))
        runs += _bytes.lr_runs(f"s1-{name}", w, "sp", [2.0**s1], {**c, "train.seed": 1})
    for w in SP:
        lrs = _bytes._pow2(MUP[0] - (w in BELOW), MUP[1])
        runs += _bytes.lr_runs(f"tuned-mup-w{w}", w, "mup", lrs, tuned)
        runs += _bytes.lr_runs(f"s1-tuned-mup-w{w}", w, "mup", lrs, {**tuned, "train.seed": 1})
    return Sweep(runs=runs, name="mup_bytes_tuned")
