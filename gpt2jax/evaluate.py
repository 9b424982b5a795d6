"""Zero-shot evaluation of a run's checkpoint or of imported Hugging Face GPT-2 weights.

    python -m gpt2jax.evaluate --workdir=runs/gpt2 --tasks=lambada,hellaswag --tasks_dir=tasks \
        --out=results.json
    python -m gpt2jax.evaluate --hf=hf/gpt2 --tasks=all --tasks_dir=tasks --out=gpt2.json --dtype=float32

    python -m gpt2jax.evaluate --workdir=runs/gpt2 --lm_eval_tasks=hellaswag,arc_easy --out=lm_eval.json

Writes JSON {task: {metric: value, <metric>_stderr: ..., "n": examples}} (rewritten atomically after
each task) and prints a markdown table of our numbers beside the GPT-2 paper's (all four sizes) and
lm-evaluation-harness's published values for OpenAI's checkpoints (gpt2jax/eval/reference.py).
Task files and conventions: docs/evaluation.md and gpt2jax/eval/ (tasks.py: the registry; loaders.py: the
conventions). The tasks' text is encoded
with the run's own tokenizer (run.json's record: GPT-2's BPE, bytes or a trained BPE; GPT-2's with --hf).
With --lm_eval_tasks,
lm-evaluation-harness tasks run through gpt2jax/eval/lm_eval_adapter.py and lm-eval's `results` go
verbatim under "results" (docs/integrations.md).
"""

from __future__ import annotations

import copy
import json
import math
import time

from absl import app, flags

from gpt2jax.fileio import check_output_file, write_json_atomic  # noqa: F401  (also this module's name for it)


