"""Metrics per task kind, with lm-eval's names: acc / acc_norm (with sample standard errors),
perplexity, and the corpus-weighted word_perplexity / byte_perplexity / bits_per_byte / bits_per_char."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from gpt2jax.eval.loaders import ChoiceDoc, TextDoc


def mean_stderr(x) -> float | None:
    """Sample standard error of the mean, as lm-eval's mean_stderr (n-1 in the variance)."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return None
    return float(np.std(x, ddof=1) / math.sqrt(len(x)))


def target_metrics(lls, greedy) -> dict:
    """LAMBADA: acc = mean of 'every target token greedy'; perplexity = exp(-mean of summed ll)."""
    lls, greedy = np.asarray(lls, np.float64), np.asarray(greedy, np.float64)
    ppl = float(math.exp(-lls.mean()))
    se = mean_stderr(lls)
    return {
        "acc": float(greedy.mean()),
        "acc_stderr": mean_stderr(greedy),
        "perplexity": ppl,
        "perplexity_stderr": None if se is None else ppl * se,
        "n": len(lls),
    }


def choice_metrics(docs: Sequence[ChoiceDoc], lls: Sequence[Sequence[float]], metrics: Sequence[str]) -> dict:
    """acc: argmax of the summed log-likelihoods is gold; acc_norm: argmax of ll / len(choice) in
    characters. Ties go to the first choice (np.argmax, as lm-eval)."""
    acc, acc_norm = [], []
    for d, ll in zip(docs, lls):
        ll = np.asarray(ll, np.float64)
        acc.append(float(np.argmax(ll) == d.gold))
        if d.norm_lengths is not None:
            acc_norm.append(float(np.argmax(ll / np.asarray(d.norm_lengths, np.float64)) == d.gold))
    out = {"acc": float(np.mean(acc)), "acc_stderr": mean_stderr(acc)}
    if "acc_norm" in metrics:
        out.update(acc_norm=float(np.mean(acc_norm)), acc_norm_stderr=mean_stderr(acc_norm))
    out["n"] = len(docs)
    return out


def text_metrics(docs: Sequence[TextDoc], lls: Sequence[float], metrics: Sequence[str]) -> dict:
    """Weighted over the corpus (lm-eval's weighted_perplexity / bits_per_byte): word_perplexity =
    exp(-sum ll / sum words), byte_perplexity = exp(-sum ll / sum bytes), bits_per_byte = -sum ll /
    sum bytes / ln 2, bits_per_char = -sum ll / sum chars / ln 2. No stderr (lm-eval reports none)."""
    total = float(np.sum(np.asarray(lls, np.float64)))
    out = {}
    for m in metrics:
        if m == "word_perplexity":
            out[m] = math.exp(-total / sum(d.words for d in docs))
        elif m == "byte_perplexity":
            out[m] = math.exp(-total / sum(d.bytes for d in docs))
        elif m == "bits_per_byte":
            out[m] = -total / sum(d.bytes for d in docs) / math.log(2)
        elif m == "bits_per_char":
            out[m] = -total / sum(d.chars for d in docs) / math.log(2)
        else:
            raise ValueError(m)
    out["n"] = len(docs)
    return out
