"""What every launcher shares: the records written before the runs start (ROOT/sweep.json and
ROOT/<name>/sweep_run.json, read by gpt2jax-analyze), each run's `gpt2jax.train` command line, and where
a run stands (its latest committed checkpoint). Every external command is printed before it runs.
"""

from __future__ import annotations

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

