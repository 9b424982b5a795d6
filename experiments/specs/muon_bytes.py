"""Muon against AdamW on the byte-level ladder, at three widths and equal tokens: a first look at how Muon's
advantage scales.

    gpt2jax-prepare --source=shakespeare --split=tail --tokenizer=bytes --out_dir=data/shakespeare_bytes
    gpt2jax-sweep experiments/specs/muon_bytes.py --root=runs/muon_bytes
    python experiments/muon_ladder.py --root=runs/muon_bytes --out=experiments/results/muon_bytes

Every run is a run of experiments/specs/mup_bytes_tuned.py's SP ladder (2 layers, 2 heads, 3,000 steps of 16 x 128
bytes = 6.1M tokens, cosine to lr / 10 after 150 warmup steps, beta2 0.99, weight decay 0.1, fp32), widths 16,
32 and 128. AdamW: at each width the learning rate that study found best (2^-5, 2^-6, 2^-9), run again here so
both sides share the machine. Muon (optim.name='muon', Nesterov momentum 0.95, 5 Newton-Schulz steps, no weight
decay on its matrices, Jordan et al.'s shape scaling) on the hidden matrices, at muon_lr 0.01, 0.02, 0.04 and
0.08 (the default is Jordan et al.'s 0.02; 0.08 was added once 0.04 came out best), with the embeddings, biases
and gains on AdamW at that width's AdamW rate; at width 128 also 0.005, once 0.01 came out best there. 16 runs.
"""

import os

from gpt2jax.scaling import Sweep, spec_module

_bytes = spec_module(os.path.join(os.path.dirname(__file__), "mup_bytes.py"))
ADAMW_LR = {16: 2.0**-5, 32: 2.0**-6, 128: 2.0**-9}  # mup_bytes_tuned's SP optimum per width
MUON_LRS = (0.01, 0.02, 0.04, 0.08)  # 0.08 added once 0.04, the first grid's edge, came out best at widths 16 and 32
EXTRA = {128: (0.005,)}  # added once 0.01, the grid's lower edge, came out best at width 128


def get_sweep():
    runs = []
    for w, lr in ADAMW_LR.items():
        runs += _bytes.lr_runs(f"adamw-w{w}", w, "sp", [lr])
        for mlr in MUON_LRS + EXTRA.get(w, ()):
            over = {**_bytes.COMMON, "optim.name": "muon", "optim.muon_lr": mlr}
            runs += _bytes.lr_runs(f"muon{mlr:g}-w{w}", w, "sp", [lr], over)
    return Sweep(runs=runs, name="muon_bytes")
