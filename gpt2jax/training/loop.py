"""The training loop's state (`Loop`: the config, the Trainer, params and optimizer state, the step, data,
checkpointer, writers) and the work the loop does on it (a step, the finiteness check, a save, the stop
conditions); the signal flag and the clean-up on an error."""

from __future__ import annotations

import functools
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np

from gpt2jax import checkpoint as ckpt_lib
from gpt2jax import metrics as metrics_lib
from gpt2jax import config as config_lib
from gpt2jax import wandb_log
from gpt2jax.data import loader
from gpt2jax.errors import NonFiniteError
from gpt2jax.fileio import write_json_atomic
from gpt2jax.training.records import copy_tokenizer_file, dataset_bytes, run_info, truncate_metrics
from gpt2jax.training.resume import open_branch, precheck_checkpoints, restore_latest
from gpt2jax.training.trainer import Trainer


class closing_on_error:
    """On an exception out of the loop: wait for in-flight (good) checkpoint saves and close the
    metrics files before it propagates."""

    def __init__(self, ckpt, writer, bar):
        self.objs = (ckpt, writer, bar)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is not None:
            for o in self.objs:
                try:
                    if o is not None:
                        o.close()
                except Exception:
                    pass
        return False


def setup_compile_cache(path: str) -> None:
    if path:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))


