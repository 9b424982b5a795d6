"""The CPU proxy ladder: 7 GPT-2 shapes trained on the quickstart corpus on a 2-core CPU.

    gpt2jax-prepare --source=shakespeare --split=tail --out_dir=data/shakespeare
    gpt2jax-sweep experiments/specs/cpu_ladder.py --root=runs/cpu_ladder

Shapes (n_layer x n_embd, heads of 32): 1x32, 2x32, 2x64, 3x96, 4x128, 4x192, 6x256, i.e. 12.8k to
4.74M non-embedding parameters (371x; 1.6M to 17.6M with the 50257-token embedding table). The real
GPT-2 vocabulary is kept, so the LM head is most of every step and the time per token grows with the
width far more than with the depth.

Training, every rung alike (Kaplan et al.'s L(N) at a fixed data budget D applies): context 64,
batch 8 x 64 tokens, 640 steps = 327,680 tokens per run (0.22 epochs of the 1.49M training tokens,
so no token is seen twice), 20 warmup steps then cosine to lr/10; learning rate from Kaplan et al.
2020 eq. D.1, lr = 0.003239 - 0.0001395 ln N (N non-embedding: 1.92e-3 for the smallest rung,
1.09e-3 for the largest; the quickstart's 4x256 used 1e-3). Layers unrolled (faster than scan on the
CPU), one checkpoint at the end, the whole val split (78,300 tokens) evaluated at the end; the rest
as configs/shakespeare.py (AdamW 0.9/0.95, weight decay 0.1, clipping 1.0, seed 0; beta2, dtype and loss pinned below).

Sizing (measured 2026-12-01 with `gpt2jax-train --config=configs/shakespeare.py` and the
shape overrides, 60 steps of 8 x 64 tokens, rate of the last 20 steps; the CPU was shared with other
jobs, load average 1.6 to 6.7 on 2 cores, so these are lower bounds): 1x32 2,550 tokens/s, 2x64 850
tokens/s, 6x256 440 tokens/s; about 25-35 s per run of start-up, compilation, the final eval and the
save. On an unshared CPU the quickstart's 4x256 trains at ~950 tokens/s (README), which puts 6x256 at
~870 tokens/s. Modelling the time per token as 0.22 ms + 8.6 us per training MFLOP/token (through
4x256 at 950 tokens/s and 1x32 at an assumed ~3,300 tokens/s unshared, a little above the 2,550
measured at load 1.6), the 7 rungs cost 4.0 ms per token together (880 to 3,300 tokens/s):
327,680 tokens x 4.0 ms = 22 min, plus ~3 min of per-run overhead = ~25 min on an unshared CPU.
Measured: the whole sweep (`gpt2jax-sweep experiments/specs/cpu_ladder.py
--root=runs/cpu_ladder`, 2026-12-01 08:08-08:43, the CPU shared with other jobs, load average 10-14)
took 35 min: per rung 3:49, 2:55, 3:34, 4:06, 5:01, 6:29 and 9:06 (smallest to largest), at median
2,210, 2,390, 1,880, 1,670, 1,330, 1,000 and 680 tokens/s.
"""

from gpt2jax.scaling import Sweep, ladder

SHAPES = [(1, 32), (2, 32), (2, 64), (3, 96), (4, 128), (4, 192), (6, 256)]
SEQ_LEN = 64
BATCH = 8
TOKENS = 640 * BATCH * SEQ_LEN  # 327,680 per run


def get_sweep():
    runs = ladder(
        "cpu",
        "configs/shakespeare.py",
        SHAPES,
        batch_size=BATCH,
        seq_len=SEQ_LEN,
        tokens=TOKENS,
        head_dim=32,
        lr="kaplan",
        overrides={
            "optim.warmup_steps": 20,
            "train.log_every": 20,
            "train.eval_every": 0,  # only at the end
            "train.eval_batches": 0,  # the whole val split
            "checkpoint.every": 0,  # only at the end (and on Ctrl-C)
            "checkpoint.keep": 1,
            "model.scan_layers": False,
            "data.dir": "data/shakespeare",
            "train.loss_rows": 0,  # dense logits, as these results were trained (the quickstart uses the fused loss)
            "model.dtype": "float32",  # fp32 matmuls, as these results were trained (the quickstart uses bf16)
            "optim.b2": 0.95,  # as these results were trained (the quickstart now uses 0.99)
        },
    )
    return Sweep(runs=runs, name="cpu_ladder")
