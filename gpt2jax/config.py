"""The configuration schema: every field, its default, and one validation pass.

Config files in `configs/` call `get_config()` here and change what they need. Every field can be
overridden on the command line as `--config.section.key=value`. The returned ConfigDict is locked, so
a misspelt key is an error rather than a silently ignored setting.

Sections:
  model       the network's shape and numerics: ModelConfig's fields (gpt2jax/model_config.py)
  data        where the token files written by `python -m gpt2jax.prepare` live
  train       the loop: steps, global batch, seed, logging/eval cadence, fine-tuning start point
  optim       AdamW (or Muon on the hidden matrices), warmup + cosine schedule, clipping, accumulation
  checkpoint  how often to save and how many to keep
  eval        zero-shot tasks (gpt2jax/eval) run during training
  mesh        device mesh (data, fsdp, tensor) and the logical-axis rules (see gpt2jax/sharding.py)
"""

from __future__ import annotations

import json
import math

import ml_collections

from gpt2jax.errors import ConfigError
from gpt2jax.model_config import (  # noqa: F401  (the model's choices, re-exported)
    ATTENTION, DTYPES, MLPS, NORMS, PARAMETRIZATIONS, POSITIONS, REMAT, ModelConfig, padded_vocab,
)

NONFINITE = ("stop", "skip")
SCHEDULES = ("cosine", "wsd", "constant")
DECAY_SHAPES = ("linear", "1-sqrt", "cosine")
OPTIMIZERS = ("adamw", "muon")

# Logical axis -> mesh axis (or axes). Parameters and activations are annotated with the logical
# names; these rules decide how they are laid out on the mesh. See gpt2jax/sharding.py.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("seq", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
)