class StopFlag:
    """SIGTERM/SIGINT ask the loop to finish the current step, save and exit."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.requested = False
        self.signals = tuple(signals)
        self._old = {}

    def __enter__(self):
        def handler(signum, _frame):
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now (the latest checkpoint stays)
            self.requested = True

        for s in self.signals:
            try:
                self._old[s] = signal.signal(s, handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class Loop:
    """The state of one training run (the config, the Trainer, params and optimizer state, the step,
    data, checkpointer, writers) and the work hooks do on it. The config is validated by the caller
    (train() validates it once)."""

    def __init__(self, config, workdir: str, progress: bool):
        self.ckpt = self.writer = self.bar = None
        try:
            self._open(config, workdir, progress)
        except BaseException:
            # A start that fails (a changed experiment, a mesh that does not fit, ...) closes what it
            # opened, last first: Orbax's manager may have background work (its clean-up of unfinished
            # saves) that would otherwise outlive the interpreter and end the output with a traceback.
            for o in (self.bar, self.writer, self.ckpt):
                try:
                    if o is not None:
                        o.close()
                except Exception:
                    pass
            raise

    def _open(self, config, workdir: str, progress: bool) -> None:
        wandb_log.check(config)  # train.wandb: a bad mode or a missing package, before anything compiles
        setup_compile_cache(config.train.compile_cache)
        self.config, self.workdir = config, os.path.expanduser(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        self.T, self.B = config_lib.seq_len(config), config.train.batch_size
        vocab = config.model.vocab_size
        # Data errors surface before anything compiles.
        self.train_ds = loader.TokenDataset(config.data.dir, "train", self.T, vocab, min_batch=self.B)
        self.val_ds = loader.TokenDataset(config.data.dir, "val", self.T, vocab)
        self.data = loader.data_identity(self.train_ds, self.val_ds)  # in run.json and every checkpoint
        # The run's tokenizer (sample, evaluate and detect encode with it): the dataset's record; a BPE's
        # file is copied into the workdir so the run stands alone. None: GPT-2's (data without a record).
        self.tokenizer = loader.dataset_vocab(config.data.dir)[1]
        self.val_bytes = dataset_bytes(self.val_ds, self.tokenizer)
        self.is_main = jax.process_index() == 0
        self.multi_process = jax.process_count() > 1
        ck = config.checkpoint
        self.ckpt = ckpt_lib.Checkpointer(ck.dir or self.workdir, keep=ck.keep, keep_every=ck.keep_every,
                                          keep_steps=tuple(ck.steps))
        # A cooldown branch that has not started yet: its parent's checkpoint, checked before compiling.
        self.branch = open_branch(config, self.data, self.workdir) if config.train.branch_from and not self.ckpt.all_steps() else None
        # Checkpoint errors too: a changed experiment or another model shape, from the metas alone.
        precheck_checkpoints(self.ckpt, config, self.data)
        self.trainer = Trainer(config, validate=False)
        self.skipped = 0
        restored = restore_latest(self.ckpt, self.trainer, config)
        self.branch_record = None
        if restored is not None:
            self.start, self.params, self.opt_state, meta = restored
            self.skipped = int(meta.get("skipped_steps", 0))
            self.branch_record = meta.get("branch")
            print(f"resuming from step {self.start} in {self.ckpt.directory}", flush=True)
        elif self.branch is not None:
            parent, step, self.branch_record = self.branch
            self.params, self.opt_state, meta = parent.restore(
                step, self.trainer.abstract_params, self.trainer.abstract_opt_state)
            if self.opt_state is None:
                raise ckpt_lib.CheckpointError(f"{parent.directory}/{step} holds no optimizer state to branch from")
            self.start, self.skipped = step, int(meta.get("skipped_steps", 0))
            print(f"branching from step {step} of {self.branch_record['parent']}", flush=True)
        else:
            self.start = 0
            if config.train.init_from:
                _, self.params = ckpt_lib.load_params(
                    config.train.init_from, shardings=self.trainer.param_sharding, model_config=config.model
                )
                self.opt_state = self.trainer.init_opt_state(self.params)
                print(f"initialised parameters from {config.train.init_from}", flush=True)
            else:
                self.params, self.opt_state = self.trainer.init_state(config.train.seed)
        self.info = {**run_info(config, self.params), "data": self.data, "tokenizer": self.tokenizer}
        if self.branch_record is not None:
            self.info["branch"] = self.branch_record
        # W&B (train.wandb.project, process 0): reads a previous W&B run id from run.json, adds info['wandb']
        wandb_writer = wandb_log.start(config, self.workdir, self.info, is_main=self.is_main)
        if self.is_main:
            copy_tokenizer_file(self.tokenizer, config.data.dir, self.workdir)
            write_json_atomic(os.path.join(self.workdir, "run.json"), self.info)
            # Rows of steps after the restored one (written before a crash) are redone: drop them.
            truncate_metrics(os.path.join(self.workdir, "metrics.jsonl"), self.start)
        self.writer = metrics_lib.Writer(self.workdir, enabled=self.is_main)
        if wandb_writer is not None:  # every metrics row also goes to W&B
            wandb_writer.log_run_json(os.path.join(self.workdir, "run.json"))
            self.writer = wandb_log.Tee(self.writer, wandb_writer)
        self.peak = metrics_lib.peak_flops_per_device(config.train)
        self.step, self.total = self.start, config.train.num_steps
        self.bar = None
        if progress and self.is_main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.start, desc="train", unit="step", dynamic_ncols=True)
        self.val_loss, self.val_bpb, self.out, self.profiling = None, None, None, False
        self.losses: list = []  # device scalars since the last log row
        self.pending: list = []  # (step, outputs) of updates not yet checked for finiteness
        self.t0 = self.last_log_t = time.perf_counter()
        self.last_log_step, self.hook_seconds = self.start, 0.0
        self.first_loss, self.diverged = None, False  # the first logged loss; warned once past twice it
        self.stop = None  # train()'s stop flag (SIGTERM / Ctrl-C), which long hooks check

    # -- the loop's own work ---------------------------------------------------------------------
    def train_step(self) -> None:
        rows = loader.train_batch(self.train_ds, self.step, self.B, self.config.train.seed, *self.trainer.batch_slice)
        self.params, self.opt_state, self.out = self.trainer.train_step(
            self.params, self.opt_state, self.trainer.global_batch(rows), jnp.asarray(self.step, jnp.int32)
        )
        self.losses.append(self.out["loss"])
        self.step += 1
        self.pending.append((self.step, self.out))
        if self.bar is not None:
            self.bar.update(1)

    def run_hooks(self, hooks) -> None:
        for h in hooks:
            if h.due(self.step, self.total):
                t = time.perf_counter()
                h.fn(self)
                if h.name != "log":
                    self.hook_seconds += time.perf_counter() - t

    def print(self, msg: str) -> None:
        (self.bar.write if self.bar is not None else functools.partial(print, flush=True))(msg)

    def check_finite(self) -> None:
        """Read the finiteness flags of the pending steps (one device sync, done only at log and save
        points): count skipped updates, or stop naming the first bad step."""
        if not self.pending:
            return
        flags = jax.device_get([o["finite"] for _, o in self.pending])
        bad = [(s, o) for (s, o), ok in zip(self.pending, flags) if not ok]
        self.pending.clear()
        if not bad:
            return
        if self.config.train.nonfinite == "skip":
            self.skipped += len(bad)
            print(f"skipped non-finite update(s) at step(s) {[s for s, _ in bad]} ({self.skipped} in all)", flush=True)
            return
        s, o = bad[0]
        loss, gnorm = float(o["loss"]), float(o["grad_norm"])
        what = "loss" if not np.isfinite(loss) else "gradient"
        latest = self.ckpt.latest_step()
        raise NonFiniteError(
            f"non-finite {what} at step {s} (loss {loss}, grad_norm {gnorm}): stopped without saving; "
            + (f"the latest checkpoint is step {latest}, where the same command resumes. " if latest is not None
               else "there is no checkpoint yet, so the same command starts over. ")
            + "Lower optim.lr (or lengthen optim.warmup_steps), or set train.nonfinite='skip' to skip such updates",
            step=s,
        )

    def save(self) -> None:
        self.check_finite()  # never commit a state reached through a non-finite update
        seed = self.config.train.seed
        meta = ckpt_lib.make_meta(
            self.step, self.config, self.params,
            # The batch of step s is a pure function of (data seed, s), and the dropout key is
            # fold_in(PRNGKey(seed), s): the step and the seed are the whole loader and RNG state.
            loader={"next_step": self.step, "seed": seed},
            rng={"seed": seed, "next_step": self.step},
            skipped_steps=self.skipped,
            data=self.data,
            tokenizer=self.tokenizer,
            branch=self.branch_record,
        )
        self.ckpt.save(self.step, self.params, self.opt_state, meta, force=True)

    def stop_after_reached(self) -> bool:
        t = self.config.train
        if t.stop_after and self.step >= t.stop_after:
            print(f"stopping at step {self.step} (train.stop_after={t.stop_after})", flush=True)
            return True
        return False

    def should_stop(self) -> bool:
        return self.stop is not None and self.stop.requested

    def stop_requested(self, stop_flag) -> bool:
        if stop_flag.requested or (self.multi_process and self.ckpt.reached_preemption(self.step)):
            print(f"stop requested: saving step {self.step} and exiting", flush=True)
            return True
        return False

    def finish(self) -> None:
        if self.profiling:
            jax.profiler.stop_trace()
            self.profiling = False
        self.check_finite()
        if self.ckpt.latest_step() != self.step:
            self.save()
        self.ckpt.close()  # waits for the last asynchronous save (the caller holds the signal handlers)

    def summary(self) -> dict:
        return {
            "step": self.step,
            "val_loss": self.val_loss,
            "val_bpb": self.val_bpb,
            "train_seconds": time.perf_counter() - self.t0,
            "stopped_early": self.step < self.total,
            "resumed_from": self.start,
            "skipped_steps": self.skipped,
        }
