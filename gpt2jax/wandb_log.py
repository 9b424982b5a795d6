"""Weights & Biases logging for training runs (optional: pip install -e '.[wandb]').

On when `config.train.wandb.project` is set:

    python -m gpt2jax.train --config=configs/shakespeare.py --workdir=runs/shk \
        --config.train.wandb.project=gpt2jax --config.train.wandb.mode=offline

What is logged: every row that goes to metrics.jsonl (train loss/lr/grad_norm/throughput, val_loss,
the zero-shot tasks' eval/<task>/<metric> rows), with the run's own `step` as the x-axis; the resolved
config as the W&B config (its sections as nested keys) and the rest of run.json (versions, devices,
parameter counts, FLOPs per token, git commit) under `run`; run.json itself as a file of the run.

Where: W&B's files go to $WANDB_DIR when set, else WORKDIR/wandb. Which run: the W&B run id is kept
in run.json (`wandb.id`), so starting the same workdir again (a resume) continues the same W&B run;
rows of steps redone after a resume are logged again with the same `step` values. Only process 0
logs. mode='offline' writes everything locally (no network; `wandb sync WORKDIR/wandb/offline-run-*`
uploads it later).
"""

from __future__ import annotations

import json
import math
import os

from gpt2jax.config import ConfigError
from gpt2jax.errors import WandbMissing

MODES = ("", "online", "offline", "disabled")
INSTALL_HINT = "Weights & Biases is not installed; install it with  pip install -e '.[wandb]'  (or  pip install wandb)"


def enabled(config) -> bool:
    return bool(config.train.wandb.project)


def check(config) -> None:
    """Before anything compiles: the train.wandb fields make sense and wandb is importable."""
    w = config.train.wandb
    if w.mode not in MODES:
        raise ConfigError(f"config.train.wandb.mode: must be one of {MODES}, got {w.mode!r}")
    if not w.project:
        return
    try:
        import wandb  # noqa: F401
    except ImportError as e:
        raise WandbMissing(f"config.train.wandb.project={w.project!r}: {INSTALL_HINT}") from e


def _previous_id(workdir: str) -> str | None:
    """The W&B run id a previous start of this workdir recorded in run.json."""
    try:
        with open(os.path.join(workdir, "run.json")) as f:
            return (json.load(f).get("wandb") or {}).get("id")
    except (OSError, ValueError, AttributeError):
        return None


def _new_id() -> str:
    """A fresh W&B run id: 8 random lowercase letters and digits (W&B's own form)."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _clean(row: dict) -> dict:
    """Numbers W&B can plot: None and non-finite values left out (metrics.jsonl keeps them)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, bool):
            v = int(v)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = v
    return out


class WandbWriter:
    """A metrics writer (write(row), close()) that sends rows to a W&B run.

    Make it before run.json is (re)written: it reads the W&B id of a previous start from run.json
    and adds `info['wandb']` ({id, project, entity, name, dir, mode}) to the run info that train.py
    writes there. `log_run_json(path)` after writing attaches the file to the run."""

    def __init__(self, config, workdir: str, info: dict):
        check(config)
        import wandb

        w = config.train.wandb
        workdir = os.path.abspath(os.path.expanduser(workdir))
        base = os.environ.get("WANDB_DIR") or workdir  # wandb puts its files in <base>/wandb/
        os.makedirs(base, exist_ok=True)
        run_id = _previous_id(workdir) or _new_id()
        info["wandb"] = {
            "id": run_id, "project": w.project, "entity": w.entity or None, "name": w.name or None,
            "dir": os.path.join(base, "wandb"), "mode": w.mode or os.environ.get("WANDB_MODE") or "online",
        }
        cfg = dict(info.get("config", {}))
        cfg["run"] = {k: v for k, v in info.items() if k not in ("config", "wandb")}
        self.run = wandb.init(
            project=w.project,
            entity=w.entity or None,
            name=w.name or None,
            mode=w.mode or None,
            tags=[t.strip() for t in w.tags.split(",") if t.strip()] or None,
            dir=base,
            id=run_id,
            resume="allow",
            config=cfg,
            allow_val_change=True,  # a resume may change e.g. num_steps or the eval cadence
        )
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self.id = run_id

    def write(self, row: dict) -> None:
        clean = _clean(row)
        if clean:
            self.run.log(clean)
        for k, v in clean.items():  # the zero-shot results also as summary values
            if k.startswith("eval/"):
                self.run.summary[k] = v

    def log_run_json(self, path: str) -> None:
        self.run.save(os.path.abspath(path), base_path=os.path.dirname(os.path.abspath(path)), policy="now")

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class Tee:
    """Several writers as one (train.py's metrics writer plus W&B)."""

    def __init__(self, *writers):
        self.writers = [w for w in writers if w is not None]

    def write(self, row: dict) -> None:
        for w in self.writers:
            w.write(row)

    def close(self) -> None:
        for w in self.writers:
            w.close()


def start(config, workdir: str, info: dict, *, is_main: bool):
    """A WandbWriter on process 0 when train.wandb.project is set, else None (config checked either
    way). Call it before run.json is written."""
    check(config)
    if not (enabled(config) and is_main):
        return None
    return WandbWriter(config, workdir, info)
