"""Orbax checkpoints: parameters, optimizer state and a JSON record, saved together per step.

Layout: WORKDIR/checkpoints/<step>/{params, opt_state, meta}. `meta` is JSON holding the step, the
full config, the loader position (the next step's index and the data seed: the batch for step s is a
pure function of (seed, s), so this is all the loader needs) and the RNG seed. Orbax writes each step
to a temporary directory and renames it when complete, so only committed checkpoints are listed and
restored; a run killed mid-save leaves a temporary directory that is ignored (and removed at the next
start).

Orbax does not detect a flipped bit in an array file (it restores the wrong value silently), so `save`
also stores a fingerprint of every array in `meta` -- a position-weighted sum of its bits modulo 2**32,
computed on device and independent of the sharding -- and `restore` checks it: a corrupted file is a
`CorruptCheckpointError` naming the array, never silently wrong weights.

A checkpoint made by `convert` (imported weights) holds params and meta only; `load_params` reads just
the params item, so it accepts both kinds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation
from etils import epath

from gpt2jax import config as config_lib
from gpt2jax.errors import CheckpointError, CorruptCheckpointError

PARAMS, OPT_STATE, META = "params", "opt_state", "meta"


def _path(path) -> epath.Path:
    """A local path made absolute (Orbax requires it), or a URL such as gs://... as it is."""
    path = str(path)
    if "://" in path:
        return epath.Path(path)
    return epath.Path(os.path.abspath(os.path.expanduser(path)))


def _has_steps(p: epath.Path) -> bool:
    """Whether `p` holds committed step directories (named by their step; Orbax's unfinished ones
    carry a suffix)."""
    try:
        return any(c.name.isdigit() and c.is_dir() for c in p.iterdir())
    except (FileNotFoundError, NotADirectoryError, OSError):
        return False


def checkpoint_dir(path) -> epath.Path:
    """The checkpoints directory of what the user gave: `path` itself if it holds committed step
    directories, otherwise `path`/checkpoints, which must exist. Nothing else is tried (no parent
    directories): a CheckpointError names `path`."""
    p = _path(path)
    if _has_steps(p):
        return p
    if (p / "checkpoints").is_dir():
        return p / "checkpoints"
    if not p.exists():
        raise CheckpointError(f"{path} does not exist")
    raise CheckpointError(
        f"no checkpoints in {path}: it holds neither checkpoint step directories nor a checkpoints/ directory "
        "(give a run's --workdir or its checkpoints directory)"
    )


