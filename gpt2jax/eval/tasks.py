"""Zero-shot tasks: the registry of the tasks there are, and scoring one.

Three kinds of task, each scored through `gpt2jax.eval.scoring.Scorer`:

  * target (LAMBADA): one (context, target) per example -> acc (every target token greedy), perplexity.
  * choice (HellaSwag, PIQA, ARC, WinoGrande, CBT): a few (context, continuation) requests per example,
    the prediction is the argmax of the summed log-likelihoods -> acc, and acc_norm (argmax of the
    log-likelihood divided by the choice's length in characters) where lm-eval reports it.
  * text (WikiText, PTB, 1BW, enwik8, text8): documents scored whole with rolling windows ->
    word_perplexity / byte_perplexity / bits_per_byte / bits_per_char.

Where lm-evaluation-harness defines a task (lambada_openai, lambada_standard, hellaswag, wikitext,
piqa, winogrande, arc_easy, arc_challenge) these modules do what it does; the conventions are written
next to each loader. PTB, 1BW, enwik8, text8 and CBT are not lm-eval tasks (CBT was, in lm-eval 0.3);
for them we follow the GPT-2 paper and say what we chose.

This module is the registry (`TASKS`: each task's kind, files, loader, metrics, split) and runs a task;
the parts live by idea in `datafiles` (where each file comes from), `text` (normalisation and
detokenizers), `loaders` (examples and the per-task loaders, conventions next to each), `encoding`
(examples -> token requests) and `metrics`. Their public names are re-exported here.

Metric names are lm-eval's, bare; `<metric>_stderr` where lm-eval reports one (acc, acc_norm: the
sample standard error of the mean, sqrt(var_{n-1} / n); perplexity: lm-eval bootstraps it, we use the
delta method, perplexity * stderr(mean ll)); `n` is the number of examples (documents) scored.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Callable

from gpt2jax.errors import MissingTaskData, TaskError
from gpt2jax.eval import datafiles as F
from gpt2jax.eval.datafiles import DataFile, require
from gpt2jax.eval.encoding import encode_pair, encode_requests
from gpt2jax.eval.loaders import (
    TEST_SIZE,
    ChoiceDoc,
    TargetDoc,
    TextDoc,
    load_1bw,
    load_arc,
    load_cbt,
    load_enwik8,
    load_hellaswag,
    load_lambada,
    load_piqa,
    load_ptb,
    load_text8,
    load_wikitext,
    load_winogrande,
)
from gpt2jax.eval.metrics import choice_metrics, mean_stderr, target_metrics, text_metrics
from gpt2jax.eval.scoring import Scorer
from gpt2jax.eval.text import detokenize_words, hellaswag_preprocess, split_wikitext_pages, wikitext_detokenize

__all__ = [
    "MissingTaskData", "TaskError",
    "DataFile", "require",
    "wikitext_detokenize", "split_wikitext_pages", "detokenize_words", "hellaswag_preprocess",
    "TargetDoc", "ChoiceDoc", "TextDoc", "TEST_SIZE", "load_lambada", "load_hellaswag", "load_piqa",
    "load_arc", "load_winogrande", "load_cbt", "load_wikitext", "load_ptb", "load_1bw", "load_enwik8",
    "load_text8",
    "encode_pair", "encode_requests",
    "mean_stderr", "target_metrics", "choice_metrics", "text_metrics",
    "Task", "TASKS", "get_task", "load_docs", "prepare", "run_task", "evaluate_tasks", "flatten",
]

# ----------------------------------------------------------------------------------------------------
# Tasks


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    kind: str  # 'target' | 'choice' | 'text'
    files: tuple[DataFile, ...]
    load: Callable[..., list]  # (*paths) -> docs
    metrics: tuple[str, ...]
    split: str


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("lambada", "target", (F.LAMBADA_OPENAI,), load_lambada, ("acc", "perplexity"), "test"),
        Task("lambada_standard", "target", (F.LAMBADA_STANDARD,), load_lambada, ("acc", "perplexity"), "test"),
        Task("hellaswag", "choice", (F.HELLASWAG,), load_hellaswag, ("acc", "acc_norm"), "validation"),
        Task("wikitext2", "text", (F.WIKITEXT2,), load_wikitext, ("word_perplexity", "byte_perplexity", "bits_per_byte"), "test"),
        Task("wikitext103", "text", (F.WIKITEXT103,), load_wikitext, ("word_perplexity", "byte_perplexity", "bits_per_byte"), "test"),
        Task("ptb", "text", (F.PTB,), load_ptb, ("word_perplexity",), "test"),
        Task("1bw", "text", (F.ONE_BILLION_WORD,), load_1bw, ("word_perplexity",), "heldout-00000"),
        Task("enwik8", "text", (F.ENWIK8,), load_enwik8, ("bits_per_byte",), "last 5M bytes"),
        Task("text8", "text", (F.TEXT8,), load_text8, ("bits_per_char",), "last 5M characters"),
        Task("cbt_cn", "choice", (F.CBT_CN,), load_cbt, ("acc",), "test"),
        Task("cbt_ne", "choice", (F.CBT_NE,), load_cbt, ("acc",), "test"),
        Task("piqa", "choice", (F.PIQA, F.PIQA_LABELS), load_piqa, ("acc", "acc_norm"), "validation"),
        Task("winogrande", "choice", (F.WINOGRANDE,), load_winogrande, ("acc",), "dev"),
        Task("arc_easy", "choice", (F.ARC_EASY,), load_arc, ("acc", "acc_norm"), "test"),
        Task("arc_challenge", "choice", (F.ARC_CHALLENGE,), load_arc, ("acc", "acc_norm"), "test"),
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (or 'all')")
    return TASKS[name]


def load_docs(name: str, tasks_dir, limit: int | None = None) -> list:
    """The task's examples (the first `limit` of them, as lm-eval's --limit)."""
    task = get_task(name)
    paths = require(name, tasks_dir, task.files)
    try:
        docs = task.load(*paths)
    except (KeyError, IndexError, TypeError, ValueError, UnicodeDecodeError) as e:
        if isinstance(e, TaskError):
            raise
        raise TaskError(f"task {name!r}: cannot read {', '.join(map(str, paths))}: malformed content "
                        f"({type(e).__name__}: {e})") from None
    return docs[:limit] if limit else docs


def _tokenizer():
    from gpt2jax.tokenizer import get_tokenizer  # lazy: keeps this module importable on its own

    return get_tokenizer()


class _Keyed:
    """A tokenizer as a cache key: equal when name and vocabulary hash are (a bytes tokenizer rebuilt for
    every evaluation, or a BPE read again from its file, still finds the requests encoded before)."""

    def __init__(self, tok):
        self.tok, self.key = tok, (str(getattr(tok, "name", "gpt2")), str(tok.vocab_hash))

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Keyed) and other.key == self.key


def _mtimes(name: str, tasks_dir) -> tuple:
    return tuple(p.stat().st_mtime_ns for p in require(name, tasks_dir, get_task(name).files))


@functools.lru_cache(maxsize=32)
def _prepared(name: str, tasks_dir: str, limit: int | None, mtimes: tuple, tok: _Keyed):
    """Token requests for a task, cached (per tokenizer) so evaluation every K training steps only re-runs
    the model."""
    task = get_task(name)
    docs = load_docs(name, tasks_dir, limit)
    reqs = encode_requests(tok.tok, task.kind, docs)
    return docs, reqs


def prepare(name: str, tasks_dir, limit: int | None = None, *, tokenizer=None):
    """(docs, token requests) for a task, encoded with `tokenizer` (the run's; default GPT-2's); see
    `run_task` for their shape per kind."""
    tasks_dir = str(Path(os.path.expanduser(str(tasks_dir))).resolve())
    tok = _Keyed(tokenizer if tokenizer is not None else _tokenizer())
    return _prepared(name, tasks_dir, limit or None, _mtimes(name, tasks_dir), tok)


# ----------------------------------------------------------------------------------------------------
# Running


def run_task(scorer: Scorer, name: str, tasks_dir, limit: int | None = None, *, tokenizer=None) -> dict:
    """Score one task; returns {metric: value, <metric>_stderr: ..., 'n': examples}. The task's text is
    encoded with `tokenizer` (the run's own, see gpt2jax.tokenizer.for_run; default GPT-2's), whose
    end-of-text id is the first context of rolling windows and the context of an empty one."""
    task = get_task(name)
    tok = tokenizer if tokenizer is not None else _tokenizer()
    docs, reqs = prepare(name, tasks_dir, limit, tokenizer=tok)
    if not docs:
        raise ValueError(f"task {name!r}: no examples in {tasks_dir}")
    if task.kind == "target":
        res = scorer.loglikelihood(reqs, desc=name)
        return target_metrics([r[0] for r in res], [r[1] for r in res])
    if task.kind == "choice":
        flat = [r for group in reqs for r in group]
        res = scorer.loglikelihood(flat, desc=name)
        lls, i = [], 0
        for group in reqs:
            lls.append([res[i + j][0] for j in range(len(group))])
            i += len(group)
        return choice_metrics(docs, lls, task.metrics)
    lls = scorer.loglikelihood_rolling(reqs, desc=name, prefix_token=tok.eot_token)
    return text_metrics(docs, lls, task.metrics)


def evaluate_tasks(
    model_cfg,
    params,
    tasks,
    tasks_dir,
    limit: int | None = None,
    batch_size: int = 16,
    *,
    batch_sharding=None,
    progress: bool = False,
    should_stop=None,
    tokenizer=None,
) -> dict:
    """Evaluate `tasks` (names, or one comma-separated string) -> {task: {metric: value, ..., 'n': N}}.

    Meant to be called from the training loop every K steps as well as from the CLI: the compiled
    scoring function and the tokenized examples are cached, so later calls only run the model. Log
    the result as rows `eval/<task>/<metric>` (see `flatten`). `should_stop()`, checked between
    batches, ends the evaluation early with scoring.Interrupted (e.g. on Ctrl-C during training).
    `tokenizer`: the run's (gpt2jax.tokenizer.for_run / from_record); default GPT-2's."""
    from gpt2jax.tokenizer import check_vocab

    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    for t in tasks:
        get_task(t)
    tok = tokenizer if tokenizer is not None else _tokenizer()
    check_vocab(tok, model_cfg.vocab_size)
    scorer = Scorer(model_cfg, params, batch_size=batch_size, batch_sharding=batch_sharding, progress=progress,
                    should_stop=should_stop, prefix_token=tok.eot_token)
    return {t: run_task(scorer, t, tasks_dir, limit, tokenizer=tok) for t in tasks}


def flatten(results: dict, prefix: str = "eval") -> dict[str, float]:
    """{task: {metric: v}} -> {'eval/<task>/<metric>': v} (stderr and None values left out)."""
    return {
        f"{prefix}/{t}/{m}": v
        for t, ms in results.items()
        for m, v in ms.items()
        if v is not None and not m.endswith("_stderr")
    }
