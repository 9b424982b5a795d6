"""Sweeps: a family of training runs from one spec, on this machine, TPU VM slices or SLURM.

    gpt2jax-sweep SPEC --root=DIR [--launcher=local|tpu|slurm] [--dry_run] [--only=NAME ...]
    gpt2jax-sweep SPEC --root=DIR --status [--json]                          (or python -m gpt2jax.sweep)

SPEC is a Python file whose `get_sweep()` returns a `gpt2jax.scaling.Sweep`: named `Run`s (a config, a
path or a shipped config's name, plus `--config.*` overrides) and the launcher settings (`TPU`, `Slurm`),
whose fields have defaults or placeholders such as `<ZONE>` so that `--dry_run` needs nothing but SPEC and
--root. `grid`, `ladder`, `isoflop` and `cooldowns` build the usual shapes of a scaling study
(gpt2jax/scaling/spec.py). Every run is resolved up front exactly as `gpt2jax-train --config=FILE
--config.a.b=v` would build it, so a bad override fails before anything starts, naming the run and the
field (gpt2jax/scaling/resolve.py).

Records (read by gpt2jax-analyze): DIR/sweep.json ({"spec": path, "runs": [...]}) and
DIR/<name>/sweep_run.json per run (name, config, overrides, budget_flops, tokens, params,
params_non_embedding, tags), written before the runs start. DIR/<name>/ is the run's ordinary workdir
(run.json, metrics.jsonl, checkpoints/). A spec changed over an existing DIR is refused before anything
is written (exit status 2), naming each run already trained (a checkpoint and its run.json) with another
config and the fields (old -> new): such a run is another experiment, for a new --root. A run may change
only gpt2jax.scaling.launch.MAY_CHANGE and continue, as a resume may: train.num_steps, train.stop_after,
train.log_every, train.eval_every, train.eval_batches, train.compile_cache and checkpoint.every, keep,
keep_every and steps.

--status prints one row per run, read from the workdirs alone (nothing runs, nothing is written; exit
status 0): not started, running (its step, host and pid: a live holder of its workdir lock), finished,
failed (the last error line of its last attempt) or preempted (stopped before its target with a
checkpoint: the same command resumes it) (gpt2jax/scaling/status.py); with --launcher=slurm also what
squeue (and sacct, where the cluster keeps accounting) says of each run's latest array task. --json prints the rows as a JSON
list. --only=NAME (repeatable) restricts the sweep, or --status, to the named runs; the records still
cover every run.

Launchers (every external command is printed before it runs; --dry_run prints them and runs none):
  local  each run as its own `gpt2jax.train` subprocess, one after another, output teed to
         DIR/<name>/train.log, each attempt's exit status in DIR/<name>/sweep_attempt.json; finished
         runs (checkpoint at num_steps, or at train.stop_after when that comes first) are skipped,
         interrupted ones resume; a cooldown branch runs after its parent, and is skipped with a message
         when the parent failed or has no checkpoint at its train.branch_step. A run that fails does not
         stop the others: the sweep ends with a table of the failed runs (exit code, last error line,
         log) and the command that retries only those (--only). Ctrl-C (or SIGTERM) is passed to the
         current run, which saves, or, still starting, stops cleanly; the same command continues. A
         second Ctrl-C kills the run (its process group) at once and says which checkpoint it left
         (gpt2jax/scaling/local.py).
  tpu    --action=launch|status|tail|fetch|delete: one queued-resource TPU VM slice per group of
         runs (a parent and its cooldown branches on one slice, the branches after it), data and
         checkpoints in buckets (gpt2jax/scaling/tpu.py).
  slurm  writes DIR/sweep.sbatch, one job array (array index -> run) and submits it with sbatch;
         cooldown branches go into DIR/sweep-branches.sbatch, submitted with
         --dependency=afterok:<the first array's job id> (gpt2jax/scaling/slurm.py).

--set=FIELD=VALUE (repeatable) overrides a config field of every run, after the spec's own (e.g.
--set=data.dir=/data/shk). Exit status: 0 when every run is finished or stopped by
train.stop_after, 1 when a run failed or a cooldown branch could not start (its parent failed, or has
no checkpoint at train.branch_step), 2 for a mistake in the spec, an override or a flag, or a changed
spec over an existing DIR (one message naming it), 130 when interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from absl import flags

from gpt2jax.errors import FlagsError, SweepError
from gpt2jax.scaling.launch import refuse_changed, write_records
from gpt2jax.scaling.local import launch_local
from gpt2jax.scaling.resolve import load_spec, parse_sets, plan
from gpt2jax.scaling.slurm import launch_slurm, scheduler_states
from gpt2jax.scaling.status import format_status, sweep_status
from gpt2jax.scaling.tpu import launch_tpu

USAGE = "gpt2jax-sweep SPEC --root=DIR [--launcher=local|tpu|slurm] [--dry_run] [--only=NAME] [--status [--json]]"


def run_sweep(spec: str, root: str, launcher: str = "local", dry_run: bool = False, action: str = "launch",
              sets: Sequence[str] = (), progress: bool = True, only: Sequence[str] = (), status: bool = False,
              as_json: bool = False) -> int:
    """The CLI's body (returns the exit code). Raises SweepError for a user's mistake."""
    if launcher not in ("local", "tpu", "slurm"):
        raise SweepError(f"--launcher={launcher!r}: one of local, tpu, slurm")
    if as_json and not status:
        raise SweepError("--json goes with --status")
    sweep = load_spec(spec)
    planned = plan(sweep, spec, parse_sets(sets))
    chosen = select(planned, only, spec)
    if status:
        rows = sweep_status(chosen, root, scheduler_states(root) if launcher == "slurm" else None)
        print(json.dumps(rows, indent=2) if as_json else format_status(rows), flush=True)
        return 0
    total_tokens = sum(p.record["tokens"] for p in chosen)
    some = f" (--only: {len(chosen)} of {len(planned)})" if only else ""
    print(f"{len(chosen)} runs from {spec}{some} ({total_tokens:,} training tokens in all), root {root}", flush=True)
    if not (launcher == "tpu" and action != "launch"):
        refuse_changed(planned, root)  # before anything is written
        if not dry_run:
            write_records(planned, root, spec)
    planned = chosen
    if launcher == "local":
        command = ["gpt2jax-sweep", spec, f"--root={root}"] + [f"--set={x}" for x in sets]
        return launch_local(planned, root, dry_run, progress=progress, command=command)
    if launcher == "tpu":
        return launch_tpu(planned, sweep.tpu, action, root, dry_run)
    return launch_slurm(planned, sweep.slurm, root, sweep.name, dry_run, spec=spec)


def select(planned: list, only: Sequence[str], spec: str) -> list:
    """The runs named by --only (all without it), in the sweep's order; an unknown name is a SweepError."""
    if not only:
        return planned
    names = [p.name for p in planned]
    unknown = [n for n in dict.fromkeys(only) if n not in names]
    if unknown:
        raise SweepError(f"--only: no run{'s' if len(unknown) > 1 else ''} named {', '.join(map(repr, unknown))} "
                         f"in {spec} (its runs: "
                         f"{', '.join(names)})")
    return [p for p in planned if p.name in only]


