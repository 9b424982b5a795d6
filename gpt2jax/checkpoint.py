"""Orbax checkpoints: parameters, optimizer state and a JSON record, saved together per step.

Layout: WORKDIR/checkpoints/<step>/{params, opt_state, meta}. `meta` is JSON holding the step, the
full config, the loader position (the next step's index and the data seed: the batch for step s is a
pure function of (seed, s), so this is all the loader needs) and the RNG seed. Orbax writes each step
to a temporary directory and renames it when complete, so only committed checkpoints are listed and
restored; a run killed mid-save leaves a temporary directory that is ignored.

A checkpoint made by `convert` (imported weights) holds params and meta only; `load_params` reads just
the params item, so it accepts both kinds.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from gpt2jax import config as config_lib

PARAMS, OPT_STATE, META = "params", "opt_state", "meta"


class CheckpointError(ValueError):
    """A checkpoint is missing or does not fit what is asked of it."""


def checkpoint_dir(path) -> epath.Path:
    """Accept a run's workdir (holding checkpoints/) or the checkpoints directory itself."""
    p = epath.Path(os.path.expanduser(str(path)))
    if (p / "checkpoints").exists():
        return p / "checkpoints"
    return p


class Checkpointer:
    """Saves and restores training state in WORKDIR/checkpoints."""

    def __init__(self, workdir, *, keep: int = 3, async_save: bool = True, read_only: bool = False):
        self.directory = epath.Path(os.path.expanduser(str(workdir))) / "checkpoints"
        if read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
        else:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=async_save, cleanup_tmp_directories=True
            )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=(PARAMS, OPT_STATE, META)
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, params, opt_state, meta: dict, force: bool = False) -> bool:
        items = {PARAMS: ocp.args.StandardSave(params), META: ocp.args.JsonSave(meta)}
        if opt_state is not None:
            items[OPT_STATE] = ocp.args.StandardSave(opt_state)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def read_meta(self, step: int | None = None) -> dict:
        step = self._step(step)
        return self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]

    def restore(self, step: int | None, abstract_params, abstract_opt_state=None) -> tuple[Any, Any, dict]:
        """Restore onto the shardings in the abstract trees (jax.ShapeDtypeStruct leaves)."""
        step = self._step(step)
        items = {PARAMS: ocp.args.StandardRestore(abstract_params), META: ocp.args.JsonRestore()}
        if abstract_opt_state is not None:
            items[OPT_STATE] = ocp.args.StandardRestore(abstract_opt_state)
        check_shapes(self.read_meta(step), abstract_params, where=str(self.directory / str(step)))
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return out[PARAMS], out.get(OPT_STATE) if abstract_opt_state is not None else None, out[META]

    def _step(self, step):
        if step is None:
            step = self.latest_step()
        if step is None or step not in self.all_steps():
            raise CheckpointError(
                f"no checkpoint{'' if step is None else f' at step {step}'} in {self.directory}"
                f" (available: {self.all_steps() or 'none'})"
            )
        return step

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def param_shapes_meta(params) -> dict:
    """{'a/b/c': [shape]} for every parameter, stored in meta to name mismatches clearly."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): list(x.shape) for path, x in flat}


def check_shapes(meta: dict, abstract_params, where: str) -> None:
    saved = meta.get("param_shapes")
    if not saved:
        return
    want = param_shapes_meta(abstract_params)
    for name, shape in want.items():
        if name not in saved:
            raise CheckpointError(f"{where}: the checkpoint has no parameter {name!r}")
        if list(saved[name]) != list(shape):
            raise CheckpointError(
                f"{where}: parameter {name!r} has shape {tuple(saved[name])} in the checkpoint but the "
                f"model expects {tuple(shape)}: the checkpoint belongs to another model shape"
            )


def make_meta(step: int, config, params, **extra) -> dict:
    return {
        "step": int(step),
        "config": config_lib.to_dict(config),
        "param_shapes": param_shapes_meta(params),
        **extra,
    }


def save_params(workdir, config, params, step: int = 0) -> epath.Path:
    """Write a params-only checkpoint (e.g. converted weights) that `load_params`, `train.init_from`,
    `sample` and `evaluate` accept."""
    ck = Checkpointer(workdir, keep=1, async_save=False)
    ck.save(step, params, None, make_meta(step, config, params), force=True)
    ck.close()
    return ck.directory


def load_config(path, step: int | None = None):
    """The config stored with a checkpoint."""
    ck = Checkpointer(checkpoint_dir(path).parent, read_only=True)
    return config_lib.from_dict(ck.read_meta(step)["config"])


def load_params(path, step: int | None = None, shardings=None, model_config=None):
    """(config, params) from a workdir or checkpoints directory; the latest step by default.
    `shardings` (a tree like the params) places the arrays; default: the first device."""
    from gpt2jax.model import init_params  # local import: model never depends on this module

    cdir = checkpoint_dir(path)
    if not cdir.exists():
        raise CheckpointError(f"no checkpoints directory at {path}")
    ck = Checkpointer(cdir.parent, read_only=True)
    meta = ck.read_meta(step)
    config = config_lib.from_dict(meta["config"])
    mcfg = model_config or config.model
    shapes = jax.eval_shape(lambda k: init_params(mcfg, k), jax.random.PRNGKey(0))
    if shardings is None:
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: dev, shapes)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    params, _, _ = ck.restore(step, abstract)
    return config, params
