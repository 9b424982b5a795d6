"""`python -m experiments.sweep` is now `gpt2jax-sweep` (python -m gpt2jax.sweep), its code the installed
library gpt2jax.scaling. This shim keeps the old command and old specs' `from experiments.sweep import ...`
working; new specs import from gpt2jax.scaling.
"""

from gpt2jax.scaling import *  # noqa: F401,F403
from gpt2jax.sweep import define_flags, main, run_sweep  # noqa: F401

if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
