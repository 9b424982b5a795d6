"""Device mesh, logical-axis rules and the shardings of parameters, optimizer state and batches.

The mesh has three named axes: `data` (pure data parallel: parameters replicated), `fsdp` (data
parallel with parameters and optimizer state sharded along `embed`) and `tensor` (heads / mlp /
vocab split across devices). Sizes come from `config.mesh`; one of them may be -1, meaning the rest of
the devices. Parameters name their axes logically (gpt2jax/model.py `param_axes`); `config.mesh.rules`
maps logical names to mesh axes. Nothing here hard-codes a device count.
"""

from __future__ import annotations

import contextlib
import math

import flax.linen as nn
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from gpt2jax.config import ConfigError
from gpt2jax.model import ModelConfig, param_axes, param_shapes

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


LOGICAL_AXES = ("batch", "seq", "embed", "heads", "head_dim", "mlp", "vocab", "layers")


def rules(config) -> tuple:
    """config.mesh.rules as a tuple, each name checked (a misspelt one would silently not shard)."""
    out = []
    for rule in config.mesh.rules:
        if len(rule) != 2:
            raise ConfigError(f"config.mesh.rules: {rule!r} is not a (logical axis, mesh axes) pair")
        name, axes = rule
        if name not in LOGICAL_AXES:
            raise ConfigError(f"config.mesh.rules: unknown logical axis {name!r} (one of {LOGICAL_AXES})")
        for a in (axes,) if isinstance(axes, str) or axes is None else axes:
            if a is not None and a not in AXES:
                raise ConfigError(f"config.mesh.rules: {name!r} -> unknown mesh axis {a!r} (one of {AXES})")
        out.append((name, tuple(axes) if isinstance(axes, list) else axes))
    return tuple(out)


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
    r, m = rules(config), ModelConfig.of(config.model)
    specs = logical_specs(m)
    shapes = param_shapes(m)

    def check(spec, shape, path):
        # The mesh axes flax actually assigns (rules in order; a mesh axis used by an earlier
        # dimension is not reused), so the check matches the sharding that is built.
        mesh_axes = nn.logical_to_mesh_axes(tuple(spec), r)
        for name, dim, axes in zip(spec, shape, mesh_axes):
            n = _mesh_size(mesh, axes)
            if dim % n:
                raise ConfigError(
                    f"config.mesh: parameter {path} dimension '{name}' of size {dim} is not divisible by "
                    f"mesh axes {axes} of size {n} (change config.mesh sizes or config.mesh.rules)"
                )

    flat_specs = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[0]
    flat_shapes = jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple))
    for (path, spec), shape in zip(flat_specs, flat_shapes):
        check(spec, shape, "/".join(str(getattr(k, "key", k)) for k in path))
    return nn.logical_to_mesh_sharding(specs, mesh, r)


@contextlib.contextmanager
def activation_context(config, mesh: Mesh):
    """Inside a jitted function: lets the model's logical activation constraints
    (`flax.linen.with_logical_constraint`, e.g. x_BTD as ('batch', 'seq', 'embed')) resolve through
    config.mesh.rules onto `mesh`. Outside this context those constraints are no-ops, so the model
    itself knows nothing about meshes."""
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules(config)):
        yield


def opt_state_shardings(opt_shapes, abstract_params, param_sharding, mesh: Mesh):
    """The optimizer state's shardings: a leaf whose key path ends in a parameter's path, with that parameter's
    shape (Adam's moments, Muon's momentum, wherever optax nests them: partitions, masks, chains), takes the
    parameter's sharding; everything else (step counts, Newton-Schulz coefficients) is replicated. (The
    shardings XLA propagates to init's outputs would not do: zeros_like does not depend on the parameters'
    values, so the moments came back replicated -- a full copy per device.)"""
    shardings = jax.tree_util.tree_leaves(param_sharding)
    by_path = {
        tuple(k.key for k in path): (tuple(p.shape), sh)
        for (path, p), sh in zip(jax.tree_util.tree_flatten_with_path(abstract_params)[0], shardings)
    }
    depth = max(len(p) for p in by_path)
    rep = replicated(mesh)

    def pick(path, leaf):
        names = []
        for k in reversed(path):
            if not isinstance(k, jax.tree_util.DictKey) or len(names) == depth:
                break
            names.insert(0, k.key)
        for i in range(len(names)):  # the longest trailing run of dict keys that names a parameter
            shape, sh = by_path.get(tuple(names[i:]), (None, None))
            if shape == tuple(leaf.shape):
                return sh
        return rep

    return jax.tree_util.tree_map_with_path(pick, opt_shapes)


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


def process_batch_slice(sharding: NamedSharding, global_shape, devices=None) -> tuple[int, int]:
    """(index, count) such that this process must supply rows [index * n, (index + 1) * n) of the
    global batch, n = global_batch // count: the rows its devices hold under `sharding`. With the
    batch split over processes this is usually (process_index, process_count); when a process's
    devices hold replicated batch rows (e.g. a tensor axis spanning hosts) it loads more. Feed it to
    gpt2jax.data.loader.train_batch / eval_batch as (process_index, process_count). `devices`:
    the process's devices (default: this process's, i.e. the addressable ones)."""
    B = global_shape[0]
    index_map = sharding.devices_indices_map(tuple(global_shape))
    if devices is None:
        devices = [d for d in index_map if d.process_index == jax.process_index()]
    rows = sorted(
        {(index_map[d][0].start or 0, B if index_map[d][0].stop is None else index_map[d][0].stop)
         for d in devices}
    )
    start, stop = rows[0][0], rows[-1][1]
    covered = start
    for a, b in rows:
        if a > covered:
            raise ConfigError(
                f"config.mesh: process {jax.process_index()} holds non-contiguous rows {rows} of the "
                f"global batch; order the mesh so each host's devices hold one block of the batch"
            )
        covered = max(covered, b)
    n = stop - start
    if B % n or start % n:
        raise ConfigError(f"config.mesh: process rows [{start}, {stop}) do not tile the batch of {B}")
    return start // n, B // n
