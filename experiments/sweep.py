"""Sweeps: a family of training runs from one spec, on this machine, TPU VM slices or SLURM.

    python -m experiments.sweep SPEC --root=DIR [--launcher=local|tpu|slurm] [--dry_run]

SPEC is a Python file whose `get_sweep()` returns a `Sweep`: named `Run`s (a config file plus
`--config.*` overrides) and the launcher settings (`TPU`, `Slurm`), whose fields have defaults or
placeholders such as `<ZONE>` so that `--dry_run` needs nothing but SPEC and --root. `grid`, `ladder`
and `isoflop` build the usual shapes of a scaling study. Every run is resolved up front exactly as
`python -m gpt2jax.train --config=FILE --config.a.b=v` would build it (the config file's
`get_config()`, the overrides parsed to each field's type, `gpt2jax.config.validate`), so a bad
override fails before anything starts, naming the run and the field.

Records (read by `python -m experiments.analyze`): DIR/sweep.json ({"spec": path, "runs": [...]})
and DIR/<name>/sweep_run.json per run (name, config, overrides, budget_flops, tokens, params,
params_non_embedding, tags), written before the run starts. DIR/<name>/ is the run's ordinary
workdir (run.json, metrics.jsonl, checkpoints/).

Launchers (every external command is printed before it runs; --dry_run prints them and runs none):
  local  each run as its own `gpt2jax.train` subprocess, one after another, output teed to
         DIR/<name>/train.log. A run whose latest checkpoint is at its num_steps is skipped; an
         interrupted one resumes (train resumes by itself from its workdir). Ctrl-C is passed to the
         current run, which saves; the same command continues.
  tpu    --action=launch creates (or reuses) one queued-resource TPU VM slice per group of runs,
         installs the project on all its workers and starts the runs there (`--worker=all`, nohup),
         data and checkpoints in buckets; --action=status|tail|fetch|delete follow, copy back
         (run.json, metrics.jsonl, train.log into DIR/<name>/) and delete the slices.
  slurm  writes DIR/sweep.sbatch, one job array (array index -> run) and submits it with sbatch.

--set=FIELD=VALUE (repeatable) overrides a config field of every run, after the spec's own (e.g.
--set=data.dir=/data/shk). Exit status: 0 when every run is finished or stopped by
train.stop_after, 1 when a run failed (its name and log are printed), 2 for a mistake in the spec,
an override or a flag (one message naming it), 130 when interrupted.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SweepError(ValueError):
    """A spec, run or launcher setting that cannot work. The message names it."""


# ---------------------------------------------------------------------------------------------
# What a spec declares
# ---------------------------------------------------------------------------------------------
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
    repo_dir: str = REPO  # where the project (and .venv) are on the cluster's shared filesystem
    setup: str = "source .venv/bin/activate"  # run in repo_dir before srun
    data_dir: str = ""  # '' = each run's config data.dir
    extra_sbatch: tuple = ()  # further '#SBATCH' options, e.g. ('--qos=high',)


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


def _model_cfg(config: str, n_layer: int, n_embd: int, n_head: int, block_size: int | None):
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
        cfg = _model_cfg(config, n_layer, n_embd, heads, seq_len)
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
            cfg = _model_cfg(config, n_layer, n_embd, heads, seq_len)
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


# ---------------------------------------------------------------------------------------------
# Loading specs and configs, applying overrides
# ---------------------------------------------------------------------------------------------
def resolve_config_path(path: str) -> str:
    """A config path as given if it exists (absolute or relative to the current directory), else
    relative to the repository root."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    alt = os.path.join(REPO, path)
    return alt if os.path.exists(alt) else path


_CONFIG_CACHE: dict = {}


def load_config(path: str):
    """The config file's get_config() (a fresh, locked copy), loaded as gpt2jax.train's --config
    flag loads it."""
    from ml_collections.config_flags.config_flags import ConfigFileFlagParser

    real = resolve_config_path(path)
    if not os.path.isfile(real):
        raise SweepError(f"config file {path!r} not found")
    if real not in _CONFIG_CACHE:
        try:
            _CONFIG_CACHE[real] = ConfigFileFlagParser("config", lock_config=True).parse(real)
        except Exception as e:
            raise SweepError(f"config file {path}: cannot be loaded ({type(e).__name__}: {e})") from e
    cfg = _CONFIG_CACHE[real].copy_and_resolve_references()
    cfg.lock()
    return cfg


