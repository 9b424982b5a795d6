"""Experiments on gpt2jax: sweep specs (specs/), study scripts (coordinate check, learning-rate transfer,
inspection, profiling, HLO fingerprints, GPU checks) and committed results with their commands (results/).
The tools they use are installed with the package: gpt2jax-sweep, gpt2jax-analyze, gpt2jax.scaling.
"""
