"""What a sweep spec declares, and the helpers that build the usual shapes of a scaling study.

A spec is a Python file whose `get_sweep()` returns a `Sweep`: named `Run`s (a config plus `--config.*`
overrides) and the launcher settings (`TPU`, `Slurm`), whose fields have defaults or placeholders such as
`<ZONE>` so that `gpt2jax-sweep SPEC --dry_run` needs nothing but SPEC and --root. `grid`, `ladder` and
`isoflop` build the usual shapes (`gpt2jax.scaling.cooldowns` the WSD cooldown sweeps).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Sequence
from typing import Any

from gpt2jax.errors import SweepError
from gpt2jax.scaling.overrides import load_config


def _checkout() -> str:
    """The checkout this package runs from (where pyproject.toml sits above it), else a placeholder."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return root if os.path.isfile(os.path.join(root, "pyproject.toml")) else "<REPO_DIR>"


CHECKOUT = _checkout()


@dataclasses.dataclass
class Run:
    """One training run: `python -m gpt2jax.train --config=CONFIG --config.FIELD=VALUE ...`.

    overrides: config field ('train.num_steps') -> value (a Python value, or a string parsed to the
    field's type as the command line would). budget_flops: the IsoFLOP budget the run belongs to.
    tags: free-form labels copied into sweep_run.json (e.g. the ladder rung)."""

    name: str
    config: str
    overrides: dict = dataclasses.field(default_factory=dict)
    budget_flops: float | None = None
    tags: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TPU:
    """Cloud TPU VM settings. Runs are split over `slices` slices (0 = one slice per run), run one
    after another on each; every slice is a queued resource named `<name_prefix>-<i>`."""

    project: str = "<PROJECT>"
    zone: str = "<ZONE>"
    accelerator_type: str = "v4-32"
    accelerator_types: dict = dataclasses.field(default_factory=dict)  # run name -> type (one-run slices)
    runtime_version: str = "tpu-ubuntu2204-base"
    name_prefix: str = "gpt2jax"
    slices: int = 0
    spot: bool = False
    data_dir: str = "gs://<BUCKET>/data/openwebtext"  # passed as --config.data.dir ('' = the config's)
    checkpoint_bucket: str = "gs://<BUCKET>/runs"  # each run's checkpoints in <this>/<name>
    repo_url: str = "<REPO_URL>"
    revision: str = "main"
    remote_dir: str = "~/gpt2jax"
    install: str = ""  # '' = clone/update repo_url at revision and pip install -e '.[tpu,gcs]'
    extra_create_args: tuple = ()


@dataclasses.dataclass
class Slurm:
    """SLURM settings for the one job array of the sweep (one array task per run)."""

    partition: str = "<PARTITION>"
    account: str = ""  # '' = no --account line
    nodes: int = 1
    ntasks_per_node: int = 8  # one task per GPU
    gpus_per_node: int = 8
    cpus_per_task: int = 8
    time: str = "48:00:00"
    max_parallel: int = 0  # at most this many array tasks at once (0 = no limit)
    repo_dir: str = CHECKOUT  # where the project (and .venv) are on the cluster's shared filesystem
    setup: str = "source .venv/bin/activate"  # run in repo_dir before srun
    data_dir: str = ""  # '' = each run's config data.dir
    extra_sbatch: tuple = ()  # further '#SBATCH' options, e.g. ('--qos=high',) or ('--requeue',)
    # SIGTERM this many seconds before the time limit (#SBATCH --signal=TERM@N): the run saves and exits.
    # scancel and preemption send SIGTERM at once and SIGKILL the cluster's KillWait seconds later.
    signal_grace_s: int = 120


@dataclasses.dataclass
class Sweep:
    runs: list
    tpu: TPU = dataclasses.field(default_factory=TPU)
    slurm: Slurm = dataclasses.field(default_factory=Slurm)
    name: str = "sweep"


