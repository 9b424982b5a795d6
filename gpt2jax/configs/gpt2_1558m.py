"""GPT-2 1.5B: 48 layers, 1600 wide, 25 heads, context 1024 (OpenAI's shapes); training defaults in
gpt2jax.config.gpt2_config."""

from gpt2jax.config import gpt2_config


def get_config():
    return gpt2_config(n_layer=48, n_embd=1600, n_head=25, lr=2e-4)
