"""GPT-2 124M: 12 layers, 768 wide, 12 heads, context 1024 (OpenAI's shapes); training defaults in
gpt2jax.config.gpt2_config."""

from gpt2jax.config import gpt2_config


def get_config():
    return gpt2_config(n_layer=12, n_embd=768, n_head=12, lr=6e-4)