# ---------------------------------------------------------------------------------------------
# Helpers that build the common shapes
# ---------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def grid(prefix: str, config: str, axes: dict, overrides: dict | None = None, tags: dict | None = None) -> list:
    """Every combination of `axes` (config field -> list of values): prod(len(values)) runs named
    `<prefix>-<key><value>-...` (key = the field's last part), each tagged with its axis values."""
    if not axes:
        raise SweepError("grid: axes is empty")
    fields = list(axes)
    for f in fields:
        if not isinstance(axes[f], (list, tuple)) or not axes[f]:
            raise SweepError(f"grid: axis {f!r} needs a non-empty list of values, got {axes[f]!r}")
    runs = []
    for values in itertools.product(*(axes[f] for f in fields)):
        point = dict(zip(fields, values))
        name = "-".join([prefix] + [f"{f.split('.')[-1]}{_fmt(v)}" for f, v in point.items()])
        runs.append(Run(name, config, {**(overrides or {}), **point}, tags={**(tags or {}), **point}))
    return runs


def kaplan_lr(n_non_embedding: int) -> float:
    """Kaplan et al. 2020 (arXiv:2001.08361), eq. D.1: LR(N) ~= 0.003239 - 0.0001395 log(N), N the
    non-embedding parameters (their fit of the best learning rate over model sizes)."""
    return 0.003239 - 0.0001395 * math.log(n_non_embedding)


def model_config(config: str, n_layer: int, n_embd: int, n_head: int, block_size: int | None = None):
    """The config file's config with the model shape set (to count parameters of a rung)."""
    cfg = load_config(config)
    m = cfg.model
    m.n_layer, m.n_embd, m.n_head = n_layer, n_embd, n_head
    if block_size:
        m.block_size = block_size
    return cfg


def _heads(n_embd: int, head_dim: int | None, n_head: int | None) -> int:
    if n_head:
        return n_head
    if n_embd % head_dim:
        raise SweepError(f"ladder: width {n_embd} is not a multiple of head_dim {head_dim}")
    return n_embd // head_dim


def _lr_for(lr, n_embd: int, n_non_emb: int, base_width: int | None) -> float:
    """The rung's learning rate, rounded to 4 significant digits (readable command lines)."""
    if isinstance(lr, str):
        if lr != "kaplan":
            raise SweepError(f"lr must be 'kaplan', a number or a callable, got {lr!r}")
        value = kaplan_lr(n_non_emb)
    elif callable(lr):
        value = float(lr(n_embd, n_non_emb))
    elif base_width:
        value = float(lr) * base_width / n_embd
    else:
        value = float(lr)
    return float(f"{value:.4g}")


def _warmup(fraction: float | None, steps: int) -> dict:
    return {} if fraction is None else {"optim.warmup_steps": math.ceil(fraction * steps)}


def _shape_overrides(n_layer, n_embd, heads, seq_len, batch_size, steps, rate, min_lr_ratio, warmup_fraction,
                     overrides) -> dict:
    """The overrides of one model shape in a ladder or IsoFLOP sweep (then the spec's own overrides)."""
    return {
        "model.n_layer": n_layer,
        "model.n_embd": n_embd,
        "model.n_head": heads,
        "model.block_size": seq_len,
        "train.batch_size": batch_size,
        "train.seq_len": seq_len,
        "train.num_steps": steps,
        "optim.lr": rate,
        "optim.min_lr": float(f"{rate * min_lr_ratio:.4g}"),
        **_warmup(warmup_fraction, steps),
        **(overrides or {}),
    }


def _steps(tokens: float, batch_size: int, seq_len: int) -> int:
    return max(1, math.ceil(tokens / (batch_size * seq_len)))