def _parse_value(text: str, kind: type):
    from absl import flags

    parser = {bool: flags.BooleanParser(), int: flags.IntegerParser(), float: flags.FloatParser()}.get(kind)
    if kind is str:
        return text
    if parser is None:
        raise ValueError(f"fields of type {kind.__name__} cannot be set from a string")
    try:
        return parser.parse(text)
    except ValueError:
        raise ValueError(f"cannot parse {text!r} as {kind.__name__}") from None


def _coerce(value, current):
    """`value` converted to the type of the field's current value, as --config.a.b=value would be."""
    kind = type(current)
    if isinstance(value, str) and kind is not str:
        return _parse_value(value, kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind is tuple and isinstance(value, list):
        return tuple(value)
    if type(value) is not kind:
        raise ValueError(f"expected {kind.__name__}, got {value!r} ({type(value).__name__})")
    return value


def apply_overrides(cfg, overrides: dict, where: str):
    for field, value in overrides.items():
        parts = field.split(".")
        node = cfg
        try:
            for p in parts[:-1]:
                node = node[p]
            current = node[parts[-1]]
        except (KeyError, AttributeError, TypeError):
            raise SweepError(f"{where}: config.{field}: no such field") from None
        if hasattr(current, "keys"):
            raise SweepError(f"{where}: config.{field} is a section; override its fields")
        try:
            node[parts[-1]] = _coerce(value, current)
        except (ValueError, TypeError) as e:
            raise SweepError(f"{where}: config.{field}: {e}") from None
    return cfg


def build_config(run: Run, extra: dict | None = None):
    """The run's config, as gpt2jax.train would build it, validated."""
    from gpt2jax import config as config_lib

    where = f"run {run.name!r}"
    try:
        cfg = load_config(run.config)
    except SweepError as e:
        raise SweepError(f"{where}: {e}") from None
    apply_overrides(cfg, {**run.overrides, **(extra or {})}, where)
    try:
        config_lib.validate(cfg)
    except config_lib.ConfigError as e:
        raise SweepError(f"{where}: {e}") from None
    return cfg


def load_spec(path: str) -> Sweep:
    if not os.path.isfile(path):
        raise SweepError(f"spec {path!r} not found")
    mod_spec = importlib.util.spec_from_file_location("sweep_spec", path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except SweepError as e:
        raise SweepError(f"spec {path}: {e}") from None
    except Exception as e:
        raise SweepError(f"spec {path}: cannot be loaded ({type(e).__name__}: {e})") from e
    if not callable(getattr(module, "get_sweep", None)):
        raise SweepError(f"spec {path}: defines no get_sweep() function")
    try:
        sweep = module.get_sweep()
    except SweepError as e:
        raise SweepError(f"spec {path}: {e}") from None
    except Exception as e:
        raise SweepError(f"spec {path}: get_sweep() failed ({type(e).__name__}: {e})") from e
    if isinstance(sweep, (list, tuple)):
        sweep = Sweep(runs=list(sweep))
    if not isinstance(sweep, Sweep):
        raise SweepError(f"spec {path}: get_sweep() must return a Sweep, got {type(sweep).__name__}")
    if not sweep.runs:
        raise SweepError(f"spec {path}: the sweep has no runs")
    seen = set()
    for r in sweep.runs:
        if not isinstance(r, Run):
            raise SweepError(f"spec {path}: runs must be Run objects, got {type(r).__name__}")
        if not NAME_RE.match(r.name):
            raise SweepError(f"spec {path}: run name {r.name!r} must be letters, digits, '.', '_' or '-'")
        if r.name in seen:
            raise SweepError(f"spec {path}: run name {r.name!r} appears twice")
        seen.add(r.name)
    return sweep


@dataclasses.dataclass
class Planned:
    """A run resolved against its config: what the launchers start and the records say."""

    run: Run
    config: Any  # the resolved ConfigDict
    overrides: dict  # field -> value, typed, as passed on the command line
    record: dict  # sweep_run.json

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def num_steps(self) -> int:
        return int(self.config.train.num_steps)


def plan(sweep: Sweep, spec_path: str, extra: dict | None = None) -> list:
    """Resolve and validate every run (extra: overrides applied to every run after its own)."""
    from gpt2jax import config as config_lib
    from gpt2jax.model import num_params

    out = []
    for r in sweep.runs:
        cfg = build_config(r, extra)
        overrides = {}
        for field in {**r.overrides, **(extra or {})}:
            node = cfg
            for p in field.split("."):
                node = node[p]
            overrides[field] = node
        tokens = cfg.train.num_steps * cfg.train.batch_size * config_lib.seq_len(cfg)
        record = {
            "name": r.name,
            "config": r.config,
            "overrides": overrides,
            "budget_flops": None if r.budget_flops is None else float(r.budget_flops),
            "tokens": int(tokens),
            "params": num_params(cfg.model),
            "params_non_embedding": num_params(cfg.model, non_embedding=True),
            "tags": dict(r.tags),
        }
        out.append(Planned(r, cfg, overrides, record))
    return out


def parse_sets(items: Sequence[str]) -> dict:
    """--set=field=value strings -> {field: value} (values stay strings, parsed per field later)."""
    out = {}
    for item in items or ():
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise SweepError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set=train.compile_cache=")
        out[field.removeprefix("config.")] = value
    return out


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------
def atomic_write_json(path: str, obj) -> None:
    from gpt2jax.fileio import write_json_atomic

    write_json_atomic(path, obj)


def write_records(planned: list, root: str, spec_path: str) -> None:
    atomic_write_json(os.path.join(root, "sweep.json"), {"spec": spec_path, "runs": [p.record for p in planned]})
    for p in planned:
        atomic_write_json(os.path.join(root, p.name, "sweep_run.json"), p.record)


def _cli_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple):
        return repr(v)
    return str(v)


def train_args(p: Planned, workdir: str, config_path: str | None = None, extra: dict | None = None) -> list:
    """`python -m gpt2jax.train`'s arguments for a planned run (after the interpreter)."""
    args = ["-m", "gpt2jax.train", f"--config={config_path or p.run.config}", f"--workdir={workdir}"]
    ov = {**p.overrides, **(extra or {})}
    args += [f"--config.{k}={_cli_value(v)}" for k, v in ov.items()]
    return args


def print_cmd(cmd, out=None) -> None:
    text = cmd if isinstance(cmd, str) else shlex.join(cmd)
    print(f"$ {text}", file=out or sys.stdout, flush=True)


def latest_step(planned: Planned, workdir: str) -> int | None:
    """The latest committed checkpoint of a run (gpt2jax.checkpoint.Checkpointer.latest_step), or
    None when it has none."""
    from gpt2jax import checkpoint as ckpt_lib

    base = planned.config.checkpoint.dir or workdir
    if "://" not in base and not os.path.isdir(os.path.join(base, "checkpoints")):
        return None
    from absl import logging

    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)  # Orbax warns that a read-only directory is read-only
    ckpt = ckpt_lib.Checkpointer(base, read_only=True)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.manager.close()
        logging.set_verbosity(level)


