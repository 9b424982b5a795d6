"""Where a small model's training step goes on a CPU: compute, fixed per-call cost, and the loop around it.

    python -m experiments.step_overhead --shapes=2x16,4x96 --batches=4,8,16,32 --steps=40 \
        --out=experiments/results/step_overhead

For each shape (layers x width; 2 heads, or width / 32 when larger, context 128, the byte vocabulary, as the
IsoFLOP sweep's shapes, experiments/specs/chinchilla_cpu.py) and batch size:
  * step_s: the Trainer's compiled train step alone, median of --steps calls each waited for (as gpt2jax.bench
    times it);
  * loop_s: the training loop's time per step (gpt2jax.train.train over --steps steps with no eval, no
    checkpoint and one log row at the end, so its own hooks cost nothing), from the step after compilation to
    the next-to-last step (the run's final val loss and save left out): the data loader, the host-to-device
    copy, dispatch and the step.
Then per shape a line step_s = a + b x batch through the batches (least squares): `a` is the part of a step
that does not grow with the batch (dispatch, the optimizer update over the parameters, XLA's per-op cost),
`b x batch` the part that does. Reported per (shape, batch): FLOPs per step (6 N D + attention, gpt2jax.metrics),
achieved GFLOP/s, the fixed part a / step_s, and the loop's extra (loop_s - step_s) / loop_s. Writes
step_overhead.csv and step_overhead.json (with the host CPU, gpt2jax.bench.host_cpu) to --out.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import time

import numpy as np
from absl import flags

FLAGS_DOC = __doc__


def shape_config(n_layer: int, n_embd: int, batch: int, steps: int, data_dir: str):
    from gpt2jax.scaling import model_config

    c = model_config("configs/tiny.py", n_layer, n_embd, max(2, n_embd // 32), 128)
    c.model.vocab_size, c.model.vocab_multiple = 257, 1
    c.data.dir = data_dir
    c.train.seq_len, c.train.batch_size, c.train.num_steps = 128, batch, steps
    c.train.log_every, c.train.eval_every, c.train.eval_batches = steps, 0, 0
    c.train.compile_cache = ""
    c.checkpoint.every, c.checkpoint.keep = 0, 1
    c.optim.schedule, c.optim.warmup_steps = "wsd", 2
    return c


def time_step(config, steps: int) -> float:
    """Median seconds of the compiled train step alone (each call waited for)."""
    import jax
    import jax.numpy as jnp

    from gpt2jax.bench import local_rows, synthetic_rows
    from gpt2jax.train import Trainer

    tr = Trainer(config)
    params, opt = tr.init_state(0)
    batch = tr.global_batch(local_rows(tr, synthetic_rows(config)))
    step = tr.train_step.lower(params, opt, batch, jnp.asarray(0, jnp.int32)).compile()
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        params, opt, out = step(params, opt, batch, jnp.asarray(i, jnp.int32))
        jax.block_until_ready((params, opt, out))
        if i >= 3:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def time_loop(config, steps: int) -> float:
    """Seconds per step of the training loop, from the end of the first step (compilation left out) to the
    end of the next-to-last step, timed by a hook that runs after the default ones: the last step's hooks
    (the final val loss and checkpoint save) are left out."""
    import jax

    from gpt2jax.train import Hook, train

    marks = {}

    def mark(loop):
        if "first" not in marks:
            jax.block_until_ready(loop.params)
            marks["first"] = (loop.step, time.perf_counter())
        if loop.step == loop.total - 1:
            jax.block_until_ready(loop.params)
            marks["last"] = (loop.step, time.perf_counter())

    with tempfile.TemporaryDirectory() as wd:
        train(config, wd, progress=False, hooks=[Hook(mark, every=1, name="mark")])
    (s0, t0), (s1, t1) = marks["first"], marks["last"]
    return (t1 - t0) / (s1 - s0)


def main(argv, fv):
    from gpt2jax import metrics
    from gpt2jax.bench import host_cpu
    from gpt2jax.model import num_params

    rows = []
    for spec in fv.shapes.split(","):
        L, D = (int(x) for x in spec.lower().split("x"))
        per = []
        for B in (int(b) for b in fv.batches.split(",")):
            c = shape_config(L, D, B, fv.steps, fv.data_dir)
            step_s = time_step(c, fv.steps)
            loop_s = time_loop(c, fv.steps) if fv.loop else float("nan")
            flops = metrics.flops_per_token(c.model, 128) * B * 128
            per.append({"shape": f"{L}x{D}", "params": num_params(c.model), "batch": B, "step_s": step_s,
                        "loop_s": loop_s, "flops_per_step": flops, "gflops_per_s": flops / step_s / 1e9})
            print(f"{L}x{D} batch {B}: step {step_s * 1e3:.2f} ms, loop {loop_s * 1e3:.2f} ms, "
                  f"{flops / step_s / 1e9:.2f} GFLOP/s", flush=True)
        b, a = np.polyfit([r["batch"] for r in per], [r["step_s"] for r in per], 1)
        for r in per:
            r.update(fixed_s=float(a), fixed_fraction=float(a / r["step_s"]),
                     loop_extra_fraction=float((r["loop_s"] - r["step_s"]) / r["loop_s"]))
        print(f"{L}x{D}: step_s = {a * 1e3:.2f} ms + {b * 1e3:.3f} ms x batch", flush=True)
        rows += per
    os.makedirs(fv.out, exist_ok=True)
    with open(os.path.join(fv.out, "step_overhead.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(fv.out, "step_overhead.json"), "w") as f:
        json.dump({"host_cpu": host_cpu(), "command": " ".join(sys.argv), "rows": rows}, f, indent=1)


def define_flags(fv) -> None:
    flags.DEFINE_string("shapes", "2x16,4x96", "Comma-separated LAYERSxWIDTH shapes.", flag_values=fv)
    flags.DEFINE_string("batches", "4,8,16,32", "Comma-separated batch sizes (sequences of 128 bytes).",
                        flag_values=fv)
    flags.DEFINE_integer("steps", 40, "Timed steps per measurement.", lower_bound=5, flag_values=fv)
    flags.DEFINE_bool("loop", True, "Also time the training loop (gpt2jax.train.train).", flag_values=fv)
    flags.DEFINE_string("data_dir", "data/shakespeare_bytes", "A bytes dataset (gpt2jax-prepare --tokenizer=bytes).",
                        flag_values=fv)
    flags.DEFINE_string("out", "experiments/results/step_overhead", "Output directory.", flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
