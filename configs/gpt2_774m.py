"""GPT-2 774M: 36 layers, 1280 wide, 20 heads, context 1024 (OpenAI's shapes).

Training defaults follow common GPT-2 reproductions (nanoGPT / llm.c): 0.5M-token batches
(512 x 1024 via gradient accumulation), AdamW (0.9, 0.95), weight decay 0.1, warmup then cosine.
Point data.dir at a prepared corpus (e.g. OpenWebText or FineWeb, see README).
"""

from gpt2jax.config import get_config as base


def get_config():
    c = base()
    c.model.n_layer, c.model.n_embd, c.model.n_head = 36, 1280, 20
    c.model.block_size = 1024
    c.data.dir = "data/openwebtext"
    c.train.num_steps = 600_000
    c.train.batch_size = 512
    c.train.eval_every = 2000
    c.train.eval_batches = 100
    c.optim.lr = 2.5e-4
    c.optim.min_lr = 2.5e-4 / 10
    c.optim.warmup_steps = 2000
    c.optim.accum_steps = 16
    c.checkpoint.every = 2000
    return c
