"""Training: state creation, the jit-compiled train and eval steps, the loop and its CLI.

    python -m gpt2jax.train --config=configs/shakespeare.py --workdir=runs/shk [--config.train.num_steps=...]

The run writes into --workdir: run.json (resolved config, versions, devices, parameter counts,
FLOPs per token, the data's token counts and sha256), metrics.jsonl, TensorBoard events (tb/),
checkpoints/ and optionally profile/; writer.lock while it runs (gpt2jax/lock.py: one writer per
workdir). Starting again with the same workdir resumes from its latest checkpoint.

The loop (`train`) runs one step at a time and then its hooks: `Hook(fn, every=N, at_end=...)` objects
whose `fn(loop)` gets the `Loop` (config, trainer, params, optimizer state, step, data, checkpointer,
writer). Logging, validation, zero-shot tasks, checkpoints and profiling are the default hooks
(`default_hooks`); new periodic work is one more hook passed as `train(..., hooks=[...])`, not an edit
of the loop. With `train.wandb.project` set, every row the hooks write also goes to Weights & Biases
(gpt2jax/wandb_log.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import signal
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from gpt2jax import checkpoint as ckpt_lib
from gpt2jax import config as config_lib
from gpt2jax import metrics as metrics_lib
from gpt2jax import sharding as shd
from gpt2jax import wandb_log
from gpt2jax.data import loader
from gpt2jax.errors import NonFiniteError
from gpt2jax.fileio import write_json_atomic
from gpt2jax.lock import WorkdirLock
from gpt2jax.losses import lm_loss
from gpt2jax.model import GPT2, abstract_params, count_params, init_params
from gpt2jax.optim import make_optimizer, schedule

# Sections whose change would make a resumed run a different experiment.
FROZEN_ON_RESUME = ("model", "optim", "data")
FROZEN_TRAIN_FIELDS = ("batch_size", "seq_len", "seed")


class Trainer:
    """Everything compiled for one config on one mesh: init, train step, eval step."""

    def __init__(self, config, mesh=None):
        config_lib.validate(config)
        self.config = config
        self.mesh = mesh if mesh is not None else shd.make_mesh(config.mesh)
        shd.check_batch(config, self.mesh)
        self.model = GPT2(config.model)
        self.optimizer = make_optimizer(config)
        self.lr_schedule = schedule(config.optim, config.train.num_steps)
        self.seq_len = config_lib.seq_len(config)
        self.param_sharding = shd.param_shardings(config, self.mesh)
        self.batch_sharding = shd.batch_sharding(config, self.mesh)
        self.replicated = shd.replicated(self.mesh)
        # Which rows of the global batch this process loads (its devices' rows under the batch
        # sharding): (process_index, process_count) for the loader.
        self.batch_slice = shd.process_batch_slice(
            self.batch_sharding, (config.train.batch_size, self.seq_len + 1)
        )
        shapes = abstract_params(config.model)
        self.abstract_params = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.param_sharding
        )
        opt_shapes = jax.eval_shape(self.optimizer.init, shapes)
        # Optimizer state mirrors the parameters: each parameter-shaped subtree (Adam's moments)
        # takes the parameters' shardings; everything else (step counts) is replicated. (The
        # shardings XLA propagates to init's outputs would not do: zeros_like does not depend on the
        # parameters' values, so the moments came back replicated -- a full copy per device.)
        self.opt_sharding = optax.tree_map_params(
            self.optimizer,
            lambda _, sharding: sharding,
            opt_shapes,
            self.param_sharding,
            transform_non_params=lambda _: self.replicated,
        )
        self.abstract_opt_state = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), opt_shapes, self.opt_sharding
        )
        self._init_params = jax.jit(
            lambda k: init_params(config.model, k), out_shardings=self.param_sharding
        )
        self._init_opt = jax.jit(
            self.optimizer.init, in_shardings=(self.param_sharding,), out_shardings=self.opt_sharding
        )
        self.train_step = jax.jit(
            self._train_step,
            in_shardings=(self.param_sharding, self.opt_sharding, self.batch_sharding, self.replicated),
            out_shardings=(self.param_sharding, self.opt_sharding, self.replicated),
            donate_argnums=(0, 1),
        )
        self.eval_step = jax.jit(
            self._eval_step,
            in_shardings=(self.param_sharding, self.batch_sharding),
            out_shardings=self.replicated,
        )

    # -- state ---------------------------------------------------------------------------------
    def init_state(self, seed: int):
        params = self._init_params(jax.random.PRNGKey(seed))
        return params, self._init_opt(params)

    def init_opt_state(self, params):
        return self._init_opt(params)

    # -- steps ---------------------------------------------------------------------------------
    def _loss(self, params, batch_BT1, key):
        return lm_loss(self.model, params, batch_BT1, key, config=self.config, mesh=self.mesh)

    def _train_step(self, params, opt_state, batch_BT1, step):
        cfg = self.config
        accum = cfg.optim.accum_steps
        key = None
        if cfg.model.dropout > 0:
            key = jax.random.fold_in(jax.random.PRNGKey(cfg.train.seed), step)
        grad_fn = jax.value_and_grad(self._loss)
        if accum == 1:
            loss, grads = grad_fn(params, batch_BT1, key)
        else:
            B = batch_BT1.shape[0]
            # Row r of the global batch goes to micro-batch r % accum, so each micro-batch keeps the
            # batch dimension's sharding (every device holds B/accum/n rows of each).
            micro = batch_BT1.reshape(B // accum, accum, -1).swapaxes(0, 1)
            micro = jax.lax.with_sharding_constraint(
                micro, NamedSharding(self.mesh, P(None, *shd.batch_spec(cfg)))
            )

            def body(carry, inp):
                mb, i = inp
                k = None if key is None else jax.random.fold_in(key, i)
                loss_i, g = grad_fn(params, mb, k)
                return jax.tree.map(jnp.add, carry, (loss_i, g)), None

            zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
            (loss, grads), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum)))
            loss, grads = jax.tree.map(lambda a: a / accum, (loss, grads))
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt_state = self.optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if cfg.train.nonfinite == "skip":
            # A non-finite loss or gradient leaves parameters and optimizer state (its step count
            # included) exactly as they were; the host counts and logs the skipped step.
            keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
            new_params = jax.tree.map(keep, new_params, params)
            new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
        return new_params, new_opt_state, {"loss": loss, "grad_norm": grad_norm, "finite": finite}

    def _eval_step(self, params, batch_BT1):
        return self._loss(params, batch_BT1, None)

    # -- data ----------------------------------------------------------------------------------
    def global_batch(self, local_rows: np.ndarray):
        """One global array, placed with the batch sharding, from this process's rows (those of
        `self.batch_slice`)."""
        shape = (local_rows.shape[0] * self.batch_slice[1],) + tuple(local_rows.shape[1:])
        return jax.make_array_from_process_local_data(self.batch_sharding, local_rows, shape)

    def evaluate(self, params, val: loader.TokenDataset, num_batches: int, should_stop=None) -> float | None:
        """Mean loss over `num_batches` (0: all) val batches; None if `should_stop()` turned true."""
        B = self.config.train.batch_size
        n = num_batches or loader.num_eval_batches(val, B)
        losses = []
        for i in range(n):
            if should_stop is not None and should_stop():
                return None
            rows = loader.eval_batch(val, i, B, *self.batch_slice)
            losses.append(self.eval_step(params, self.global_batch(rows)))
        return float(np.mean(jax.device_get(losses)))


# ---------------------------------------------------------------------------------------------
def _git_commit() -> str | None:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except Exception:
        return None


def _versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_info(config, params) -> dict:
    m = config.model
    return {
        "config": config_lib.to_dict(config),
        "git_commit": _git_commit(),
        "versions": _versions(),
        "devices": {
            "count": jax.device_count(),
            "local_count": jax.local_device_count(),
            "process_count": jax.process_count(),
            "kind": jax.devices()[0].device_kind,
            "platform": jax.devices()[0].platform,
        },
        "params": count_params(params, m),
        "params_non_embedding": count_params(params, m, non_embedding=True),
        "flops_per_token": metrics_lib.flops_per_token(m, config_lib.seq_len(config)),
        "command": sys.argv,
    }


def _check_resume_config(saved: dict, config, allowed=(), what: str = "resume") -> None:
    """Refuse to resume when a field of the model, optimizer or data sections (or the batch size,
    sequence length or seed) differs from the checkpoint's config, naming every such field. Other
    fields -- num_steps, logging/eval/checkpoint intervals, the mesh ... -- may change, and so may the
    `allowed` ones ('section.key')."""
    now = config_lib.to_dict(config)
    try:  # fields added to the schema after the checkpoint was written compare at their defaults
        saved = config_lib.to_dict(config_lib.from_dict(saved))
    except config_lib.ConfigError:
        pass
    changed = []
    for section in FROZEN_ON_RESUME:
        for k, v in now[section].items():
            if saved.get(section, {}).get(k) != v and f"{section}.{k}" not in allowed:
                changed.append(f"{section}.{k}: {saved.get(section, {}).get(k)!r} -> {v!r}")
    for k in FROZEN_TRAIN_FIELDS:
        if saved.get("train", {}).get(k) != now["train"][k]:
            changed.append(f"train.{k}: {saved.get('train', {}).get(k)!r} -> {now['train'][k]!r}")
    if changed and what == "resume":
        raise config_lib.ConfigError(
            "cannot resume with a changed experiment (use a new --workdir, or train.init_from to "
            "start from these weights): " + "; ".join(changed)
        )
    if changed:
        raise config_lib.ConfigError(
            f"cannot {what}: a branch may change only {', '.join(BRANCH_MAY_CHANGE)} (and what a resume "
            "may: intervals, the mesh ...), but these differ: " + "; ".join(changed)
        )


# What a cooldown branch may change besides what a resume may (train.num_steps among those).
BRANCH_MAY_CHANGE = ("train.num_steps", "optim.decay_fraction", "optim.decay_shape", "optim.min_lr")


def open_branch(config, data: dict, workdir: str = "."):
    """(parent Checkpointer, step, record) for train.branch_from / train.branch_step, checked from the
    parent's meta before anything compiles: the step exists, the experiment is the same but for
    BRANCH_MAY_CHANGE, and so is the data. The parent is only read (no lock: it may be live)."""
    import hashlib

    t = config.train
    parent_dir = os.path.expanduser(t.branch_from)
    if os.sep not in parent_dir:  # a bare run name: a sibling of this workdir (a sweep's parent run)
        parent_dir = os.path.join(os.path.dirname(os.path.abspath(workdir)), parent_dir)
    parent_dir = os.path.abspath(parent_dir)
    try:
        parent = ckpt_lib.Checkpointer(None, read_only=True, directory=ckpt_lib.checkpoint_dir(parent_dir))
    except Exception as e:
        raise ckpt_lib.CheckpointError(f"train.branch_from={t.branch_from}: no checkpoints to branch from ({e})") from e
    steps = parent.all_steps()
    if t.branch_step not in steps:
        raise ckpt_lib.CheckpointError(
            f"train.branch_step={t.branch_step}: {parent.directory} has no checkpoint at that step (it has "
            f"{steps or 'none'}; a parent keeps its branch points with checkpoint.steps)")
    meta = parent.read_meta(t.branch_step)
    _check_resume_config(meta["config"], config, allowed=BRANCH_MAY_CHANGE,
                         what=f"branch from {parent.directory}/{t.branch_step}")
    changed = loader.data_changes(meta.get("data"), data)
    if changed:
        raise loader.DataError(f"cannot branch from {parent.directory}/{t.branch_step}: the data differs "
                               f"({'; '.join(changed)})")
    prints = json.dumps(meta.get("fingerprints", {}), sort_keys=True).encode()
    record = {"parent": parent_dir, "step": int(t.branch_step),
              "fingerprint": hashlib.sha256(prints).hexdigest()[:16]}
    return parent, int(t.branch_step), record


def resolve_vocab(config) -> None:
    """model.vocab_size=0 takes the dataset's vocabulary (its meta.json); any other value must equal it, for
    data that records its tokenizer. ConfigError naming both numbers, before anything compiles."""
    vocab, rec = loader.dataset_vocab(config.data.dir)
    m = config.model
    if m.vocab_size == 0:
        if vocab is None:
            raise config_lib.ConfigError(
                f"config.model.vocab_size: 0 takes the dataset's vocabulary, but {config.data.dir}/meta.json "
                "records none (missing, or prepared by an older version): set model.vocab_size")
        m.vocab_size = vocab
    elif vocab is not None and m.vocab_size != vocab:
        raise config_lib.ConfigError(
            f"config.model.vocab_size: {m.vocab_size} is not the vocabulary of the data in {config.data.dir} "
            f"({vocab}, tokenizer {rec.get('name')}): set model.vocab_size={vocab}, or 0 for the dataset's")


def bits_per_byte(loss_nats: float | None, tokens: int, num_bytes: int | None) -> float | None:
    """Bits per UTF-8 byte from a mean loss in nats per token over a split of `tokens` tokens that stand
    for `num_bytes` bytes: loss * tokens / bytes / ln 2 (comparable across vocabularies)."""
    if loss_nats is None or not num_bytes:
        return None
    return float(loss_nats) * tokens / num_bytes / float(np.log(2))


def _split_bytes(ds, record) -> int | None:
    """The split's UTF-8 bytes: meta.json's count; for local GPT-2 data prepared before it was kept, counted
    from the file with GPT-2's token lengths."""
    if ds.bytes is not None:
        return int(ds.bytes)
    if record or ds.tokens is None:
        return None
    from gpt2jax.data.prepare import split_bytes
    from gpt2jax.tokenizer import get_tokenizer

    try:
        return split_bytes(str(ds.bin_path), get_tokenizer().byte_lengths())
    except IndexError:  # ids beyond GPT-2's (hand-made data): no byte count
        return None


