"""From a spec file to resolved runs: each run's config built exactly as `gpt2jax-train --config=FILE
--config.a.b=v` would build it (the file's `get_config()`, the overrides parsed to each field's type,
`gpt2jax.config.validate`), so a bad override fails before anything starts, naming the run and the field;
and the record (sweep_run.json) of each.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Sequence
from typing import Any

from gpt2jax.errors import SweepError
from gpt2jax.scaling.overrides import apply_overrides, load_config
from gpt2jax.scaling.spec import Run, Sweep

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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


def spec_module(path: str):
    """A spec file loaded as a module. A spec can build on another's helpers with it, by path, so that it
    loads from any directory: `spec_module(os.path.join(os.path.dirname(__file__), "other.py"))`."""
    if not os.path.isfile(path):
        raise SweepError(f"spec {path!r} not found")
    name = "sweep_spec_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except SweepError as e:
        raise SweepError(f"spec {path}: {e}") from None
    except Exception as e:
        raise SweepError(f"spec {path}: cannot be loaded ({type(e).__name__}: {e})") from e
    return module


def load_spec(path: str) -> Sweep:
    """A spec file's Sweep, its runs checked (names unique, letters, digits, '.', '_' or '-')."""
    module = spec_module(path)
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