def main(argv, fv):
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # Orbax's INFO lines when checkpoints are inspected
    if len(argv) != 2:
        raise FlagsError(f"expected one SPEC (a sweep spec file): {USAGE}")
    return run_sweep(argv[1], fv.root, fv.launcher, fv.dry_run, fv.action, fv.set, only=fv.only,
                     status=fv.status, as_json=fv.json)


def define_flags(fv) -> None:
    flags.DEFINE_string("root", None, "Directory of the sweep: DIR/sweep.json and one workdir per run.",
                        flag_values=fv)
    flags.DEFINE_enum("launcher", "local", ["local", "tpu", "slurm"], "Where the runs go.", flag_values=fv)
    flags.DEFINE_bool("dry_run", False, "Print every command (and the sbatch file) without running anything.",
                      flag_values=fv)
    flags.DEFINE_enum("action", "launch", ["launch", "status", "tail", "fetch", "delete"],
                      "tpu launcher: create/install/start, the state of each slice and run, the last "
                      "lines of each run's log, copy run.json/metrics.jsonl/train.log into DIR/<name>/, "
                      "or delete the slices.", flag_values=fv)
    flags.DEFINE_multi_string("set", [], "FIELD=VALUE: a config override for every run, after the "
                              "spec's own (e.g. --set=data.dir=/data/shakespeare). Repeatable.", flag_values=fv)
    flags.DEFINE_multi_string("only", [], "NAME: run only this run of the spec (repeatable); the records "
                              "still cover every run.", flag_values=fv)
    flags.DEFINE_bool("status", False, "Print where each run stands (not started, running, finished, failed, "
                      "preempted), read from DIR alone; nothing runs or is written.", flag_values=fv)
    flags.DEFINE_bool("json", False, "With --status: the rows as a JSON list.", flag_values=fv)
    flags.mark_flags_as_required(["root"], flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