def _copy_tokenizer_file(record, data_dir: str, workdir: str) -> None:
    """A BPE dataset's tokenizer.json, copied into the workdir (atomically) so that the run's tools read it
    without the data."""
    import shutil

    name = (record or {}).get("file")
    if not name:
        return
    src, dst = os.path.join(str(data_dir), name), os.path.join(workdir, name)
    if os.path.exists(dst):
        return
    tmp = f"{dst}.{os.getpid()}.tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class _closing_on_error:
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


def _precheck_checkpoints(ckpt, config, data: dict | None = None) -> None:
    """Before anything compiles: the checkpoint a resume will start from (the latest whose meta
    reads) must be of this experiment, this data (`data`: the files' token counts and sha256) and
    this model shape; so must train.init_from's on a fresh start. Raise ConfigError / DataError /
    CheckpointError naming the field, the file or the first mismatched parameter."""
    for step in reversed(ckpt.all_steps()):
        try:
            meta = ckpt.read_meta(step)
            saved = meta["config"]
        except Exception:
            continue  # unreadable: _restore_latest reports it and falls back
        _check_resume_config(saved, config)
        if data is not None and "data" not in meta:
            print(f"WARNING: checkpoint step {step} predates data hashes: cannot check that the data is "
                  "unchanged; recording them from now on", flush=True)
        changed = loader.data_changes(meta.get("data"), data or {})
        if changed:
            raise loader.DataError(f"cannot resume from {ckpt.directory}/{step}: the data changed since it was "
                                   f"saved ({'; '.join(changed)}). Restore that data, or start a new --workdir")
        ckpt_lib.check_shapes(meta, abstract_params(config.model), where=f"{ckpt.directory}/{step}")
        return
    if not ckpt.all_steps() and config.train.init_from:
        ckpt_lib.check_compatible(config.train.init_from, config.model)


