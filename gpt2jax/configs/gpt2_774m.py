"""GPT-2 774M: 36 layers, 1280 wide, 20 heads, context 1024 (OpenAI's shapes); training defaults in
gpt2jax.config.gpt2_config."""

from gpt2jax.config import gpt2_config


def get_config():
    return gpt2_config(n_layer=36, n_embd=1280, n_head=20, lr=2.5e-4)
