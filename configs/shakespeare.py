"""The quickstart default: a small GPT-2 (4 layers x 256, real 50257 vocabulary) on Shakespeare.

Sized to finish on a 2-core CPU in minutes (see README for the measured time and val loss).
"""

from gpt2jax.config import get_config as base


def get_config():
    c = base()
    c.model.n_layer, c.model.n_embd, c.model.n_head, c.model.block_size = 4, 256, 4, 128
    c.data.dir = "data/shakespeare"
    c.train.num_steps = 400
    c.train.batch_size = 16
    c.train.log_every = 20
    c.train.eval_every = 100
    c.train.eval_batches = 0  # the whole val split (69k tokens)
    c.optim.lr = 2e-3
    c.optim.min_lr = 2e-4
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.1
    c.checkpoint.every = 200
    c.checkpoint.keep = 1
    return c
