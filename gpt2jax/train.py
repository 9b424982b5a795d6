"""Training: `train(config, workdir)` and its command line.

    gpt2jax-train --config=shakespeare --workdir=runs/shk [--config.train.num_steps=...]
    python -m gpt2jax.train --config=configs/shakespeare.py --workdir=runs/shk

The run writes into --workdir: run.json (resolved config, versions, devices, parameter counts,
FLOPs per token, the data's token counts and sha256), metrics.jsonl, TensorBoard events (tb/),
checkpoints/ and optionally profile/; writer.lock while it runs (gpt2jax/lock.py: one writer per
workdir). Starting again with the same workdir resumes from its latest checkpoint.

The pieces, one idea each, in gpt2jax/training/:

    trainer.py   Trainer: everything compiled for one config on one mesh (init, train step, eval step)
    resume.py    where a run starts: resume checks, the latest intact checkpoint, cooldown branches
    records.py   what a run records: run.json, its tokenizer and vocabulary, bits per byte
    loop.py      Loop: the run's state and the loop's own work (a step, finiteness, a save, stopping)
    hooks.py     Hook and the default hooks (log, val loss, zero-shot tasks, checkpoint, profile)

The loop (`train` below) runs one step at a time and then its hooks: `Hook(fn, every=N, at_end=...)`
objects whose `fn(loop)` gets the `Loop`. New periodic work is one more hook passed as
`train(..., hooks=[...])`, not an edit of the loop. With `train.wandb.project` set, every row the hooks
write also goes to Weights & Biases (gpt2jax/wandb_log.py).
"""

from __future__ import annotations

import atexit
import importlib
import os
import signal

from gpt2jax import config as config_lib
from gpt2jax.fileio import check_output_dir, make_output_dir, remove_empty_dirs
from gpt2jax.lock import WorkdirLock

# The pieces' names, imported on first use (`from gpt2jax.train import Trainer` works as before), so that
# `gpt2jax-train --help` and a mistake in the flags or the config answer without importing JAX.
_FROM = {
    "Hook": "hooks", "default_hooks": "hooks", "profile": "hooks",
    "Loop": "loop", "StopFlag": "loop", "closing_on_error": "loop", "setup_compile_cache": "loop",
    "bits_per_byte": "records", "resolve_vocab": "records", "run_info": "records",
    "BRANCH_MAY_CHANGE": "resume", "check_resume_config": "resume", "open_branch": "resume",
    "Trainer": "trainer",
}

__all__ = [
    "BRANCH_MAY_CHANGE", "Hook", "Loop", "Trainer", "bits_per_byte", "check_resume_config", "default_hooks",
    "open_branch", "resolve_vocab", "run_info", "setup_compile_cache", "train",
]


