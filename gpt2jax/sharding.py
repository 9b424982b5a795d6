"""Device mesh, logical-axis rules and the shardings of parameters, optimizer state and batches.

The mesh has three named axes: `data` (pure data parallel: parameters replicated), `fsdp` (data
parallel with parameters and optimizer state sharded along `embed`) and `tensor` (heads / mlp /
vocab split across devices). Sizes come from `config.mesh`; one of them may be -1, meaning the rest of
the devices. Parameters name their axes logically (gpt2jax/model.py `param_axes`); `config.mesh.rules`
maps logical names to mesh axes. Nothing here hard-codes a device count.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from gpt2jax.config import ConfigError
from gpt2jax.model import param_axes, param_shapes

AXES = ("data", "fsdp", "tensor")


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
    sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ConfigError(
                f"config.mesh: {dict(zip(AXES, sizes))} cannot fill {num_devices} devices "
                f"({num_devices} is not divisible by {known})"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ConfigError(
            f"config.mesh: data*fsdp*tensor = {math.prod(sizes)} but there are {num_devices} devices"
        )
    return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
    devices = list(jax.devices()) if devices is None else list(devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    # Auto axes: shardings are given at jit boundaries and propagated by XLA (the pjit model).
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def rules(config) -> tuple:
    return tuple((k, v) for k, v in config.mesh.rules)


def _mesh_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    if isinstance(axes, str):
        axes = (axes,)
    return math.prod(mesh.shape[a] for a in axes)


def logical_specs(model_cfg):
    """PartitionSpecs of logical names for every parameter."""
    return jax.tree.map(lambda names: P(*names), param_axes(model_cfg), is_leaf=lambda x: isinstance(x, tuple))


def param_shardings(config, mesh: Mesh):
    """NamedShardings for every parameter, checking that each sharded dimension divides evenly."""
    r = rules(config)
    specs = logical_specs(config.model)
    shapes = param_shapes(config.model)
    rule_map = dict(r)

    def check(spec, shape, path):
        for name, dim in zip(spec, shape):
            axes = rule_map.get(name) if name else None
            n = _mesh_size(mesh, axes)
            if dim % n:
                raise ConfigError(
                    f"config.mesh: parameter {path} dimension '{name}' of size {dim} is not divisible by "
                    f"mesh axes {axes} of size {n}"
                )

    flat_specs = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[0]
    flat_shapes = jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple))
    for (path, spec), shape in zip(flat_specs, flat_shapes):
        check(spec, shape, "/".join(str(getattr(k, "key", k)) for k in path))
    return nn.logical_to_mesh_sharding(specs, mesh, r)


def batch_spec(config) -> P:
    axes = dict(rules(config)).get("batch")
    return P(axes, None)


def batch_sharding(config, mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, batch_spec(config))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch(config, mesh: Mesh) -> None:
    """The global batch (and each micro-batch) must split evenly over the batch mesh axes."""
    n = _mesh_size(mesh, dict(rules(config)).get("batch"))
    micro = config.train.batch_size // config.optim.accum_steps
    if micro % n:
        raise ConfigError(
            f"config.train.batch_size: {config.train.batch_size} / optim.accum_steps "
            f"{config.optim.accum_steps} = {micro} sequences per micro-batch is not divisible by the "
            f"{n} data-parallel devices of the mesh"
        )
