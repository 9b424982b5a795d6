"""Where evaluation runs: parameters and [batch, length] request batches on the devices.

Two layouts:
  * 'data' -- every device holds the whole model, batches are split over all devices (the default of
    `python -m gpt2jax.evaluate`: right for GPT-2 sizes, which fit on one device);
  * 'run'  -- the run's own `config.mesh` and `config.mesh.rules`, as in training: parameters sharded
    over fsdp/tensor as the trainer shards them, batches over the mesh's batch axes. For models that
    do not fit on one device, or to evaluate with exactly the training layout.

Either way the batch size is rounded up to a multiple of the devices a batch is split over.
"""

from __future__ import annotations

import jax

LAYOUTS = ("data", "run")


def _round_up(n: int, k: int) -> int:
    return -(-int(n) // k) * k


def data_parallel(params, batch_size: int):
    """With several devices: the params replicated, batches split over all devices (one 'data' axis)."""
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    devices = jax.devices()
    if len(devices) == 1:
        return params, None, batch_size
    mesh = Mesh(np.array(devices), ("data",))
    params = jax.device_put(params, NamedSharding(mesh, P()))
    return params, NamedSharding(mesh, P("data")), _round_up(batch_size, len(devices))


def place(config, params, batch_size: int, layout: str = "data"):
    """(params placed, batch sharding or None, batch size) for evaluation under `layout`.
    `config` is the run's full config (its mesh section is used with layout='run')."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: one of {LAYOUTS}")
    if layout == "data":
        return data_parallel(params, batch_size)
    from gpt2jax import sharding as shd

    mesh = shd.make_mesh(config.mesh)
    params = jax.device_put(params, shd.param_shardings(config, mesh))
    batch = shd.batch_sharding(config, mesh)
    return params, batch, _round_up(batch_size, _batch_devices(batch))


def train_batch_sharding(trainer, batch_size: int):
    """(batch sharding, batch size) for zero-shot tasks inside training: the trainer's own batch
    sharding over its mesh, the batch size rounded up to the devices it splits a batch over."""
    sharding = trainer.batch_sharding
    return sharding, _round_up(batch_size, _batch_devices(sharding))


def _batch_devices(sharding) -> int:
    """Into how many row blocks a NamedSharding splits the batch (first) axis."""
    axes = sharding.spec[0] if len(sharding.spec) else None
    if axes is None:
        return 1
    n = 1
    for a in (axes,) if isinstance(axes, str) else tuple(axes):
        n *= sharding.mesh.shape[a]
    return n


def run_config(workdir=None, hf=None, step=None):
    """The full config of what `gpt2jax.evaluate` loads (its mesh section, for layout='run'): the one
    stored with the checkpoint, or the schema's defaults around an HF model's shapes."""
    if workdir:
        from gpt2jax.checkpoint import load_config

        return load_config(workdir, step)
    import json
    from pathlib import Path

    from gpt2jax.convert import config_from_hf

    return config_from_hf(json.loads((Path(hf) / "config.json").read_text()))