def _disk_full(e: BaseException) -> bool:
    """Whether an error (or one it wraps) is ENOSPC, however the storage layer reported it."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(e) or "ENOSPC" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


_READER_TRIES = 5  # a reader of a live run retries this often when the writer removes the step it read


class Checkpointer:
    """Saves and restores training state in WORKDIR/checkpoints."""

    def __init__(
        self, workdir, *, keep: int = 3, keep_every: int = 0, async_save: bool = True, read_only: bool = False,
        directory=None, keep_steps=(),
    ):
        # `directory`: a checkpoints directory of any name (what `checkpoint_dir` found) instead of
        # WORKDIR/checkpoints.
        self.directory = _path(directory) if directory is not None else _path(workdir) / "checkpoints"
        if read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
        else:
            # The latest `keep`, plus every step divisible by `keep_every` (when > 0).
            policies = [preservation.LatestN(n=keep)]
            if keep_every:
                policies.append(preservation.EveryNSteps(interval_steps=keep_every))
            if keep_steps:  # checkpoint.steps: e.g. where cooldown branches start
                policies.append(preservation.CustomSteps(steps=[int(s) for s in keep_steps]))
            options = ocp.CheckpointManagerOptions(
                preservation_policy=preservation.AnyPreservationPolicy(policies),
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
            )
        for attempt in range(_READER_TRIES if read_only else 1):
            try:
                self.manager = ocp.CheckpointManager(
                    self.directory, options=options, item_names=(PARAMS, OPT_STATE, META)
                )
                break
            except FileNotFoundError:
                # A reader of a live run lists the step directories while the writer's clean-up removes
                # one (only `keep` are kept): list them again.
                if attempt == _READER_TRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, params, opt_state, meta: dict, force: bool = False) -> bool:
        meta = {**meta, "fingerprints": {PARAMS: fingerprint(params)}}
        if opt_state is not None:
            meta["fingerprints"][OPT_STATE] = fingerprint(opt_state)
        items = {PARAMS: ocp.args.StandardSave(params), META: ocp.args.JsonSave(meta)}
        if opt_state is not None:
            items[OPT_STATE] = ocp.args.StandardSave(opt_state)
        with self._disk_full_named(step):
            return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def _intact_steps(self) -> list[int]:
        try:
            self.manager.reload()
        except Exception:
            pass
        return [s for s in self.all_steps() if (self.directory / str(s)).exists()]

    @contextlib.contextmanager
    def _disk_full_named(self, step=None):
        """Turn a full disk during a save (raised by the save itself, or later while waiting for an
        asynchronous one) into one CheckpointError naming the last intact checkpoint."""
        try:
            yield
        except Exception as e:
            if not _disk_full(e):
                raise
            steps = self._intact_steps()
            last = f"step {steps[-1]} ({self.directory / str(steps[-1])})" if steps else "none"
            what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
            raise CheckpointError(
                f"disk full (no space left on device) while saving {what} to {self.directory}; "
                f"the last intact checkpoint is {last}. Free space and start again to resume from it"
            ) from e

    def read_meta(self, step: int | None = None) -> dict:
        step = self._step(step)
        return self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]

    def restore(self, step: int | None, abstract_params, abstract_opt_state=None) -> tuple[Any, Any, dict]:
        """Restore onto the shardings in the abstract trees (jax.ShapeDtypeStruct leaves)."""
        step = self._step(step)
        items = {PARAMS: ocp.args.StandardRestore(abstract_params), META: ocp.args.JsonRestore()}
        if abstract_opt_state is not None:
            items[OPT_STATE] = ocp.args.StandardRestore(abstract_opt_state)
        where = str(self.directory / str(step))
        try:
            meta = self.read_meta(step)
        except Exception as e:
            raise CorruptCheckpointError(f"{where}: cannot read its meta item ({type(e).__name__}: {e})") from e
        check_shapes(meta, abstract_params, where=where)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:
            raise CorruptCheckpointError(f"{where}: cannot be restored ({type(e).__name__}: {e})") from e
        opt_state = out.get(OPT_STATE) if abstract_opt_state is not None else None
        saved = meta.get("fingerprints") or {}
        for name, tree in ((PARAMS, out[PARAMS]), (OPT_STATE, opt_state)):
            if tree is not None and name in saved:
                verify_fingerprint(tree, saved[name], where=f"{where}/{name}")
        return out[PARAMS], opt_state, out[META]

    def reached_preemption(self, step: int) -> bool:
        """True on every process at the same step once JAX's preemption service has seen a SIGTERM
        (multi-process runs only; Orbax's sync point)."""
        return self.manager.reached_preemption(step)

    def quarantine(self, step: int) -> str:
        """Move a bad committed step out of the way (to WORKDIR/corrupt_checkpoints/) so that the
        step can be written again; nothing is deleted. Returns the new path."""
        dest_dir = self.directory.parent / "corrupt_checkpoints"
        dest = dest_dir / f"{step}.{int(time.time())}"
        if jax.process_index() == 0:
            dest_dir.mkdir(parents=True, exist_ok=True)
            (self.directory / str(step)).rename(dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"gpt2jax_quarantine_{step}")
        self.manager.reload()
        return str(dest)

    def pinned(self, step: int | None, read):
        """`read(step)` on the given step, or on the latest one. A reader of a live run can lose the
        latest step to the writer's clean-up (only `keep` are kept) between listing and reading it; then
        the new latest is read instead. A failure on a step that is still there and still the latest raises."""
        if step is not None:
            return read(self._step(step))
        for attempt in range(_READER_TRIES):
            s = None
            try:
                s = self._step(None)
                return read(s)
            except Exception:
                if attempt == _READER_TRIES - 1:
                    raise
                try:  # listing the steps again can itself meet a step being removed
                    self.manager.reload()
                except FileNotFoundError:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if s is not None and (self.directory / str(s)).exists() and self.latest_step() == s:
                    raise

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
        with self._disk_full_named():
            self.manager.wait_until_finished()

    def close(self):
        with self._disk_full_named():
            self.manager.wait_until_finished()
        # Orbax's manager starts a background clean-up of unfinished saves when it opens, and its close()
        # does not wait for it: a start that fails right away and removes the directories it made would
        # race that thread (an Orbax traceback after our error line). Wait for it here.
        wait_cleanup = getattr(self.manager, "_maybe_await_cleanup_tmp_directory", None)
        if wait_cleanup is not None:
            try:
                wait_cleanup()
            except Exception:  # a failed clean-up of leftovers is not this run's error
                pass
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


def _leaf_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


@jax.jit
def _fingerprints(leaves):
    out = []
    for x in leaves:
        if x.dtype == jnp.bool_:
            x = x.astype(jnp.uint8)
        bits = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[x.dtype.itemsize]
        u = jax.lax.bitcast_convert_type(x, bits)
        if x.dtype.itemsize == 8:  # fold the high word in
            u = (u ^ (u >> 32)).astype(jnp.uint32)
        u = u.astype(jnp.uint32).reshape(-1)
        # Odd weights: any single flipped bit changes the sum mod 2**32; positions catch swaps.
        w = jax.lax.iota(jnp.uint32, u.shape[0]) * jnp.uint32(2654435761) | jnp.uint32(1)
        out.append(jnp.sum(u * w, dtype=jnp.uint32))
    return jnp.stack(out) if out else jnp.zeros((0,), jnp.uint32)


def fingerprint(tree) -> list[int]:
    """One uint32 per array of `tree` (in leaf order): the same on any mesh or device count."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return []
    out = _fingerprints(leaves)
    if not out.is_fully_addressable:
        out = out.addressable_shards[0].data
    return [int(v) for v in np.asarray(out)]


def verify_fingerprint(tree, expected: list[int], where: str) -> None:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    got = fingerprint([x for _, x in flat])
    if len(got) != len(expected):
        raise CorruptCheckpointError(f"{where}: {len(got)} arrays restored but {len(expected)} were saved")
    for (path, _), g, e in zip(flat, got, expected):
        if g != e:
            raise CorruptCheckpointError(
                f"{where}: array {_leaf_name(path)!r} does not match the fingerprint saved with it "
                "(a corrupted file?)"
            )


def check_compatible(path, model_config, step: int | None = None) -> None:
    """Raise CheckpointError naming the first parameter of the checkpoint at `path` whose shape does
    not fit `model_config` -- from its meta alone, without compiling or reading arrays."""
    from gpt2jax.model import abstract_params

    with _reader(path) as ck:
        step = ck._step(step)
        check_shapes(ck.read_meta(step), abstract_params(model_config), where=str(ck.directory / str(step)))


@contextlib.contextmanager
def _reader(path):
    """A read-only Checkpointer of `path` (checkpoint_dir's rules), closed however the reading ends."""
    ck = Checkpointer(None, read_only=True, directory=checkpoint_dir(path))
    try:
        yield ck
    finally:
        try:
            ck.manager.close()
        except Exception:
            pass


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
    try:
        ck.save(step, params, None, make_meta(step, config, params), force=True)
    except BaseException:
        try:
            ck.manager.close()
        except Exception:
            pass
        raise
    ck.close()
    return ck.directory


def load_config(path, step: int | None = None):
    """The config stored with a checkpoint."""
    with _reader(path) as ck:
        return config_lib.from_dict(ck.pinned(step, ck.read_meta)["config"])


def load_params(path, step: int | None = None, shardings=None, model_config=None):
    """(config, params) from a workdir or checkpoints directory; the latest step by default.
    `shardings` (a tree like the params) places the arrays; default: the first device."""
    from gpt2jax.model import abstract_params  # local import: model never depends on this module

    def read(step):
        config = config_lib.from_dict(ck.read_meta(step)["config"])
        shapes = abstract_params(model_config or config.model)
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        placed = shardings if shardings is not None else jax.tree.map(lambda _: dev, shapes)
        abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, placed)
        return config, ck.restore(step, abstract)[0]

    with _reader(path) as ck:
        return ck.pinned(step, read)