def get_config() -> ml_collections.ConfigDict:
    """The full schema with defaults (GPT-2 124M shapes, single-device friendly settings)."""
    c = ml_collections.ConfigDict()

    c.model = ml_collections.ConfigDict(ModelConfig.defaults())  # fields, defaults, docs: gpt2jax/model_config.py
    c.data = ml_collections.ConfigDict(dict(dir="data/shakespeare"))
    c.train = ml_collections.ConfigDict(
        dict(
            num_steps=1000,
            batch_size=16,  # global batch per optimizer step, in sequences
            seq_len=0,  # tokens per sequence; 0 = model.block_size
            seed=0,
            log_every=10,
            eval_every=250,  # 0 = only at the end
            eval_batches=20,  # 0 = the whole val split
            init_from="",  # workdir (or checkpoint dir) whose params start a fresh run
            compile_cache="~/.cache/gpt2jax/xla",  # persistent XLA cache; '' disables
            profile_start=-1,  # step at which to start a profiler trace (-1: never)
            profile_steps=5,
            peak_tflops=0.0,  # per-device peak for MFU; 0 = look up the device kind
            nonfinite="stop",  # non-finite loss/grads: 'stop' (error naming the step) | 'skip' the update
            stop_after=0,  # stop (save and exit, as on SIGTERM) after this step; 0 = run to num_steps
            # Weights & Biases (gpt2jax/wandb_log.py), on when project is set. mode: '' (wandb's
            # default / $WANDB_MODE) | 'online' | 'offline' | 'disabled'; tags: comma-separated.
            wandb=ml_collections.ConfigDict(dict(project="", entity="", name="", mode="", tags="")),
            # loss over the LM head: 0 = dense logits; N > 0 = gpt2jax.losses' blockwise cross-entropy
            # over N vocabulary rows at a time (never holds the [B, T, V] logits; same loss)
            loss_block=0,
            # N > 0 = gpt2jax.losses' fused cross-entropy: N tokens at a time against the whole
            # vocabulary, both gradients formed in the forward pass (same loss; fewer memory passes)
            loss_rows=0,
            # A cooldown branch: start from step branch_step of the run in branch_from (parameters, optimizer
            # state, step and data position), then train to num_steps with this config's decay settings.
            # A bare run name (no '/') is a sibling of this run's workdir, as a sweep's runs are.
            branch_from="",
            branch_step=0,
        )
    )
    c.optim = ml_collections.ConfigDict(
        dict(
            lr=6e-4,
            min_lr=6e-5,
            warmup_steps=100,
            weight_decay=0.1,
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            grad_clip=1.0,  # global-norm clipping; 0 disables
            accum_steps=1,  # micro-batches per optimizer step
            # 'cosine' (warmup, cosine to min_lr) | 'wsd' (warmup, constant, cooldown over the last
            # decay_fraction of the steps, shaped by decay_shape) | 'constant' (warmup, then lr)
            schedule="cosine",
            decay_fraction=0.2,
            decay_shape="1-sqrt",  # 'linear' | '1-sqrt' (Hagele et al. 2024) | 'cosine'
            # 'adamw' | 'muon': Muon (optax.contrib) on the hidden matrices that ParamSpec.matrix declares
            # (each layer's, and q, k, v as three), AdamW (lr, weight_decay, b1, b2, eps above) on the embeddings,
            # an untied head, biases and gains. Both groups follow the schedule above, each at its own peak.
            name="adamw",
            muon_lr=0.02,  # Muon's peak learning rate (its min is muon_lr * min_lr / lr)
            muon_weight_decay=0.0,  # decoupled, multiplied by the learning rate (as AdamW's here)
            muon_momentum=0.95,
            muon_nesterov=True,
            muon_ns_steps=5,  # Newton-Schulz iterations
            # 0: Muon's width scaling sqrt(max(1, fan_out / fan_in)); r > 0: r sqrt(max(fan_in, fan_out)), an
            # update RMS like AdamW's (Liu et al. 2025 use 0.2, to reuse AdamW's lr and weight decay)
            muon_rms=0.0,
        )
    )
    # keep: the latest checkpoints kept; keep_every: also keep every step divisible by it (0 = off).
    # dir: where checkpoints/ lives; '' = the workdir. A bucket (gs://bucket/run) for multi-host runs:
    # every host writes its own shards of each checkpoint, so the directory must be shared.
    # steps: also save and keep these steps (e.g. the steps cooldown branches start from).
    c.checkpoint = ml_collections.ConfigDict(dict(every=500, keep=3, keep_every=0, dir="", steps=()))
    c.eval = ml_collections.ConfigDict(
        dict(
            tasks="",  # zero-shot tasks run during training, e.g. 'hellaswag,lambada' ('' = none)
            tasks_dir="",  # where their files are (see docs/evaluation.md)
            every=0,  # run them every this many steps (0 = only at the end)
            limit=0,  # examples per task (0 = all)
            batch_size=16,
        )
    )
    c.mesh = ml_collections.ConfigDict(
        dict(data=-1, fsdp=1, tensor=1, rules=tuple((k, v) for k, v in DEFAULT_RULES))
    )
    c.lock()
    return c


def gpt2_config(n_layer: int, n_embd: int, n_head: int, lr: float) -> ml_collections.ConfigDict:
    """A GPT-2 size (context 1024) with the training defaults of common GPT-2 reproductions
    (nanoGPT / llm.c): 0.5M-token batches (512 x 1024 via 16 accumulation steps), AdamW (0.9, 0.95),
    weight decay 0.1, 2000 warmup steps then cosine to lr/10. Peak lr per size as in the GPT-3 paper's
    table 2.1. Point data.dir at a prepared corpus (e.g. OpenWebText or FineWeb, see README)."""
    c = get_config()
    c.model.n_layer, c.model.n_embd, c.model.n_head = n_layer, n_embd, n_head
    c.model.block_size = 1024
    c.data.dir = "data/openwebtext"
    c.train.num_steps = 600_000
    c.train.batch_size = 512
    c.train.eval_every = 2000
    c.train.eval_batches = 100
    c.optim.lr = lr
    c.optim.min_lr = lr / 10
    c.optim.warmup_steps = 2000
    c.optim.accum_steps = 16
    c.checkpoint.every = 2000
    return c