# ---------------------------------------------------------------------------------------------
# local
# ---------------------------------------------------------------------------------------------
_PROGRESS_RE = re.compile(r"train:\s*\d+%\|.*?\|\s*(\d+)/(\d+)")


class _Interrupted(Exception):
    pass


def _stream_child(proc, log, on_line, on_step) -> None:
    """Copy the child's output to the log file, turn its progress bar into step updates and pass
    its other lines to on_line."""
    buf = b""
    while True:
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        log.write(chunk)
        log.flush()
        buf += chunk
        parts = re.split(rb"[\r\n]", buf)
        buf = parts.pop()
        for raw in parts:
            line = raw.decode("utf-8", "replace").rstrip()
            m = _PROGRESS_RE.search(line)
            if m:
                on_step(int(m.group(1)))
            elif line.strip():
                on_line(line)
    if buf.strip():
        on_line(buf.decode("utf-8", "replace").rstrip())


def launch_local(planned: list, root: str, dry_run: bool, progress: bool = True) -> int:
    from tqdm.auto import tqdm

    todo = []
    for p in planned:
        wd = os.path.abspath(os.path.join(root, p.name))
        done = latest_step(p, wd)
        todo.append((p, wd, done))
        if done is not None and done >= p.num_steps:
            print(f"{p.name}: finished (checkpoint at step {done} of {p.num_steps}), skipped", flush=True)
    if dry_run:
        for p, wd, done in todo:
            if done is None or done < p.num_steps:
                cmd = [sys.executable] + train_args(p, wd, os.path.abspath(resolve_config_path(p.run.config)))
                print(f"$ {shlex.join(cmd)}  (log: {wd}/train.log)", flush=True)
        return 0

    finished = sum(1 for p, _, done in todo if done is not None and done >= p.num_steps)
    runs_bar = tqdm(total=len(planned), initial=finished, desc="sweep", unit="run", position=0,
                    dynamic_ncols=True, disable=not progress)
    stop = {"sig": None, "child": None}

    def on_signal(signum, _frame):
        stop["sig"] = signum
        child = stop["child"]
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)  # the run finishes its step, saves and exits

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    unfinished = []
    try:
        for p, wd, done in todo:
            if done is not None and done >= p.num_steps:
                continue
            if stop["sig"] is not None:
                break
            cmd = [sys.executable] + train_args(p, wd, os.path.abspath(resolve_config_path(p.run.config)))
            log_path = os.path.join(wd, "train.log")
            runs_bar.set_postfix_str(p.name)
            runs_bar.write("$ " + shlex.join(cmd) + f"  (log: {log_path})")
            step_bar = tqdm(total=p.num_steps, initial=done or 0, desc=p.name, unit="step", position=1,
                            leave=False, dynamic_ncols=True, mininterval=1.0, disable=not progress)
            with open(log_path, "ab") as log:
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n".encode())
                # Own session: a terminal's Ctrl-C reaches only this process, which passes it on once.
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=os.getcwd())
                stop["child"] = proc
                if stop["sig"] is not None:
                    proc.send_signal(signal.SIGINT)

                def on_step(s, bar=step_bar):
                    bar.update(s - bar.n)  # tqdm's mininterval keeps redraws rare

                def on_line(line, bar=runs_bar, name=p.name):
                    if "val_loss" in line or "resuming" in line or "stop" in line:
                        bar.write(f"  {name}: {line}")

                _stream_child(proc, log, on_line, on_step)
                rc = proc.wait()
                stop["child"] = None
            step_bar.close()
            if stop["sig"] is not None:
                raise _Interrupted()
            if rc != 0:
                runs_bar.close()
                print(f"error: run {p.name} failed (exit code {rc}); its log: {log_path}", file=sys.stderr)
                tail = _tail(log_path, 15)
                if tail:
                    print(tail, file=sys.stderr)
                return 1
            now = latest_step(p, wd)
            if now is not None and now >= p.num_steps:
                runs_bar.update(1)
            else:
                unfinished.append(f"{p.name} (step {now} of {p.num_steps})")
                runs_bar.write(f"  {p.name}: stopped at step {now} of {p.num_steps}")
        if stop["sig"] is not None:
            raise _Interrupted()
    except _Interrupted:
        runs_bar.close()
        print("interrupted: run the same command to continue", file=sys.stderr, flush=True)
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    runs_bar.close()
    if unfinished:
        print(f"{len(planned) - len(unfinished)}/{len(planned)} runs finished; not yet: "
              + ", ".join(unfinished) + " (run the same command to continue)", flush=True)
    else:
        print(f"all {len(planned)} runs finished in {root}", flush=True)
    return 0