def _restore_latest(ckpt, trainer, config):
    """(step, params, opt_state, meta) from the latest committed checkpoint that reads back intact,
    or None when there is none. One that does not (truncated, corrupted, fingerprint mismatch) is
    moved to WORKDIR/corrupt_checkpoints/ with a warning and the one before it is used."""
    bad = []
    for step in reversed(ckpt.all_steps()):
        where = f"{ckpt.directory}/{step}"
        try:
            try:
                saved = ckpt.read_meta(step)["config"]
            except Exception as e:
                raise ckpt_lib.CorruptCheckpointError(f"{where}: cannot read its meta ({type(e).__name__}: {e})") from e
            _check_resume_config(saved, config)
            params, opt_state, meta = ckpt.restore(step, trainer.abstract_params, trainer.abstract_opt_state)
        except ckpt_lib.CorruptCheckpointError as e:
            moved = ckpt.quarantine(step)
            print(f"WARNING: checkpoint step {step} is unusable, moved to {moved}: {str(e)[:2000]}", flush=True)
            bad.append(step)
            continue
        if opt_state is None:
            raise ckpt_lib.CheckpointError(f"{where} holds no optimizer state to resume")
        return step, params, opt_state, meta
    if bad:
        raise ckpt_lib.CheckpointError(
            f"no intact checkpoint left in {ckpt.directory}: steps {bad} were unusable and are kept in "
            f"{ckpt.directory.parent / 'corrupt_checkpoints'}; starting again trains from step 0"
        )
    return None


