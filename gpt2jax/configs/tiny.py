"""A tiny GPT-2 for tests and smoke runs: 2 layers, 64 wide, context 32, the real vocabulary."""

from gpt2jax.config import get_config as base


def get_config():
    c = base()
    c.model.n_layer, c.model.n_embd, c.model.n_head, c.model.block_size = 2, 64, 2, 32
    c.data.dir = "data/shakespeare"
    c.train.num_steps = 20
    c.train.batch_size = 8
    c.train.log_every = 5
    c.train.eval_every = 10
    c.train.eval_batches = 2
    c.optim.lr = 1e-3
    c.optim.min_lr = 1e-4
    c.optim.warmup_steps = 5
    c.checkpoint.every = 10
    c.checkpoint.keep = 2
    return c
