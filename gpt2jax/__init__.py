"""gpt2jax: a JAX/Flax GPT-2 codebase for scaling research."""

__version__ = "0.1.0"
