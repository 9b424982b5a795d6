"""Why muP's width-128 model of experiments/specs/mup_bytes.py trails SP's: the two suspects TP5 names, one at a
time, at muP's transferred optimum (lr 2^-5, the base width's best), each run otherwise that spec's.

- `attn-sqrt`: SP's score scale 1/sqrt(K) instead of muP's sqrt(K0)/K (at width 128, K = 64 and K0 = 8, so
  muP's scores are 2.8x smaller: a flatter attention, which the model must learn its way out of);
- `vec-q`: the non-hidden groups (the tied embedding, norm gains, biases) at a quarter of the learning rate
  (under muP they keep the base width's 2^-5 at every width, 16x what SP's width-128 optimum gives them),
  at width 128 and, to see what it costs where it is tuned, at the base width 16;
- `untied`: a separate LM head (model.tie_embeddings=False), muP at lr 2^-5 and SP at its width-128 optimum
  2^-8: with the head tied, muP's logit multiplier 1/8 at width 128 makes the one matrix serve as an input
  embedding at scale 1 and as a readout that must grow 8x to give the same logits;
- `vec-x2`, `vec-x4`: the same groups at 2x and 4x the learning rate, at widths 16, 32 and 128 (the first runs
  showed lr / 4 costs 0.14 at width 128 and nothing at 16, so the direction to try is up);
- `out-x2`, `out-x4`: TP5's output multiplier (`model.mup_output_mult`, the logits times mult / width_mult) at
  2 and 4, at widths 16, 32 and 128: with AdamW the tied embedding's size settles where its updates (~lr a
  coordinate) balance the decay (lr x wd), so at muP's larger embedding lr and the 1/8 logit multiplier the
  logits of width 128 may stay smaller than SP's;
- `wd0`: no weight decay, at widths 16 and 128 (the same mechanism, from the other side);
- `out-x0.5`: the output multiplier downward (x2 and x4 were worse at every width);
- `init-x2.83`: the hidden matrices' init std times sqrt(8) (`model.mup_hidden_init`), so that at width 128
  muP's hidden init equals SP's 0.02 (the one difference left between SP at 2^-8 and muP at 2^-5 there besides
  the measured ones: their hidden learning rates are the same, 2^-5 / 8);
- `init-x2.83` again, as muP's tuned base model: the learning rates 2^-6 and 2^-4 at widths 16, 32 and 128, and
  seeds 1 and 2 at 2^-5 at widths 16, 32 and 128 (the first round put width 128 level with SP's best);
- `init-grid`: the hidden init multiplier tuned where TP5 tunes base hyperparameters, at the base width: 1, 2,
  sqrt(8), 4 and sqrt(32) at width 16, lr 2^-5, seeds 0, 1 and 2 (the runs that exist under other names, x1's
  seeds 0 and 1 in the main sweep and x sqrt(8)'s three seeds above, are not repeated); then the grid's best,
  x4, at width 128 (seeds 0, 1 and 2), to see whether the base width's pick carries to the widest;
- `seed2`, `seed3`: more seeds at the two optima of width 128 (SP at 2^-8, seeds 1 and 2, and at 2^-9, seed 2;
  muP at 2^-5, seeds 2 and 3), so that the comparison of the two bests rests on three or four seeds a point.

    gpt2jax-sweep experiments/specs/mup_bytes_ablate.py --root=runs/mup_bytes_ablate
    python -m experiments.lr_transfer --root=runs/mup_bytes_ablate ...   (see experiments/results/mup_bytes/README.md)
"""

import os

from gpt2jax.scaling import Sweep, spec_module

_bytes = spec_module(os.path.join(os.path.dirname(__file__), "mup_bytes.py"))
LR = 2.0**-5


def get_sweep():
    c = _bytes.COMMON
    runs = _bytes.lr_runs("attn-sqrt-mup-w128", 128, "mup", [LR], {**c, "model.mup_attention": "sqrt"})
    runs += _bytes.lr_runs("vec-q-mup-w128", 128, "mup", [LR], {**c, "model.mup_vector_lr": 0.25})
    runs += _bytes.lr_runs("vec-q-mup-w16", 16, "mup", [LR], {**c, "model.mup_vector_lr": 0.25})
    untied = {**c, "model.tie_embeddings": False}
    runs += _bytes.lr_runs("untied-mup-w128", 128, "mup", [LR], untied)
    runs += _bytes.lr_runs("untied-sp-w128", 128, "sp", [2.0**-8], untied)
    for mult in (2, 4):  # upward, where lr / 4 pointed: at every width, to see whether an optimum transfers
        for w in (16, 32, 128):
            runs += _bytes.lr_runs(f"vec-x{mult}-mup-w{w}", w, "mup", [LR], {**c, "model.mup_vector_lr": float(mult)})
    for mult in (2, 4, 0.5):  # the output multiplier, the one base hyperparameter TP5 names that is not yet measured
        for w in (16, 32, 128):
            runs += _bytes.lr_runs(f"out-x{mult}-mup-w{w}", w, "mup", [LR], {**c, "model.mup_output_mult": float(mult)})
    for w in (16, 128):
        runs += _bytes.lr_runs(f"wd0-mup-w{w}", w, "mup", [LR], {**c, "optim.weight_decay": 0.0})
    for w in (16, 32, 128):
        runs += _bytes.lr_runs(f"init-x2.83-mup-w{w}", w, "mup", [LR], {**c, "model.mup_hidden_init": 8**0.5})
    init = {**c, "model.mup_hidden_init": 8**0.5}
    for w in (16, 32, 128):
        runs += _bytes.lr_runs(f"init-x2.83-mup-w{w}", w, "mup", [LR / 2, LR * 2], init)
    for seed in (1, 2):
        for w in (16, 32, 128):
            runs += _bytes.lr_runs(f"s{seed}-init-x2.83-mup-w{w}", w, "mup", [LR], {**init, "train.seed": seed})
    for seed, par, lr in ((1, "sp", 2.0**-8), (2, "sp", 2.0**-8), (2, "mup", LR), (3, "mup", LR), (2, "sp", 2.0**-9)):
        runs += _bytes.lr_runs(f"seed{seed}-{par}-w128", 128, par, [lr], {**c, "train.seed": seed})
    for mult, seeds in ((1, (2,)), (2, (0, 1, 2)), (4, (0, 1, 2)), (32**0.5, (0, 1, 2))):
        for seed in seeds:
            runs += _bytes.lr_runs(f"init-grid-x{mult:.3g}-s{seed}-mup-w16", 16, "mup", [LR],
                                   {**c, "model.mup_hidden_init": float(mult), "train.seed": seed})
    for seed in (0, 1, 2):
        runs += _bytes.lr_runs(f"init-grid-x4-s{seed}-mup-w128", 128, "mup", [LR],
                               {**c, "model.mup_hidden_init": 4.0, "train.seed": seed})
    return Sweep(runs=runs, name="mup_bytes_ablate")
