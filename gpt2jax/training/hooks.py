"""Periodic work in the training loop: `Hook(fn, every=N, at_end=...)` and the default hooks (log, val
loss, zero-shot tasks, checkpoint, profile)."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import jax
import numpy as np

from gpt2jax.training.records import bits_per_byte

if TYPE_CHECKING:
    from gpt2jax.training.loop import Loop


@dataclasses.dataclass
class Hook:
    """Periodic work in the training loop: `fn(loop)` runs after every step divisible by `every` (0: not
    periodically) and, with `at_end`, after the last step. Hooks run in order; the time they take is kept
    out of tokens/s. Pass extra ones as `train(..., hooks=[Hook(fn, every=100)])`."""

    fn: Callable[["Loop"], Any]
    every: int = 0
    at_end: bool = False
    name: str = ""
    steps: tuple = ()  # also after these steps

    def due(self, step: int, last: int) -> bool:
        return ((self.every > 0 and step % self.every == 0) or (self.at_end and step == last)
                or step in self.steps)


def log_metrics(loop: Loop) -> None:
    """One metrics row: mean loss since the last row, lr, grad norm, tokens, tokens/s (hook time left
    out), MFU, skipped updates."""
    loop.check_finite()
    vals = np.asarray(jax.device_get(loop.losses))
    vals = vals[np.isfinite(vals)]  # skipped updates' losses are left out
    loss = float(np.mean(vals)) if vals.size else None
    loop.losses = []
    now = time.perf_counter()
    seconds = max(now - loop.last_log_t - loop.hook_seconds, 1e-9)
    tps = (loop.step - loop.last_log_step) * loop.B * loop.T / seconds
    loop.last_log_t, loop.last_log_step, loop.hook_seconds = now, loop.step, 0.0
    mfu = loop.info["flops_per_token"] * tps / (loop.peak * jax.device_count()) if loop.peak else None
    row = {
        "step": loop.step, "loss": loss, "lr": float(loop.trainer.lr_schedule(loop.step - 1)),
        "grad_norm": float(loop.out["grad_norm"]), "tokens": loop.step * loop.B * loop.T,
        "tokens_per_sec": tps, "mfu": mfu, "skipped_steps": loop.skipped,
    }
    loop.first_loss = loss if loop.first_loss is None else loop.first_loss
    if loss is not None and not loop.diverged and loop.first_loss > 0 and loss > 2 * loop.first_loss:
        loop.diverged, row["warning"] = True, "loss_diverging"
        loop.print(f"WARNING: the loss is diverging: {loss:.4g} at step {loop.step}, more than twice the first "
                   f"logged {loop.first_loss:.4g} (lower optim.lr?)")
    loop.writer.write(row)
    if loop.bar is not None and loss is not None:
        loop.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}")


def evaluate_val(loop: Loop) -> None:
    loop.check_finite()
    val_loss = loop.trainer.evaluate(loop.params, loop.val_ds, loop.config.train.eval_batches, loop.should_stop)
    if val_loss is None:
        loop.print(f"step {loop.step}: validation interrupted by the stop request; not logged")
        return
    loop.val_loss = val_loss
    loop.val_bpb = bits_per_byte(val_loss, loop.val_ds.num_tokens, loop.val_bytes)
    row = {"step": loop.step, "val_loss": loop.val_loss}
    if loop.val_bpb is not None:
        row["val_bpb"] = loop.val_bpb
    loop.writer.write(row)
    bpb = "" if loop.val_bpb is None else f" ({loop.val_bpb:.4f} bits/byte)"
    loop.print(f"step {loop.step}: val_loss {loop.val_loss:.4f}{bpb}")


def evaluate_tasks(loop: Loop) -> dict | None:
    """Zero-shot tasks during training, logged as eval/<task>/<metric> rows (none when a stop request
    -- SIGTERM, Ctrl-C -- cut them short: the loop then saves and exits)."""
    from gpt2jax.eval.placement import train_batch_sharding
    from gpt2jax.eval.scoring import Interrupted
    from gpt2jax.eval.tasks import evaluate_tasks as run_tasks, flatten
    from gpt2jax.tokenizer import from_record

    ev = loop.config.eval
    # the tasks' text in the run's own tokenizer: the dataset's record (None: GPT-2's); a BPE's file is the
    # dataset's, which every process reads (the workdir's copy is written by process 0 only)
    tok = from_record(loop.tokenizer, loop.config.data.dir)
    # batches split over the training mesh's batch axes, as evaluate does over its devices
    sharding, batch_size = train_batch_sharding(loop.trainer, ev.batch_size)
    try:
        results = run_tasks(loop.config.model, loop.params, ev.tasks, ev.tasks_dir, limit=ev.limit or None,
                            batch_size=batch_size, batch_sharding=sharding, should_stop=loop.should_stop,
                            tokenizer=tok)
    except Interrupted as e:
        loop.print(f"step {loop.step}: evaluation interrupted by the stop request ({e}); not logged")
        return None
    row = {"step": loop.step, **flatten(results)}
    loop.writer.write(row)
    loop.print(f"step {loop.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step"))
    return results


def save_checkpoint(loop: Loop) -> None:
    if loop.step < loop.total:  # the last step is saved by Loop.finish
        loop.save()


def profile(loop: Loop) -> None:
    """A profiler trace of train.profile_steps steps from train.profile_start, in WORKDIR/profile."""
    t = loop.config.train
    if loop.step == t.profile_start and not loop.profiling:
        jax.profiler.start_trace(os.path.join(loop.workdir, "profile"))
        loop.profiling = True
    elif loop.profiling and loop.step >= t.profile_start + t.profile_steps:
        jax.block_until_ready(loop.params)
        jax.profiler.stop_trace()
        loop.profiling = False


def default_hooks(config) -> list[Hook]:
    t, ev, ck = config.train, config.eval, config.checkpoint
    hooks = [Hook(log_metrics, every=t.log_every, at_end=True, name="log"),
             Hook(evaluate_val, every=t.eval_every, at_end=True, name="eval")]
    if ev.tasks:
        hooks.append(Hook(evaluate_tasks, every=ev.every, at_end=True, name="tasks"))
    hooks.append(Hook(save_checkpoint, every=ck.every, name="checkpoint", steps=tuple(ck.steps)))
    if t.profile_start >= 0:
        hooks.append(Hook(profile, every=1, name="profile"))
    return hooks