def _truncate_metrics(path: str, last_step: int) -> None:
    """Keep the metrics rows of steps <= last_step (and drop a torn last line)."""
    if not os.path.exists(path):
        return
    keep, changed = [], False
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
                ok = row["step"] <= last_step
            except (ValueError, KeyError, TypeError):
                ok = False
            if ok and line.endswith("\n"):
                keep.append(line)
            else:
                changed = True
    if changed:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)


def setup_compile_cache(path: str) -> None:
    if path:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))


class _StopFlag:
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


class Loop:
    """The state of one training run (the config, the Trainer, params and optimizer state, the step,
    data, checkpointer, writers) and the work hooks do on it."""

    def __init__(self, config, workdir: str, progress: bool):
        config_lib.validate(config)
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
        self.val_bytes = _split_bytes(self.val_ds, self.tokenizer)
        self.is_main = jax.process_index() == 0
        self.multi_process = jax.process_count() > 1
        ck = config.checkpoint
        self.ckpt = ckpt_lib.Checkpointer(ck.dir or self.workdir, keep=ck.keep, keep_every=ck.keep_every,
                                          keep_steps=tuple(ck.steps))
        # A cooldown branch that has not started yet: its parent's checkpoint, checked before compiling.
        self.branch = open_branch(config, self.data, self.workdir) if config.train.branch_from and not self.ckpt.all_steps() else None
        # Checkpoint errors too: a changed experiment or another model shape, from the metas alone.
        _precheck_checkpoints(self.ckpt, config, self.data)
        self.trainer = Trainer(config)
        self.skipped = 0
        restored = _restore_latest(self.ckpt, self.trainer, config)
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
            _copy_tokenizer_file(self.tokenizer, config.data.dir, self.workdir)
            write_json_atomic(os.path.join(self.workdir, "run.json"), self.info)
            # Rows of steps after the restored one (written before a crash) are redone: drop them.
            _truncate_metrics(os.path.join(self.workdir, "metrics.jsonl"), self.start)
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


