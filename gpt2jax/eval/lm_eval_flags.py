"""evaluate's lm-eval and layout flags, in a module of their own so that `gpt2jax-evaluate --help` and a flag
mistake answer without importing JAX or lm-eval (gpt2jax/eval/lm_eval_adapter.py uses them)."""

from __future__ import annotations

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default (HFLM.max_gen_toks)


def define_flags(fv) -> None:
    """evaluate's lm-eval and layout flags (defined without importing lm-eval)."""
    from absl import flags

    flags.DEFINE_string(
        "lm_eval_tasks", "",
        "Comma-separated lm-evaluation-harness tasks (registered names or ones defined in "
        "--lm_eval_include). With it, --tasks defaults to none. Needs pip install -e '.[lm_eval]'.",
        flag_values=fv)
    flags.DEFINE_string("lm_eval_include", "", "A directory of lm-eval task YAML files.", flag_values=fv)
    flags.DEFINE_integer("lm_eval_num_fewshot", None, "Few-shot examples (default: each task's own).", flag_values=fv)
    flags.DEFINE_integer("lm_eval_bootstrap_iters", 100_000,
                         "lm-eval's bootstrap iterations for stderrs of non-mean metrics (0 = none).", flag_values=fv)
    flags.DEFINE_integer("lm_eval_max_gen_toks", DEFAULT_MAX_GEN_TOKS,
                         "New tokens for generation tasks that do not say.", flag_values=fv)
    flags.DEFINE_enum("mesh", "data", ["data", "run"],
                      "data: parameters replicated, batches split over all devices; run: the run's "
                      "config.mesh and rules, as in training (gpt2jax/eval/placement.py).", flag_values=fv)
