"""GPT-2 355M: 24 layers, 1024 wide, 16 heads, context 1024 (OpenAI's shapes); training defaults in
gpt2jax.config.gpt2_config."""

from gpt2jax.config import gpt2_config


def get_config():
    return gpt2_config(n_layer=24, n_embd=1024, n_head=16, lr=3e-4)
