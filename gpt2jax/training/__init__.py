"""The pieces of `gpt2jax.train`, one idea each (see gpt2jax/train.py's docstring for the map)."""
