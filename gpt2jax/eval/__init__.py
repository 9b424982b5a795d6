"""Zero-shot evaluation comparable to lm-evaluation-harness and the GPT-2 paper (see docs/evaluation.md).

    from gpt2jax.eval import Scorer, evaluate_tasks
    results = evaluate_tasks(config.model, params, ["hellaswag"], "tasks/", limit=500)

Modules: `scoring` (the batched, jit-compiled log-likelihood engine), `tasks` (the task registry and
running a task), `datafiles` (where each task's files come from), `text` (normalisation and
detokenizers), `loaders` (examples and per-task loaders, with their conventions), `encoding` (examples
-> token requests), `metrics`, `reference` (published numbers with their sources).
"""

import importlib

# Imported on first use, so that a light submodule (lm_eval_flags, reference, text) does not bring in JAX.
_FROM = {"EOT": "scoring", "Scorer": "scoring", "rolling_windows": "scoring", "TASKS": "tasks",
         "MissingTaskData": "tasks", "evaluate_tasks": "tasks", "flatten": "tasks", "run_task": "tasks"}


def __getattr__(name: str):
    if name in _FROM:
        return getattr(importlib.import_module(f"gpt2jax.eval.{_FROM[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EOT", "Scorer", "rolling_windows", "TASKS", "MissingTaskData", "evaluate_tasks", "flatten", "run_task"]
