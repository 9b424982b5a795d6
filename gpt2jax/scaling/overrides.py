"""Configs as `gpt2jax-train --config=FILE --config.a.b=v` builds them: the file's `get_config()`,
then overrides parsed to each field's type as the command line parses them. A sweep resolves its runs
with these, and study scripts (experiments/step_hlo.py) build a config the same way.
"""

from __future__ import annotations

import os

from gpt2jax import configs
from gpt2jax.errors import SweepError


def resolve_config_path(path: str) -> str:
    """A config path as given if it exists (absolute or relative to the current directory), else the
    shipped config it names (`tiny`, `configs/tiny.py`: gpt2jax/configs/), else as given."""
    return configs.resolve(path)


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
