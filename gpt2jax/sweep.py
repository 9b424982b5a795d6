"""Sweeps: a family of training runs from one spec, on this machine, TPU VM slices or SLURM.

    gpt2jax-sweep SPEC --root=DIR [--launcher=local|tpu|slurm] [--dry_run]     (or python -m gpt2jax.sweep)

SPEC is a Python file whose `get_sweep()` returns a `gpt2jax.scaling.Sweep`: named `Run`s (a config, a
path or a shipped config's name, plus `--config.*` overrides) and the launcher settings (`TPU`, `Slurm`),
whose fields have defaults or placeholders such as `<ZONE>` so that `--dry_run` needs nothing but SPEC and
--root. `grid`, `ladder`, `isoflop` and `cooldowns` build the usual shapes of a scaling study
(gpt2jax/scaling/spec.py). Every run is resolved up front exactly as `gpt2jax-train --config=FILE
--config.a.b=v` would build it, so a bad override fails before anything starts, naming the run and the
field (gpt2jax/scaling/resolve.py).

Records (read by gpt2jax-analyze): DIR/sweep.json ({"spec": path, "runs": [...]}) and
DIR/<name>/sweep_run.json per run (name, config, overrides, budget_flops, tokens, params,
params_non_embedding, tags), written before the run starts. DIR/<name>/ is the run's ordinary workdir
(run.json, metrics.jsonl, checkpoints/).

Launchers (every external command is printed before it runs; --dry_run prints them and runs none):
  local  each run as its own `gpt2jax.train` subprocess, one after another, output teed to
         DIR/<name>/train.log; finished runs (checkpoint at num_steps, or at train.stop_after when
         that comes first) are skipped, interrupted ones resume; a cooldown branch runs after its
         parent, and is skipped with a message when the parent has no checkpoint at its
         train.branch_step; Ctrl-C is passed to the current run, which saves; the same command
         continues (gpt2jax/scaling/local.py).
  tpu    --action=launch|status|tail|fetch|delete: one queued-resource TPU VM slice per group of
         runs (a parent and its cooldown branches on one slice, the branches after it), data and
         checkpoints in buckets (gpt2jax/scaling/tpu.py).
  slurm  writes DIR/sweep.sbatch, one job array (array index -> run) and submits it with sbatch;
         cooldown branches go into DIR/sweep-branches.sbatch, submitted with
         --dependency=afterok:<the first array's job id> (gpt2jax/scaling/slurm.py).

--set=FIELD=VALUE (repeatable) overrides a config field of every run, after the spec's own (e.g.
--set=data.dir=/data/shk). Exit status: 0 when every run is finished or stopped by
train.stop_after, 1 when a run failed (its name and log are printed) or a cooldown branch could not
start (its parent has no checkpoint at train.branch_step), 2 for a mistake in the spec, an override or
a flag (one message naming it), 130 when interrupted.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from gpt2jax.errors import FlagsError, SweepError
from gpt2jax.scaling.launch import write_records
from gpt2jax.scaling.local import launch_local
from gpt2jax.scaling.resolve import load_spec, parse_sets, plan
from gpt2jax.scaling.slurm import launch_slurm
from gpt2jax.scaling.tpu import launch_tpu

USAGE = "gpt2jax-sweep SPEC --root=DIR [--launcher=local|tpu|slurm] [--dry_run]"


def run_sweep(spec: str, root: str, launcher: str = "local", dry_run: bool = False, action: str = "launch",
              sets: Sequence[str] = (), progress: bool = True) -> int:
    """The CLI's body (returns the exit code). Raises SweepError for a user's mistake."""
    if launcher not in ("local", "tpu", "slurm"):
        raise SweepError(f"--launcher={launcher!r}: one of local, tpu, slurm")
    sweep = load_spec(spec)
    planned = plan(sweep, spec, parse_sets(sets))
    total_tokens = sum(p.record["tokens"] for p in planned)
    print(f"{len(planned)} runs from {spec} ({total_tokens:,} training tokens in all), root {root}", flush=True)
    if not dry_run and not (launcher == "tpu" and action != "launch"):
        write_records(planned, root, spec)
    if launcher == "local":
        return launch_local(planned, root, dry_run, progress=progress)
    if launcher == "tpu":
        return launch_tpu(planned, sweep.tpu, action, root, dry_run)
    return launch_slurm(planned, sweep.slurm, root, sweep.name, dry_run)


def main(argv, fv):
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # Orbax's INFO lines when checkpoints are inspected
    if len(argv) != 2:
        raise FlagsError(f"expected one SPEC (a sweep spec file): {USAGE}")
    return run_sweep(argv[1], fv.root, fv.launcher, fv.dry_run, fv.action, fv.set)


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
    flags.mark_flags_as_required(["root"], flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