# -- the default hooks ---------------------------------------------------------------------------
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

    ev = loop.config.eval
    # batches split over the training mesh's batch axes, as evaluate does over its devices
    sharding, batch_size = train_batch_sharding(loop.trainer, ev.batch_size)
    try:
        results = run_tasks(loop.config.model, loop.params, ev.tasks, ev.tasks_dir, limit=ev.limit or None,
                            batch_size=batch_size, batch_sharding=sharding, should_stop=loop.should_stop)
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


def train(config, workdir: str, *, progress: bool = True, hooks=()) -> dict:
    """Train (or resume) a run in `workdir`: the default hooks (log, eval, zero-shot tasks, checkpoint,
    profile) and then `hooks` after each step. Returns a summary: final step, val loss, timing.
    One writer per workdir: the run holds gpt2jax.lock's lock on it (and on checkpoint.dir)."""
    resolve_vocab(config)
    config_lib.validate(config)
    dirs = [os.path.expanduser(workdir), config.checkpoint.dir or os.path.expanduser(workdir)]
    with WorkdirLock(dirs, enabled=jax.process_index() == 0):
        loop = Loop(config, workdir, progress)
        all_hooks = default_hooks(config) + list(hooks)
        if config.train.profile_start == loop.step:
            profile(loop)
        # Several processes: SIGTERM is left to JAX's preemption service and every process stops at the
        # same step through Orbax's preemption sync point (a local signal flag could stop them apart).
        signals = () if loop.multi_process else (signal.SIGTERM, signal.SIGINT)
        with _StopFlag(signals) as loop.stop, _closing_on_error(loop.ckpt, loop.writer, loop.bar):
            while loop.step < loop.total and not loop.stop_after_reached():
                loop.train_step()
                loop.run_hooks(all_hooks)
                if loop.stop_requested(loop.stop):
                    break
            loop.finish()
        loop.writer.close()
        if loop.bar is not None:
            loop.bar.close()
        return loop.summary()


# ---------------------------------------------------------------------------------------------
def main(argv, fv):
    from absl import app, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # keep Orbax's per-save INFO lines off the console
    from gpt2jax import distributed

    # Several processes (TPU slice workers, SLURM tasks, or the flags below): join them first.
    if distributed.initialize(fv.coordinator_address, fv.num_processes, fv.process_id):
        print(distributed.describe(), flush=True)
    summary = train(fv.config, fv.workdir)
    if summary["val_loss"] is not None:
        bpb = "" if summary["val_bpb"] is None else f" ({summary['val_bpb']:.4f} bits/byte)"
        print(f"final val_loss {summary['val_loss']:.4f} at step {summary['step']}{bpb}", flush=True)


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
