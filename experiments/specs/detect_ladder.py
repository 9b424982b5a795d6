"""Generators for the detectability study (experiments/detectability.py): five sizes trained on the same bytes,
as GPT-2's four sizes were trained on the same WebText, so that a larger generator is a better one.

    gpt2jax-prepare --source=shakespeare --split=tail --tokenizer=bytes --out_dir=data/shakespeare_bytes
    gpt2jax-sweep experiments/specs/detect_ladder.py --root=runs/detect_ladder
    python -m experiments.detectability --root=runs/detect_ladder --out=experiments/results/detectability

Shapes (n_layer x n_embd, heads of 16): 2x16, 2x32, 2x64, 3x96, 4x128 (12.8k to 843k parameters, 66x), each
trained on the same 3.2M bytes (two thirds of the 4.80M training bytes, no byte seen twice): 16 sequences of
128 bytes a step, 1,563 steps, warmup 5%, cosine to 0, peak lr 4e-3 x 128 / width capped at 1e-2 (the IsoFLOP
sweep's rule), AdamW beta2 0.99, weight decay 0.1, fp32; val loss over the first 512 windows of the held-out
tail. A fixed token count (not a fixed budget) puts every size on the same data, and under the Chinchilla form
L = E + A / N^alpha + B / D^beta the loss then falls with N, so "larger" means "better" along the ladder. (A
first try with 1.6M bytes at 32 sequences a step, 391 steps, left every size near the bigram's loss, 2.45-2.63
nats/byte, in no order of size: byte-level models need over a thousand steps here, as the IsoFLOP sweep's rule
of >= 1,500 steps found.)
"""

from gpt2jax.scaling import Sweep, ladder

SHAPES = [(2, 16), (2, 32), (2, 64), (3, 96), (4, 128)]
SEQ = 128
BATCH = 16
TOKENS = 3_200_000
OVERRIDES = {
    "data.dir": "data/shakespeare_bytes",
    "model.vocab_size": 257,
    "model.vocab_multiple": 1,
    "optim.schedule": "cosine",
    "optim.b2": 0.99,
    "optim.weight_decay": 0.1,
    "train.log_every": 100,
    "train.eval_batches": 512 // BATCH,
    "train.eval_every": 0,
    "checkpoint.every": 0,
    "checkpoint.keep": 1,
    "train.compile_cache": "",
}


def get_sweep():
    runs = ladder(
        "det", "configs/tiny.py", SHAPES, batch_size=BATCH, seq_len=SEQ, tokens=TOKENS, head_dim=16,
        lr=lambda n_embd, _n: min(1e-2, 4e-3 * 128 / n_embd), min_lr_ratio=0.0, warmup_fraction=0.05,
        overrides=dict(OVERRIDES),
    )
    return Sweep(runs=runs, name="detect_ladder")
