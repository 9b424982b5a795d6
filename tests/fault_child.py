"""`python -m gpt2jax.train` with one injected fault, for the fault-injection suite (test_faults.py).

    GPT2JAX_FAULT=KIND@STEP[:SEED] python tests/fault_child.py --config=... --workdir=... [flags]

KIND:
  sigterm, sigint   the process signals itself right after dispatching update STEP (the handler
                    lets the loop finish the step, save and exit)
  sigkill           kill -9 right after dispatching update STEP (device work in flight)
  sigkill_save      kill -9 a random 0-SEED-seeded delay (0-40 ms) after the asynchronous save of
                    step STEP was started: somewhere inside the background write
  sigkill_commit    kill -9 when the save of step STEP is completely written but not yet committed
                    (just before Orbax renames its temporary directory)
Every update prints "@step N" (N = steps completed) so the parent can see how far a run got.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpt2jax import checkpoint as ckpt_lib  # noqa: E402
from gpt2jax import train as train_lib  # noqa: E402


def _kill(sig):
    print(f"@fault {signal.Signals(sig).name}", flush=True)
    os.kill(os.getpid(), sig)


def install(spec: str) -> None:
    kind, _, rest = spec.partition("@")
    step_s, _, seed_s = rest.partition(":")
    at, seed = int(step_s), int(seed_s or 0)

    orig_init = train_lib.Trainer.__init__

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        step_fn = self.train_step

        def train_step(params, opt_state, batch, step):
            out = step_fn(params, opt_state, batch, step)
            n = int(step) + 1
            print(f"@step {n}", flush=True)
            if n == at and kind in ("sigterm", "sigint", "sigkill"):
                _kill({"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sigkill": signal.SIGKILL}[kind])
            return out

        self.train_step = train_step

    train_lib.Trainer.__init__ = init

    if kind == "sigkill_save":
        orig_save = ckpt_lib.Checkpointer.save

        def save(self, step, *a, **k):
            out = orig_save(self, step, *a, **k)
            if step == at:
                delay = random.Random(seed).uniform(0.0, 0.04)
                print(f"@save {step} started; kill in {delay * 1000:.1f} ms", flush=True)
                threading.Timer(delay, _kill, (signal.SIGKILL,)).start()
            return out

        ckpt_lib.Checkpointer.save = save

    if kind == "sigkill_commit":
        from orbax.checkpoint._src.path import atomicity

        orig_finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize(self):
            final = self._final_path
            if final.name == str(at) and final.parent.name == "checkpoints":
                _kill(signal.SIGKILL)
            return await orig_finalize(self)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize


if __name__ == "__main__":
    from gpt2jax import cli

    if os.environ.get("GPT2JAX_FAULT"):
        install(os.environ["GPT2JAX_FAULT"])
    cli.run(train_lib.main, train_lib.define_flags)
