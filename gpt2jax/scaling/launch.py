"""What every launcher shares: the records written before the runs start (ROOT/sweep.json and
ROOT/<name>/sweep_run.json, read by gpt2jax-analyze), each run's `gpt2jax.train` command line, where
a run stands (its latest committed checkpoint, the step it is done at), and the order of cooldown
branches (a run whose `train.branch_from` names another run of the sweep starts after that run).
Every external command is printed before it runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence

from gpt2jax.errors import SweepError
from gpt2jax.scaling.resolve import Planned


def atomic_write_json(path: str, obj) -> None:
    from gpt2jax.fileio import write_json_atomic

    write_json_atomic(path, obj)


def write_records(planned: list, root: str, spec_path: str) -> None:
    atomic_write_json(os.path.join(root, "sweep.json"), {"spec": spec_path, "runs": [p.record for p in planned]})
    for p in planned:
        atomic_write_json(os.path.join(root, p.name, "sweep_run.json"), p.record)


# What a run's config may change over an existing root, the run continuing from its checkpoints (as a
# resume of a single run may): the steps it trains to, how often it logs, evaluates and saves (and how
# many checkpoints it keeps), and where the XLA cache is. None of these changes the trained weights'
# trajectory up to the checkpoint; every other field does (model, optimizer, data, batch, seed, ...) or
# may (checkpoint.dir, mesh): another experiment, in another --root.
MAY_CHANGE = ("train.num_steps", "train.stop_after", "train.log_every", "train.eval_every", "train.eval_batches",
              "train.compile_cache", "checkpoint.every", "checkpoint.keep", "checkpoint.keep_every",
              "checkpoint.steps")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_changes(saved: dict, config) -> list:
    """'field: old -> new' for each field of `config` that differs from `saved` (a run.json's config)
    but those in MAY_CHANGE. model.vocab_size 0 (the data's, set by train) matches any."""
    from gpt2jax import config as config_lib

    try:  # fields added to the schema after the run was written compare at their defaults
        saved = config_lib.to_dict(config_lib.from_dict(saved))
    except config_lib.ConfigError:
        pass
    old, new = _flat(saved), _flat(config_lib.to_dict(config))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in new | old
            if k not in MAY_CHANGE and old.get(k) != new.get(k) and not (k == "model.vocab_size" and new.get(k) == 0)]


def refuse_changed(planned: list, root: str) -> None:
    """A SweepError naming every run of `planned` already trained in `root` (a checkpoint, and the
    run.json train wrote) with another config than the spec's now, and the fields that differ."""
    bad = []
    for p in planned:
        wd = os.path.join(root, p.name)
        try:
            with open(os.path.join(wd, "run.json")) as f:
                saved = json.load(f)["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        changes = config_changes(saved, p.config) if latest_step(p, wd) is not None else []
        if changes:
            bad.append(f"{p.name} ({'; '.join(changes)})")
    if bad:
        raise SweepError(f"the spec changed runs already trained in {root}: " + ", ".join(bad)
                         + f". Nothing was written. Give the changed sweep a new --root (a run may change only "
                         + ", ".join(MAY_CHANGE) + " and continue)")


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


def target_step(p: Planned) -> int:
    """The step a run is done at: train.num_steps, or train.stop_after when it stops earlier (a cooldown
    sweep's stable parent stops where its longest branch's cooldown starts)."""
    t = p.config.train
    return min(int(t.num_steps), int(t.stop_after)) if t.stop_after else int(t.num_steps)


def is_done(p: Planned, step: int | None) -> bool:
    return step is not None and step >= target_step(p)


def sweep_parent(p: Planned, names) -> str | None:
    """The run of the sweep (its name, one of `names`) that `p` branches from, or None: `p` is no
    cooldown branch, or its train.branch_from is a path outside the sweep. A bare run name is what
    `cooldowns` writes, and what train reads as the sibling workdir of the branch's own."""
    src = str(p.config.train.branch_from or "")
    return src if src and "/" not in src and os.sep not in src and src in names else None


def branch_depths(planned: list) -> dict:
    """Run name -> 0 for a run that starts on its own, k + 1 for a branch of a run of depth k of the sweep.
    A run that branches from itself, directly or through others, is a SweepError naming them."""
    by_name = {p.name: p for p in planned}
    depth: dict = {}

    def visit(name, path):
        if name in depth:
            return depth[name]
        if name in path:
            raise SweepError("cooldown branches form a cycle (train.branch_from): " + " -> ".join(path + [name]))
        parent = sweep_parent(by_name[name], by_name)
        depth[name] = 0 if parent is None else visit(parent, path + [name]) + 1
        return depth[name]

    for p in planned:
        visit(p.name, [])
    return depth


def families(planned: list) -> list:
    """[(run, [its branches' families])] for every run that starts on its own, in the sweep's order: a
    parent before its branches, the branches of a run in the sweep's order. Without branches, one
    family per run, each run alone."""
    branch_depths(planned)  # refuses cycles
    names = {p.name for p in planned}
    kids: dict = {}
    for p in planned:
        parent = sweep_parent(p, names)
        if parent is not None:
            kids.setdefault(parent, []).append(p)

    def family(p):
        return (p, [family(k) for k in kids.get(p.name, [])])

    return [family(p) for p in planned if sweep_parent(p, names) is None]


def flatten(family) -> list:
    p, kids = family
    return [p] + [q for k in kids for q in flatten(k)]


def ordered(planned: list) -> list:
    """The runs with every branch after the run it branches from (the sweep's order otherwise kept)."""
    return [q for f in families(planned) for q in flatten(f)]


def parent_dir(p: Planned, workdir: str) -> str:
    """The directory a branch reads its parent from, as gpt2jax.train resolves train.branch_from: a bare
    run name is the sibling of the branch's workdir."""
    src = os.path.expanduser(str(p.config.train.branch_from))
    if "://" in src:
        return src
    if os.sep not in src:
        src = os.path.join(os.path.dirname(os.path.abspath(workdir)), src)
    return os.path.abspath(src)


def parent_steps(path: str) -> list | None:
    """The committed checkpoint steps of the run (or checkpoints directory) at `path`, or None when it has
    no checkpoints."""
    from gpt2jax import checkpoint as ckpt_lib

    try:
        directory = ckpt_lib.checkpoint_dir(path)
    except ckpt_lib.CheckpointError:
        return None
    from absl import logging

    level = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    ckpt = ckpt_lib.Checkpointer(None, read_only=True, directory=directory)
    try:
        return list(ckpt.all_steps())
    finally:
        ckpt.manager.close()
        logging.set_verbosity(level)


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


PLACEHOLDER_RE = re.compile(r"<[A-Z_]+>")


def check_placeholders(obj, section: str, fields: Sequence[str]) -> None:
    left = [f"{section}.{f}={getattr(obj, f)!r}" for f in fields if PLACEHOLDER_RE.search(str(getattr(obj, f)))]
    if left:
        raise SweepError("set these launcher settings in the spec's get_sweep() first (they are placeholders): "
                         + ", ".join(left))



def run_cmd(cmd: list, check: bool = True, capture: bool = False):
    print_cmd(cmd)
    try:
        out = subprocess.run(cmd, text=True, capture_output=capture, check=False)
    except FileNotFoundError:
        raise SweepError(f"{cmd[0]}: command not found (install it, or use --dry_run)") from None
    if check and out.returncode != 0:
        raise SweepError(f"command failed (exit code {out.returncode}): {shlex.join(cmd)}"
                         + (f"\n{out.stderr.strip()}" if capture and out.stderr else ""))
    return out

