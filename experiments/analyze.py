"""`python -m experiments.analyze` is now `gpt2jax-analyze` (python -m gpt2jax.analyze), its code
gpt2jax.scaling (table, analysis, fits, plots, planner). This shim keeps the old command working.
"""

from gpt2jax.analyze import define_flags, main

if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
