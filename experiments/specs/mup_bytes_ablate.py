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
  showed lr / 4 costs 0.14 at width 128 and nothing at 16, so the direction to try is up).

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
    return Sweep(runs=runs, name="mup_bytes_ablate")
