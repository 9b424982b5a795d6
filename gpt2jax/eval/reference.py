"""Published zero-shot numbers for GPT-2, printed beside ours by `python -m gpt2jax.evaluate`.

Copied from /work/shared/reference/zero_shot.md (which gives the sources). Values are in the units of
our metrics: accuracies as fractions (the paper prints percentages), perplexities as is.
"""

from __future__ import annotations

PAPER_SOURCE = (
    "Radford et al. 2019, 'Language Models are Unsupervised Multitask Learners', Table 3 (zero-shot). "
    "The paper used its own (unreleased) invertible detokenizers; its LAMBADA accuracy includes a "
    "stop-word filter (about 52.66% for 1542M without it)."
)
PAPER_SIZES = ("117M", "345M", "762M", "1542M")  # released checkpoints: 124M / 355M / 774M / 1558M

# (task, metric) -> (117M, 345M, 762M, 1542M)
PAPER: dict[tuple[str, str], tuple[float, float, float, float]] = {
    ("lambada", "perplexity"): (35.13, 15.60, 10.87, 8.63),
    ("lambada", "acc"): (0.4599, 0.5548, 0.6012, 0.6324),
    ("cbt_cn", "acc"): (0.8765, 0.9235, 0.9345, 0.9330),
    ("cbt_ne", "acc"): (0.834, 0.871, 0.880, 0.8905),
    ("wikitext2", "word_perplexity"): (29.41, 22.76, 19.93, 18.34),
    ("ptb", "word_perplexity"): (65.85, 47.33, 40.31, 35.76),
    ("enwik8", "bits_per_byte"): (1.16, 1.01, 0.97, 0.93),
    ("text8", "bits_per_char"): (1.17, 1.06, 1.02, 0.98),
    ("wikitext103", "word_perplexity"): (37.50, 26.37, 22.05, 17.48),
    ("1bw", "word_perplexity"): (75.20, 55.72, 44.575, 42.16),
}

# Published lm-evaluation-harness results (0-shot) for OpenAI's checkpoints.
LM_EVAL_MODELS = ("gpt2", "gpt2-xl")
LM_EVAL_SOURCES = {
    ("gpt2", "lambada"): "lm-evaluation-harness issue #2159",
    ("gpt2", "hellaswag"): "public lm-eval runs; treat as +-1 point",
    ("gpt2", "piqa"): "public lm-eval runs; treat as +-1 point",
    ("gpt2", "winogrande"): "public lm-eval runs; treat as +-1 point",
    ("gpt2-xl", "lambada"): "gpt-neo / mesh-transformer-jax READMEs",
    ("gpt2-xl", "hellaswag"): "gpt-neo / mesh-transformer-jax READMEs",
    ("gpt2-xl", "piqa"): "gpt-neo / mesh-transformer-jax READMEs",
    ("gpt2-xl", "winogrande"): "gpt-neo / mesh-transformer-jax READMEs",
}
# model -> (task, metric) -> value. Our `lambada` is lm-eval's lambada_openai.
LM_EVAL: dict[str, dict[tuple[str, str], float]] = {
    "gpt2": {
        ("lambada", "acc"): 0.3256,
        ("lambada", "perplexity"): 40.06,
        ("hellaswag", "acc"): 0.2892,
        ("hellaswag", "acc_norm"): 0.3114,
        ("piqa", "acc_norm"): 0.625,
        ("winogrande", "acc"): 0.516,
    },
    "gpt2-xl": {
        ("lambada", "acc"): 0.5121,
        ("lambada", "perplexity"): 10.63,
        ("hellaswag", "acc"): 0.4004,
        ("hellaswag", "acc_norm"): 0.5089,
        ("piqa", "acc_norm"): 0.708,
        ("winogrande", "acc"): 0.594,
    },
}


def paper(task: str, metric: str):
    """The paper's four values for (task, metric), or None."""
    return PAPER.get((task, metric))


def lm_eval(model: str, task: str, metric: str):
    return LM_EVAL.get(model, {}).get((task, metric))


def sources_markdown() -> str:
    lines = [f"- GPT-2 paper (117M..1542M columns; accuracies as fractions): {PAPER_SOURCE}"]
    for model in LM_EVAL_MODELS:
        by_source: dict[str, list[str]] = {}
        for (m, task), src in LM_EVAL_SOURCES.items():
            if m == model:
                by_source.setdefault(src, []).append(task)
        parts = [f"{', '.join(tasks)}: {src}" for src, tasks in by_source.items()]
        lines.append(f"- lm-eval {model} (0-shot, OpenAI checkpoint): {'; '.join(parts)}")
    return "\n".join(lines)