def __getattr__(name: str):
    if name in _FROM:
        return getattr(importlib.import_module(f"gpt2jax.training.{_FROM[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def train(config, workdir: str, *, progress: bool = True, hooks=()) -> dict:
    """Train (or resume) a run in `workdir`: the default hooks (log, eval, zero-shot tasks, checkpoint,
    profile) and then `hooks` after each step. Returns a summary: final step, val loss, timing.
    One writer per workdir: the run holds gpt2jax.lock's lock on it (and on checkpoint.dir)."""
    with StartupStop() as early:  # Ctrl-C while the run starts: acted on once the start is over
        import jax

        from gpt2jax.training.loop import Loop
        from gpt2jax.training.records import resolve_vocab

        resolve_vocab(config)
        config_lib.validate(config)  # once: Loop and its Trainer take the config as validated
        is_main = jax.process_index() == 0
        early.check()
        # Every output location is checked (and made) before anything else; a start that fails before its
        # first step takes away again the directories it made (nothing new is left behind).
        created = make_output_dirs(config, workdir) if is_main else []
        dirs = [os.path.expanduser(workdir), config.checkpoint.dir or os.path.expanduser(workdir)]
        loop = None
        try:
            with WorkdirLock(dirs, enabled=is_main):
                early.check()
                loop = Loop(config, workdir, progress)
                return _run(loop, hooks, early)
        except BaseException:
            if loop is None:
                remove_empty_dirs(created)
            raise


class StartupStop:
    """SIGINT while a run starts (imports, data, compilation) only sets a flag, and `check()` raises
    KeyboardInterrupt from there: a KeyboardInterrupt raised anywhere in JAX's start-up can be swallowed
    (a gc callback's "Exception ignored") and the run go on, or leave a traceback. Once the loop runs,
    its StopFlag takes over (Ctrl-C saves and stops). Main thread only; elsewhere it does nothing."""

    def __init__(self):
        self.requested, self._old = False, None

    def __enter__(self):
        def handler(_signum, _frame):
            self.requested = True

        try:
            self._old = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            pass
        return self

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt("interrupted while the run started (nothing trained, nothing to save)")

    def release(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None

    def __exit__(self, *exc):
        self.release()


def make_output_dirs(config, workdir: str) -> list[str]:
    """Make the run's directories (the workdir, and checkpoint.dir or WORKDIR/checkpoints), checking that
    each is a directory that can be written in: a UserError naming the flag or field otherwise. Returns
    those created (gpt2jax.fileio.make_output_dir)."""
    ck = config.checkpoint.dir
    if ck:
        check_output_dir(ck, f"config.checkpoint.dir={ck}")  # before the workdir is made
    created = make_output_dir(workdir, f"--workdir={workdir}")
    try:
        if ck:
            created += make_output_dir(ck, f"config.checkpoint.dir={ck}")
        else:
            ck = os.path.join(os.path.expanduser(workdir), "checkpoints")
            created += make_output_dir(ck, f"{ck} (the run's checkpoints directory)")
    except BaseException:
        remove_empty_dirs(created)
        raise
    return created


def _run(loop, hooks, early=None) -> dict:
    """The loop of a started run: a step, then its hooks, until the end or a stop."""
    from gpt2jax.training.hooks import default_hooks, profile
    from gpt2jax.training.loop import StopFlag, closing_on_error

    config = loop.config
    # Several processes: SIGTERM is left to JAX's preemption service and every process stops at the
    # same step through Orbax's preemption sync point (a local signal flag could stop them apart).
    signals = () if loop.multi_process else (signal.SIGTERM, signal.SIGINT)
    if early is not None:
        with closing_on_error(loop.ckpt, loop.writer, loop.bar):
            early.check()  # a Ctrl-C during the compilation: stop before the first step
        early.release()  # from here on, the loop's StopFlag (several processes: KeyboardInterrupt)
    with StopFlag(signals) as loop.stop, closing_on_error(loop.ckpt, loop.writer, loop.bar):
        all_hooks = default_hooks(config) + list(hooks)
        if config.train.profile_start == loop.step:
            profile(loop)
        while loop.step < loop.total and not loop.stop_after_reached():
            loop.train_step()  # one compiled update; its finiteness is read at log and save points
            loop.run_hooks(all_hooks)  # in order: log (checks finiteness), val, tasks, checkpoint, profile
            if loop.stop_requested(loop.stop):  # SIGTERM / Ctrl-C / a preemption sync point
                break
        loop.finish()  # the last save (after its finiteness check), waited for
    loop.writer.close()
    if loop.bar is not None:
        loop.bar.close()
    return loop.summary()


# ---------------------------------------------------------------------------------------------
def main(argv, fv):
    from absl import app, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not fv.workdir:
        raise app.UsageError("--workdir is empty: give the run's directory")
    logging.set_verbosity(logging.WARNING)  # keep Orbax's per-save INFO lines off the console
    with StartupStop() as early:
        from gpt2jax import distributed

        # Several processes (TPU slice workers, SLURM tasks, or the flags below): join them first.
        if distributed.initialize(fv.coordinator_address, fv.num_processes, fv.process_id):
            print(distributed.describe(), flush=True)
        early.check()
    atexit.unregister(_ignore_sigint)  # once, however often main runs in one process
    atexit.register(_ignore_sigint)  # after JAX's clean-up was registered: runs before it
    summary = train(fv.config, fv.workdir)
    if summary["val_loss"] is not None:
        bpb = "" if summary["val_bpb"] is None else f" ({summary['val_bpb']:.4f} bits/byte)"
        print(f"final val_loss {summary['val_loss']:.4f} at step {summary['step']}{bpb}", flush=True)


def _ignore_sigint() -> None:
    """At exit: a late Ctrl-C (the run is over) must not break JAX's clean-up with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def define_flags(fv) -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py).", flag_values=fv,
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and run.json.", flag_values=fv)
    flags.DEFINE_string(
        "coordinator_address", None,
        "host:port of process 0, for a multi-process run outside a TPU slice / SLURM / mpirun "
        "(which are detected automatically). Also JAX_COORDINATOR_ADDRESS.", flag_values=fv)
    flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run (JAX_NUM_PROCESSES).",
                         flag_values=fv)
    flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1 (JAX_PROCESS_ID).",
                         flag_values=fv)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
