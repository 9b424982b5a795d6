"""The quickstart default: a small GPT-2 (4 layers x 256, 4 heads, the real 50257-token vocabulary,
context 64) trained on Shakespeare from scratch on a 2-core CPU.

Sized to finish `make quickstart` within 10 minutes there: 880 steps of 8 x 64 tokens (450k tokens,
a third of an epoch). On this budget small batches win: at equal tokens, 8 x 64 and 4 x 128 reached
lower loss than 8 x 128, and 16 x 128 at lr 2e-3 was far behind. Layers are unrolled (faster than
lax.scan on the CPU at this depth). See README for the measured time and val loss.
"""

from gpt2jax.config import get_config as base


def get_config():
    c = base()
    c.model.n_layer, c.model.n_embd, c.model.n_head, c.model.block_size = 4, 256, 4, 64
    c.model.scan_layers = False
    c.data.dir = "data/shakespeare"
    c.train.num_steps = 880
    c.train.batch_size = 8
    c.train.log_every = 20
    c.train.eval_every = 0  # only at the end: the whole val split (78k tokens)
    c.train.eval_batches = 0
    c.optim.lr = 1e-3
    c.optim.min_lr = 1e-4
    c.optim.warmup_steps = 20
    c.checkpoint.every = 0  # at the end (and on SIGTERM/SIGINT)
    c.checkpoint.keep = 1
    return c
