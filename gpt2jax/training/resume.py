"""Where a run starts: the checks of a resume (the same experiment, data and model shape, read from the
checkpoints' metas before anything compiles), the restore of the latest intact checkpoint, and cooldown
branches from another run's checkpoint."""

from __future__ import annotations

import json
import os

from gpt2jax import checkpoint as ckpt_lib
from gpt2jax import config as config_lib
from gpt2jax.data import loader
from gpt2jax.model import abstract_params

# Sections whose change would make a resumed run a different experiment.
FROZEN_ON_RESUME = ("model", "optim", "data")
FROZEN_TRAIN_FIELDS = ("batch_size", "seq_len", "seed")
def check_resume_config(saved: dict, config, allowed=(), what: str = "resume") -> None:
    """Refuse to resume when a field of the model, optimizer or data sections (or the batch size,
    sequence length or seed) differs from the checkpoint's config, naming every such field. Other
    fields -- num_steps, logging/eval/checkpoint intervals, the mesh ... -- may change, and so may the
    `allowed` ones ('section.key')."""
    now = config_lib.to_dict(config)
    try:  # fields added to the schema after the checkpoint was written compare at their defaults
        saved = config_lib.to_dict(config_lib.from_dict(saved))
    except config_lib.ConfigError:
        pass
    changed = []
    for section in FROZEN_ON_RESUME:
        for k, v in now[section].items():
            if saved.get(section, {}).get(k) != v and f"{section}.{k}" not in allowed:
                changed.append(f"{section}.{k}: {saved.get(section, {}).get(k)!r} -> {v!r}")
    for k in FROZEN_TRAIN_FIELDS:
        if saved.get("train", {}).get(k) != now["train"][k]:
            changed.append(f"train.{k}: {saved.get('train', {}).get(k)!r} -> {now['train'][k]!r}")
    if changed and what == "resume":
        raise config_lib.ConfigError(
            "cannot resume with a changed experiment (use a new --workdir, or train.init_from to "
            "start from these weights): " + "; ".join(changed)
        )
    if changed:
        raise config_lib.ConfigError(
            f"cannot {what}: a branch may change only {', '.join(BRANCH_MAY_CHANGE)} (and what a resume "
            "may: intervals, the mesh ...), but these differ: " + "; ".join(changed)
        )


# What a cooldown branch may change besides what a resume may (train.num_steps among those).
BRANCH_MAY_CHANGE = ("train.num_steps", "optim.decay_fraction", "optim.decay_shape", "optim.min_lr")


def open_branch(config, data: dict, workdir: str = "."):
    """(parent Checkpointer, step, record) for train.branch_from / train.branch_step, checked from the
    parent's meta before anything compiles: the step exists, the experiment is the same but for
    BRANCH_MAY_CHANGE, and so is the data. The parent is only read (no lock: it may be live)."""
    import hashlib

    t = config.train
    parent_dir = t.branch_from
    if "://" not in parent_dir:  # a local path (a gs:// one is used as it is: the TPU launcher writes those)
        parent_dir = os.path.expanduser(parent_dir)
        if os.sep not in parent_dir:  # a bare run name: a sibling of this workdir (a sweep's parent run)
            parent_dir = os.path.join(os.path.dirname(os.path.abspath(workdir)), parent_dir)
        parent_dir = os.path.abspath(parent_dir)
    try:
        parent = ckpt_lib.Checkpointer(None, read_only=True, directory=ckpt_lib.checkpoint_dir(parent_dir))
    except Exception as e:
        raise ckpt_lib.CheckpointError(f"train.branch_from={t.branch_from}: no checkpoints to branch from ({e})") from e
    steps = parent.all_steps()
    if t.branch_step not in steps:
        raise ckpt_lib.CheckpointError(
            f"train.branch_step={t.branch_step}: {parent.directory} has no checkpoint at that step (it has "
            f"{steps or 'none'}; a parent keeps its branch points with checkpoint.steps)")
    meta = parent.read_meta(t.branch_step)
    check_resume_config(meta["config"], config, allowed=BRANCH_MAY_CHANGE,
                         what=f"branch from {parent.directory}/{t.branch_step}")
    changed = loader.data_changes(meta.get("data"), data)
    if changed:
        raise loader.DataError(f"cannot branch from {parent.directory}/{t.branch_step}: the data differs "
                               f"({'; '.join(changed)})")
    prints = json.dumps(meta.get("fingerprints", {}), sort_keys=True).encode()
    record = {"parent": parent_dir, "step": int(t.branch_step),
              "fingerprint": hashlib.sha256(prints).hexdigest()[:16]}
    return parent, int(t.branch_step), record


def precheck_checkpoints(ckpt, config, data: dict | None = None) -> None:
    """Before anything compiles: the checkpoint a resume will start from (the latest whose meta
    reads) must be of this experiment, this data (`data`: the files' token counts and sha256) and
    this model shape; so must train.init_from's on a fresh start. Raise ConfigError / DataError /
    CheckpointError naming the field, the file or the first mismatched parameter."""
    for step in reversed(ckpt.all_steps()):
        try:
            meta = ckpt.read_meta(step)
            saved = meta["config"]
        except Exception:
            continue  # unreadable: restore_latest reports it and falls back
        check_resume_config(saved, config)
        if data is not None and "data" not in meta:
            print(f"WARNING: checkpoint step {step} predates data hashes: cannot check that the data is "
                  "unchanged; recording them from now on", flush=True)
        changed = loader.data_changes(meta.get("data"), data or {})
        if changed:
            raise loader.DataError(f"cannot resume from {ckpt.directory}/{step}: the data changed since it was "
                                   f"saved ({'; '.join(changed)}). Restore that data, or start a new --workdir")
        ckpt_lib.check_shapes(meta, abstract_params(config.model), where=f"{ckpt.directory}/{step}")
        return
    if not ckpt.all_steps() and config.train.init_from:
        ckpt_lib.check_compatible(config.train.init_from, config.model)


def restore_latest(ckpt, trainer, config):
    """(step, params, opt_state, meta) from the latest committed checkpoint that reads back intact,
    or None when there is none. One that does not (truncated, corrupted, fingerprint mismatch) is
    moved to WORKDIR/corrupt_checkpoints/ with a warning and the one before it is used."""
    bad = []
    for step in reversed(ckpt.all_steps()):
        where = f"{ckpt.directory}/{step}"
        try:
            try:
                saved = ckpt.read_meta(step)["config"]
            except Exception as e:
                raise ckpt_lib.CorruptCheckpointError(f"{where}: cannot read its meta ({type(e).__name__}: {e})") from e
            check_resume_config(saved, config)
            params, opt_state, meta = ckpt.restore(step, trainer.abstract_params, trainer.abstract_opt_state)
        except ckpt_lib.CorruptCheckpointError as e:
            moved = ckpt.quarantine(step)
            print(f"WARNING: checkpoint step {step} is unusable, moved to {moved}: {str(e)[:2000]}", flush=True)
            bad.append(step)
            continue
        if opt_state is None:
            raise ckpt_lib.CheckpointError(f"{where} holds no optimizer state to resume")
        return step, params, opt_state, meta
    if bad:
        raise ckpt_lib.CheckpointError(
            f"no intact checkpoint left in {ckpt.directory}: steps {bad} were unusable and are kept in "
            f"{ckpt.directory.parent / 'corrupt_checkpoints'}; starting again trains from step 0"
        )
    return None
