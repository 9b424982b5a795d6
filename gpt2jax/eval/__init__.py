"""Zero-shot evaluation comparable to lm-evaluation-harness and the GPT-2 paper (see docs/evaluation.md).

    from gpt2jax.eval import Scorer, evaluate_tasks
    results = evaluate_tasks(config.model, params, ["hellaswag"], "tasks/", limit=500)

Modules: `scoring` (the batched, jit-compiled log-likelihood engine), `tasks` (the task registry and
running a task), `datafiles` (where each task's files come from), `text` (normalisation and
detokenizers), `loaders` (examples and per-task loaders, with their conventions), `encoding` (examples
-> token requests), `metrics`, `reference` (published numbers with their sources).
"""

from gpt2jax.eval.scoring import EOT, Scorer, rolling_windows
from gpt2jax.eval.tasks import TASKS, MissingTaskData, evaluate_tasks, flatten, run_task

__all__ = ["EOT", "Scorer", "rolling_windows", "TASKS", "MissingTaskData", "evaluate_tasks", "flatten", "run_task"]