def seq_len(config) -> int:
    return int(config.train.seq_len or config.model.block_size)


def _check(cond: bool, field: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config.{field}: {msg}")


def validate(config) -> None:
    """Check every field once, before anything compiles. Raises ConfigError naming the field."""
    m, t, o = config.model, config.train, config.optim
    for section, values in config.items():  # inf and nan pass most range checks: refuse them all
        for k, v in values.items() if hasattr(values, "items") else ():
            if isinstance(v, float):
                _check(math.isfinite(v), f"{section}.{k}", f"must be a finite number, got {v}")
    ModelConfig.of(m).validate()  # every model field (gpt2jax/model_config.py)

    _check(isinstance(t.num_steps, int) and t.num_steps > 0, "train.num_steps", f"must be > 0, got {t.num_steps!r}")
    _check(t.batch_size > 0, "train.batch_size", f"must be > 0, got {t.batch_size}")
    _check(t.seq_len >= 0, "train.seq_len", f"must be >= 0, got {t.seq_len}")
    _check(
        seq_len(config) <= m.block_size,
        "train.seq_len",
        f"{t.seq_len} is longer than the position table (model.block_size={m.block_size})",
    )
    _check(t.log_every > 0, "train.log_every", f"must be > 0, got {t.log_every}")
    _check(t.eval_every >= 0, "train.eval_every", f"must be >= 0, got {t.eval_every}")
    _check(t.eval_batches >= 0, "train.eval_batches", f"must be >= 0, got {t.eval_batches}")

    _check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _check(0 <= o.min_lr <= o.lr, "optim.min_lr", f"must be in [0, optim.lr={o.lr}], got {o.min_lr}")
    _check(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
    _check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    _check(0 <= o.b1 < 1, "optim.b1", f"must be in [0, 1), got {o.b1}")
    _check(0 <= o.b2 < 1, "optim.b2", f"must be in [0, 1), got {o.b2}")
    _check(o.grad_clip >= 0, "optim.grad_clip", f"must be >= 0, got {o.grad_clip}")
    _check(o.accum_steps >= 1, "optim.accum_steps", f"must be >= 1, got {o.accum_steps}")
    _check(o.schedule in SCHEDULES, "optim.schedule", f"must be one of {SCHEDULES}, got {o.schedule!r}")
    _check(0 <= o.decay_fraction <= 1, "optim.decay_fraction", f"must be in [0, 1], got {o.decay_fraction}")
    _check(o.decay_shape in DECAY_SHAPES, "optim.decay_shape", f"must be one of {DECAY_SHAPES}, got {o.decay_shape!r}")
    _check(o.name in OPTIMIZERS, "optim.name", f"must be one of {OPTIMIZERS}, got {o.name!r}")
    _check(o.muon_lr > 0, "optim.muon_lr", f"must be > 0, got {o.muon_lr}")
    _check(o.muon_weight_decay >= 0, "optim.muon_weight_decay", f"must be >= 0, got {o.muon_weight_decay}")
    _check(0 <= o.muon_momentum < 1, "optim.muon_momentum", f"must be in [0, 1), got {o.muon_momentum}")
    _check(isinstance(o.muon_nesterov, bool), "optim.muon_nesterov", f"must be True or False, got {o.muon_nesterov!r}")
    _check(isinstance(o.muon_ns_steps, int) and o.muon_ns_steps >= 1, "optim.muon_ns_steps",
           f"must be an int >= 1, got {o.muon_ns_steps!r}")
    _check(o.muon_rms >= 0, "optim.muon_rms", f"must be >= 0 (0 = Muon's width scaling), got {o.muon_rms}")
    if t.branch_from:
        _check(isinstance(t.branch_step, int) and 0 < t.branch_step < t.num_steps, "train.branch_step",
               f"must be a step in [1, train.num_steps={t.num_steps}) of the run in train.branch_from, got {t.branch_step!r}")
        _check(not t.init_from, "train.branch_from", "and train.init_from are two ways to start a run: set one")
    _check(
        t.batch_size % o.accum_steps == 0,
        "train.batch_size",
        f"{t.batch_size} is not divisible by optim.accum_steps={o.accum_steps}",
    )

    ev = config.eval
    _check(ev.every >= 0, "eval.every", f"must be >= 0, got {ev.every}")
    _check(ev.limit >= 0, "eval.limit", f"must be >= 0, got {ev.limit}")
    _check(ev.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {ev.batch_size}")
    _check(not ev.tasks or bool(ev.tasks_dir), "eval.tasks_dir", "is required when eval.tasks is set")

    ck = config.checkpoint
    _check(ck.every >= 0, "checkpoint.every", f"must be >= 0 (0 = only at the end), got {ck.every}")
    _check(ck.keep >= 1, "checkpoint.keep", f"must be >= 1, got {ck.keep}")
    _check(ck.keep_every >= 0, "checkpoint.keep_every", f"must be >= 0 (0 = off), got {ck.keep_every}")
    _check(all(isinstance(s, int) and s > 0 for s in ck.steps), "checkpoint.steps",
           f"must be positive step numbers, got {tuple(ck.steps)!r}")
    _check(t.nonfinite in NONFINITE, "train.nonfinite", f"must be one of {NONFINITE}, got {t.nonfinite!r}")
    _check(t.stop_after >= 0, "train.stop_after", f"must be >= 0 (0 = off), got {t.stop_after}")
    _check(
        isinstance(t.loss_block, int) and t.loss_block >= 0,
        "train.loss_block",
        f"must be an int >= 0 (0 = dense logits), got {t.loss_block!r}",
    )
    _check(
        isinstance(t.loss_rows, int) and t.loss_rows >= 0,
        "train.loss_rows",
        f"must be an int >= 0 (0 = off), got {t.loss_rows!r}",
    )
    _check(not (t.loss_rows and t.loss_block), "train.loss_rows",
           f"and train.loss_block are two ways of computing the loss: set one ({t.loss_rows}, {t.loss_block})")

    mesh = config.mesh
    sizes = [mesh.data, mesh.fsdp, mesh.tensor]
    for name, v in zip(("data", "fsdp", "tensor"), sizes):
        _check(v == -1 or v >= 1, f"mesh.{name}", f"must be -1 (the rest) or >= 1, got {v}")
    _check(sizes.count(-1) <= 1, "mesh", "at most one of data/fsdp/tensor may be -1")


def to_dict(config) -> dict:
    """A JSON-ready plain dict of a config."""
    return json.loads(config.to_json())


def from_dict(d: dict) -> ml_collections.ConfigDict:
    """Rebuild a locked config from `to_dict` output, on top of the current schema's defaults
    (fields added to the schema later keep their defaults). An unknown field is a ConfigError."""
    config = get_config()
    for section, values in d.items():
        if section not in config:
            raise ConfigError(f"config.{section}: unknown section")
        for key, value in values.items():
            if key not in config[section]:
                raise ConfigError(f"config.{section}.{key}: unknown field")
            if section == "mesh" and key == "rules":
                value = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in value)
            elif isinstance(config[section][key], tuple) and isinstance(value, list):
                value = tuple(value)  # JSON has no tuples (checkpoint.steps)
            if isinstance(config[section][key], ml_collections.ConfigDict) and isinstance(value, dict):
                for sub, v in value.items():  # a nested section (train.wandb): field by field
                    if sub not in config[section][key]:
                        raise ConfigError(f"config.{section}.{key}.{sub}: unknown field")
                    config[section][key][sub] = v
                continue
            config[section][key] = value
    return config