def _tail(path: str, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln for ln in re.split(r"[\r\n]", text) if ln.strip()]
    return "\n".join(lines[-n:])


# ---------------------------------------------------------------------------------------------
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
    from experiments import launchers

    if launcher == "tpu":
        return launchers.launch_tpu(planned, sweep.tpu, action, root, dry_run)
    return launchers.launch_slurm(planned, sweep.slurm, root, sweep.name, dry_run)


def main(argv):
    from absl import flags, logging

    logging.set_verbosity(logging.WARNING)  # Orbax's INFO lines when checkpoints are inspected

    FLAGS = flags.FLAGS
    if len(argv) != 2:
        print("usage: python -m experiments.sweep SPEC --root=DIR [--launcher=local|tpu|slurm] [--dry_run]",
              file=sys.stderr)
        return 2
    try:
        return run_sweep(argv[1], FLAGS.root, FLAGS.launcher, FLAGS.dry_run, FLAGS.action, FLAGS.set)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _define_flags():
    from absl import flags

    flags.DEFINE_string("root", None, "Directory of the sweep: DIR/sweep.json and one workdir per run.")
    flags.DEFINE_enum("launcher", "local", ["local", "tpu", "slurm"], "Where the runs go.")
    flags.DEFINE_bool("dry_run", False, "Print every command (and the sbatch file) without running anything.")
    flags.DEFINE_enum("action", "launch", ["launch", "status", "tail", "fetch", "delete"],
                      "tpu launcher: create/install/start, the state of each slice and run, the last "
                      "lines of each run's log, copy run.json/metrics.jsonl/train.log into DIR/<name>/, "
                      "or delete the slices.")
    flags.DEFINE_multi_string("set", [], "FIELD=VALUE: a config override for every run, after the "
                              "spec's own (e.g. --set=data.dir=/data/shakespeare). Repeatable.")
    flags.mark_flags_as_required(["root"])


if __name__ == "__main__":
    from absl import app

    # Specs import experiments.sweep: use that module (not __main__) so Sweep/Run/SweepError are
    # the same classes the spec builds.
    from absl import flags as _flags

    from experiments import sweep as _module  # noqa: PLW0406

    _module._define_flags()
    _flags.adopt_module_key_flags(_module)  # --help lists them
    app.run(_module.main)
