"""The shipped configs: one `get_config()` file per model size and the small CPU ones.

A tool's `--config` takes a path or a shipped config's name: `--config=tiny`, `--config=gpt2_124m`
(`configs/NAME.py`, the path inside a checkout, names the same file from any directory).
"""

from __future__ import annotations

import os

DIR = os.path.dirname(os.path.abspath(__file__))


def names() -> list[str]:
    """The shipped configs' names (their file names without .py)."""
    return sorted(f[:-3] for f in os.listdir(DIR) if f.endswith(".py") and not f.startswith("_"))


def resolve(value: str) -> str:
    """A --config value as the file to load: an existing path as given, else the shipped config it
    names (`tiny`, `tiny.py` or `configs/tiny.py`), else unchanged (the caller reports it missing).
    A `:ARGS` suffix (ml_collections' argument to get_config) is kept."""
    path, sep, args = value.partition(":")
    if not path or os.path.isfile(path):
        return value
    name = path.removeprefix("configs/").removesuffix(".py")
    if name in names():
        return os.path.join(DIR, f"{name}.py") + sep + args
    return value