def define_flags(fv) -> None:
    """The CLI's flags. Defined only when run as a script (or by a test on its own FlagValues), so that
    importing this module next to train/sample/convert never collides over --workdir/--step."""
    flags.DEFINE_string("workdir", None, "Run directory (or checkpoints dir) to evaluate.", flag_values=fv)
    flags.DEFINE_integer("step", None, "Checkpoint step with --workdir (default: the latest).", flag_values=fv)
    flags.DEFINE_string("hf", None, "Directory of a Hugging Face GPT-2 checkpoint (e.g. OpenAI's gpt2).", flag_values=fv)
    flags.DEFINE_string("tasks", "lambada,hellaswag", "Comma-separated task names, or 'all'.", flag_values=fv)
    flags.DEFINE_string("tasks_dir", "tasks", "Directory holding the task files (docs/evaluation.md).", flag_values=fv)
    flags.DEFINE_string("out", "results.json", "Where to write the results JSON.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 16, "Sequences per scoring batch (rounded up to the device count).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("limit", 0, "Score only the first N examples of each task (0 = all).", lower_bound=0,
                         flag_values=fv)
    from gpt2jax.model_config import DTYPES

    flags.DEFINE_enum("dtype", "", ["", *DTYPES], "Override the compute dtype (float32 matches lm-eval's fp32 "
                      "runs).", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show progress bars.", flag_values=fv)
    from gpt2jax.eval import lm_eval_flags  # --lm_eval_* and --mesh (lm-eval is imported only when used)

    lm_eval_flags.define_flags(fv)


def _fmt(v, metric: str = "") -> str:
    """Accuracies with 4 decimals, perplexities with 2, bits with 3 (published values print as given)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, int) or not metric:
        return str(v)
    if metric.startswith("acc"):
        return f"{v:.4f}"
    if metric.startswith("bits"):
        return f"{v:.3f}"
    return f"{v:.2f}"


def markdown_table(results: dict) -> str:
    """Our numbers beside the GPT-2 paper's (four sizes) and lm-eval's for gpt2 / gpt2-xl."""
    from gpt2jax.eval import reference as ref

    head = ["task", "metric", "ours", "n"] + [f"paper {s}" for s in ref.PAPER_SIZES] + [
        f"lm-eval {m}" for m in ref.LM_EVAL_MODELS
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, ms in results.items():
        for metric, v in ms.items():
            if metric == "n" or metric.endswith("_stderr"):
                continue
            ours = _fmt(v, metric)
            se = ms.get(f"{metric}_stderr")
            if se is not None:
                ours += f" ± {_fmt(se, metric)}"
            paper = ref.paper(task, metric) or (None,) * len(ref.PAPER_SIZES)
            cells = [task, metric, ours, _fmt(ms.get("n"))] + [_fmt(p) for p in paper]
            cells += [_fmt(ref.lm_eval(m, task, metric)) for m in ref.LM_EVAL_MODELS]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n\nSources:\n" + ref.sources_markdown()


def load_model(workdir=None, hf=None, step=None, dtype=""):
    """(model config, params) from a run (gpt2jax.checkpoint) or a Hugging Face dir (gpt2jax.convert)."""
    if bool(workdir) == bool(hf):
        raise app.UsageError("give exactly one of --workdir or --hf")
    if workdir:
        from gpt2jax.checkpoint import load_params

        config, params = load_params(workdir, step)
    else:
        from gpt2jax.convert import from_hf

        config, params = from_hf(hf)
    model_cfg = config.model if hasattr(config, "model") else config
    if dtype:
        model_cfg = copy.deepcopy(model_cfg)
        model_cfg.dtype = dtype
    return model_cfg, params


def run_tokenizer(workdir=None, hf=None, step=None):
    """The tokenizer the tasks are encoded with: the run's own (recorded with the checkpoint and in
    run.json: GPT-2's BPE, bytes or a trained BPE), GPT-2's for a Hugging Face directory (and for a run
    without a record)."""
    from gpt2jax.tokenizer import for_checkpoint, get_tokenizer

    return for_checkpoint(workdir, step) if workdir else get_tokenizer()


def data_parallel(params, batch_size: int):
    """With several devices: replicate the params, shard batches over all devices (batch axis)."""
    from gpt2jax.eval.placement import data_parallel as place_data_parallel

    return place_data_parallel(params, batch_size)


def main(argv, fv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    F = fv
    from gpt2jax.eval import lm_eval_adapter, placement
    from gpt2jax.eval import tasks as T
    from gpt2jax.eval.scoring import Scorer

    names = lm_eval_adapter.builtin_task_names(F)  # --tasks, default none with --lm_eval_tasks
    if not names and not F.lm_eval_tasks:
        raise app.UsageError(f"--tasks={F.tasks!r} names no task: give task names ({', '.join(T.TASKS)}) or "
                             "'all', or --lm_eval_tasks")
    unknown = [n for n in names if n not in T.TASKS]
    if unknown:
        raise T.TaskError(f"--tasks: unknown task(s) {', '.join(map(repr, unknown))}; known tasks: "
                          f"{', '.join(T.TASKS)} (or 'all')")
    # --out is written after each task: checked now, before any task is loaded or scored
    check_output_file(F.out, f"--out={F.out}")
    lm_eval_tasks = lm_eval_adapter.cli_tasks(F)  # (task manager, tasks, names): data loaded up front
    missing = []
    for name in names:  # all missing files at once, before any model is loaded
        try:
            T.require(name, F.tasks_dir, T.get_task(name).files)
        except T.MissingTaskData as e:
            missing.append(str(e))
    if missing:
        raise T.MissingTaskData("\n".join(missing))

    model_cfg, params = load_model(F.workdir, F.hf, F.step, F.dtype)
    tok = run_tokenizer(F.workdir, F.hf, F.step)
    from gpt2jax.tokenizer import check_vocab

    check_vocab(tok, model_cfg.vocab_size)
    run_config = placement.run_config(F.workdir, F.hf, F.step) if F.mesh == "run" else None
    params, sharding, batch_size = placement.place(run_config, params, F.batch_size, F.mesh)
    scorer = Scorer(model_cfg, params, batch_size=batch_size, batch_sharding=sharding, progress=F.progress,
                    prefix_token=tok.eot_token)
    results = {}
    for name in names:
        t0 = time.perf_counter()
        results[name] = T.run_task(scorer, name, F.tasks_dir, F.limit or None, tokenizer=tok)
        st = scorer.last_stats
        print(
            f"{name}: {json.dumps(results[name])}  [{time.perf_counter() - t0:.1f}s, "
            f"{st.tokens_per_s:,.0f} tokens/s, {st.batches} batches, {st.compiles} compiles]",
            flush=True,
        )
        write_json_atomic(F.out, results)
    if names:
        print()
        print(markdown_table(results))
    if lm_eval_tasks[2]:
        lm_eval_adapter.run_cli(F, lm_eval_tasks, model_cfg, params, sharding, batch_size, results,
                                lambda r: write_json_atomic(F.out, r), tokenizer=tok)
    print(f"\nwrote {F.out}")


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