def ladder(
    prefix: str,
    config: str,
    shapes: Sequence[tuple],
    *,
    batch_size: int,
    seq_len: int,
    tokens: float | None = None,
    tokens_per_param: float | None = None,
    count: str = "non_embedding",
    head_dim: int | None = 64,
    n_head: int | None = None,
    lr: Any = "kaplan",
    lr_base_width: int | None = None,
    min_lr_ratio: float = 0.1,
    warmup_fraction: float | None = None,
    overrides: dict | None = None,
) -> list:
    """A model-size ladder over (n_layer, n_embd) shapes, one run each, named `<prefix>-L<l>-D<d>`.

    Heads: n_head fixed when given, else n_embd / head_dim (head_dim 64 as GPT-2; the width must be
    a multiple of it). Learning rate: lr='kaplan' (default) sets Kaplan et al.'s eq. D.1 from the
    rung's non-embedding parameters; a float is used as it is, or scaled as lr * lr_base_width /
    n_embd when lr_base_width is given (1/width, as muP prescribes for Adam's hidden matrices); a
    callable gets (n_embd, non-embedding params). min_lr = lr * min_lr_ratio. warmup_fraction, when
    given, sets optim.warmup_steps = ceil(fraction x steps) (else the config's warmup stays).
    Tokens: `tokens` fixed for every rung, or tokens_per_param x N with N counted as `count`
    ('non_embedding' = Kaplan's N, or 'total'). Steps = ceil(tokens / (batch_size * seq_len));
    the run's model.block_size is seq_len.
    """
    from gpt2jax.model import num_params

    if (tokens is None) == (tokens_per_param is None):
        raise SweepError("ladder: give exactly one of tokens (fixed) or tokens_per_param")
    if count not in ("non_embedding", "total"):
        raise SweepError(f"ladder: count must be 'non_embedding' or 'total', got {count!r}")
    runs = []
    for n_layer, n_embd in shapes:
        heads = _heads(n_embd, head_dim, n_head)
        cfg = model_config(config, n_layer, n_embd, heads, seq_len)
        n_total = num_params(cfg.model)
        n_non_emb = num_params(cfg.model, non_embedding=True)
        n_tok = tokens if tokens is not None else tokens_per_param * (n_non_emb if count == "non_embedding" else n_total)
        rate = _lr_for(lr, n_embd, n_non_emb, lr_base_width)
        ov = _shape_overrides(n_layer, n_embd, heads, seq_len, batch_size, _steps(n_tok, batch_size, seq_len),
                              rate, min_lr_ratio, warmup_fraction, overrides)
        tags = {"ladder": prefix, "n_layer": n_layer, "n_embd": n_embd, "n_head": heads}
        runs.append(Run(f"{prefix}-L{n_layer}-D{n_embd}", config, ov, tags=tags))
    return runs


def isoflop(
    prefix: str,
    config: str,
    budgets: Sequence[float],
    shapes: Sequence[tuple],
    *,
    batch_size: int,
    seq_len: int,
    count: str = "total",
    head_dim: int | None = 64,
    n_head: int | None = None,
    lr: Any = "kaplan",
    lr_base_width: int | None = None,
    min_lr_ratio: float = 0.1,
    min_steps: int = 1,
    tokens_per_param: tuple | None = None,
    warmup_fraction: float | None = None,
    overrides: dict | None = None,
) -> list:
    """An IsoFLOP sweep: for each FLOP budget C, every (n_layer, n_embd) shape trained on
    tokens = C / (6 N), N counted as `count` ('total', as Hoffmann et al. did, or 'non_embedding');
    steps = ceil(tokens / (batch_size * seq_len)). Each run records budget_flops = C. Shapes whose
    run would be shorter than min_steps at a budget, or (with tokens_per_param = (lo, hi)) whose
    tokens / N falls outside [lo, hi], are left out of that budget. Runs are named
    `<prefix>-C<C>-L<l>-D<d>`; heads and learning rate follow `ladder`'s rules."""
    from gpt2jax.model import num_params

    runs = []
    for C in budgets:
        for n_layer, n_embd in shapes:
            heads = _heads(n_embd, head_dim, n_head)
            cfg = model_config(config, n_layer, n_embd, heads, seq_len)
            n_non_emb = num_params(cfg.model, non_embedding=True)
            N = n_non_emb if count == "non_embedding" else num_params(cfg.model)
            steps = _steps(C / (6.0 * N), batch_size, seq_len)
            if steps < min_steps:
                continue
            if tokens_per_param and not tokens_per_param[0] <= C / (6.0 * N) / N <= tokens_per_param[1]:
                continue
            rate = _lr_for(lr, n_embd, n_non_emb, lr_base_width)
            ov = _shape_overrides(n_layer, n_embd, heads, seq_len, batch_size, steps, rate, min_lr_ratio,
                                  warmup_fraction, overrides)
            tags = {"isoflop": prefix, "n_layer": n_layer, "n_embd": n_embd, "n_head": heads}
            runs.append(Run(f"{prefix}-C{C:.0e}-L{n_layer}-D{n_embd}".replace("+", ""), config, ov,
                            budget_flops=float(C), tags=tags))
    return runs

