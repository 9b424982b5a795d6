"""Memory planner: will a config fit, per device, on a given mesh? Nothing is allocated.

    python -m gpt2jax.plan --config=configs/gpt2_1558m.py --config.mesh.data=1 --config.mesh.fsdp=-1
    python -m gpt2jax.plan --config=configs/gpt2_1558m.py --devices=64 --config.mesh.fsdp=-1  # a pod
                                                                           # simulated on this CPU

It builds the Trainer for the config (validation, mesh, shardings: a dimension its mesh axes do not
divide is reported here, before anything compiles), then compiles the train step ahead of time on
abstract inputs -- `jax.jit(...).lower(ShapeDtypeStructs carrying shardings).compile()` -- and prints,
per device:

  * parameter and optimizer-state bytes, exact, from the shardings (shard shape x dtype size);
  * argument / temporary / peak bytes as XLA's buffer assignment estimates them for the backend the
    planner runs on (labelled with it: CPU estimates differ from GPU/TPU ones, which fuse, lay out
    and rematerialise differently, so plan on the target kind where you can);
  * FLOPs per step: XLA's cost analysis of the per-device program, and the analytic
    6 N + 12 L D T per token of gpt2jax.metrics times the tokens per step.

`--devices=N` simulates N CPU devices (XLA's host-platform device count), so a pod-sized mesh can be
planned from a laptop; device memory is then unknown unless `--device_memory_gib` says it.
"""

from __future__ import annotations

import math
import os
import time

GiB = 1024**3


def shard_bytes(tree) -> int:
    """Bytes one device holds of a tree of arrays / ShapeDtypeStructs carrying shardings (evenly
    divided shardings: every device holds one shard of the same shape)."""
    import jax

    total = 0
    for x in jax.tree.leaves(tree):
        total += math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
    return total


def full_bytes(tree) -> int:
    import jax

    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def abstract_batch(trainer):
    import jax
    import jax.numpy as jnp

    c = trainer.config
    batch = jax.ShapeDtypeStruct(
        (c.train.batch_size, trainer.seq_len + 1), jnp.int32, sharding=trainer.batch_sharding
    )
    step = jax.ShapeDtypeStruct((), jnp.int32, sharding=trainer.replicated)
    return batch, step


def _device_memory_bytes():
    import jax

    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:
        stats = {}
    return stats.get("bytes_limit")


def plan(config, mesh=None, *, compile: bool = True, device_memory_gib: float = 0.0) -> dict:
    """The plan as a dict (see `format_plan`). compile=False gives only the exact byte counts."""

    from gpt2jax import config as config_lib
    from gpt2jax import metrics
    from gpt2jax.model import count_params
    from gpt2jax.train import Trainer

    t0 = time.perf_counter()
    trainer = Trainer(config, mesh)
    m = trainer.mesh
    dev = m.devices.flat[0]
    T, B = trainer.seq_len, config.train.batch_size
    n_dev = m.devices.size
    out = {
        "backend": dev.platform,
        "device_kind": dev.device_kind,
        "num_devices": int(n_dev),
        "mesh": {k: int(v) for k, v in m.shape.items()},
        "batch_size": B,
        "seq_len": T,
        "accum_steps": config.optim.accum_steps,
        "micro_batch_per_device": B // config.optim.accum_steps
        // math.prod(m.shape[a] for a in _batch_axes(config)),
        "scan_layers": bool(config.model.scan_layers),
        "remat": config.model.remat,
        "params": count_params(trainer.abstract_params, config.model),
        "param_bytes_total": full_bytes(trainer.abstract_params),
        "param_bytes_per_device": shard_bytes(trainer.abstract_params),
        "opt_bytes_total": full_bytes(trainer.abstract_opt_state),
        "opt_bytes_per_device": shard_bytes(trainer.abstract_opt_state),
    }
    fpt = metrics.flops_per_token(config.model, config_lib.seq_len(config))
    out["flops_analytic_per_step"] = fpt * B * T
    out["flops_analytic_per_device"] = fpt * B * T / n_dev
    limit = device_memory_gib * GiB if device_memory_gib else (
        _device_memory_bytes() if dev.platform != "cpu" else None
    )
    out["device_memory_bytes"] = int(limit) if limit else None
    if compile:
        t1 = time.perf_counter()
        compiled = trainer.train_step.lower(
            trainer.abstract_params, trainer.abstract_opt_state, *abstract_batch(trainer)
        ).compile()
        out["compile_seconds"] = time.perf_counter() - t1
        mem = compiled.memory_analysis()
        if mem is not None:
            xla = {
                k: int(getattr(mem, k + "_size_in_bytes", 0) or 0)
                for k in ("argument", "output", "alias", "temp", "generated_code")
            }
            # Donated parameters/optimizer state are aliased to the outputs: live once.
            xla["total"] = xla["argument"] + xla["output"] - xla["alias"] + xla["temp"]
            # XLA's own peak field where the backend fills it in (on CPU it has been seen to count
            # only the arguments); the plan's peak is the larger of it and the total above.
            peak = int(getattr(mem, "peak_memory_in_bytes", 0) or 0)
            xla["peak_field"] = peak
            xla["peak"] = max(peak, xla["total"])
            out["xla_memory_per_device"] = xla
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else None
        if cost and "flops" in cost:
            out["flops_xla_per_device"] = float(cost["flops"])
    out["seconds"] = time.perf_counter() - t0
    return out


def _batch_axes(config):
    axes = dict(tuple((k, v) for k, v in config.mesh.rules)).get("batch")
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def _gib(n) -> str:
    return f"{n / GiB:8.3f} GiB"


def format_plan(p: dict) -> str:
    mesh = " x ".join(f"{k}={v}" for k, v in p["mesh"].items())
    lines = [
        f"mesh {mesh} ({p['num_devices']} x {p['device_kind']}, backend {p['backend']})",
        f"model {p['params'] / 1e6:,.1f}M parameters; scan_layers={p['scan_layers']} remat={p['remat']}",
        f"step: batch {p['batch_size']} x seq {p['seq_len']} in {p['accum_steps']} micro-batch(es); "
        f"{p['micro_batch_per_device']} sequence(s) per device per micro-batch",
        "",
        "per device (exact, from the shardings):",
        f"  parameters        {_gib(p['param_bytes_per_device'])}   (of {_gib(p['param_bytes_total']).strip()} total)",
        f"  optimizer state   {_gib(p['opt_bytes_per_device'])}   (of {_gib(p['opt_bytes_total']).strip()} total)",
        f"  params + opt      {_gib(p['param_bytes_per_device'] + p['opt_bytes_per_device'])}",
    ]
    x = p.get("xla_memory_per_device")
    if x:
        lines += [
            "",
            f"per device, as XLA estimates it for backend '{p['backend']}' (other backends differ):",
            f"  arguments         {_gib(x['argument'])}   (params, optimizer state, batch)",
            f"  outputs           {_gib(x['output'])}   ({_gib(x['alias']).strip()} aliased to donated arguments)",
            f"  temporaries       {_gib(x['temp'])}   (activations, gradients, collectives' buffers)",
            f"  peak              {_gib(x['peak'])}   (arguments + temporaries + unaliased outputs"
            + (f"; XLA's peak field {_gib(x['peak_field']).strip()}" if x["peak_field"] else "") + ")",
        ]
        if p.get("device_memory_bytes"):
            lim = p["device_memory_bytes"]
            verdict = "fits" if x["peak"] <= lim else "does NOT fit"
            lines.append(f"  device memory     {_gib(lim)}   -> {verdict} ({100 * x['peak'] / lim:.0f}%)")
    lines += [
        "",
        "FLOPs per step:",
        f"  analytic (6N + 12LDT per token)   {p['flops_analytic_per_step']:.4g} total, "
        f"{p['flops_analytic_per_device']:.4g} per device",
    ]
    if "flops_xla_per_device" in p:
        lines.append(
            f"  XLA cost analysis ({p['backend']})     {p['flops_xla_per_device']:.4g} per device "
            f"({p['flops_xla_per_device'] / p['flops_analytic_per_device']:.3g}x analytic)"
        )
        loops = [f"{n} accumulation steps" for n in [p["accum_steps"]] if n > 1]
        if p["scan_layers"]:
            loops.insert(0, "the layer scan")
        if loops:
            lines.append(
                "    (XLA counts a while-loop body once: " + " and ".join(loops)
                + " are not multiplied out here; the analytic figure is the one to budget with)"
            )
    if "compile_seconds" in p:
        lines.append(f"\ncompiled the train step ahead of time in {p['compile_seconds']:.1f}s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
def define_flags(fv) -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py).", flag_values=fv, lock_config=True)
    flags.DEFINE_integer("devices", 0, "Simulate this many CPU devices (0: the devices present).", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_float("device_memory_gib", 0.0, "Per-device memory to check the plan against "
                       "(0: what the accelerator reports; unknown on CPU).", flag_values=fv)
    flags.DEFINE_boolean("compile", True, "Compile the step for XLA's memory and FLOPs estimates "
                         "(--nocompile: only the exact parameter/optimizer bytes).", flag_values=fv)
    flags.DEFINE_string("json", "", "Also write the plan as JSON to this path.", flag_values=fv)
    flags.mark_flags_as_required(["config"], flag_values=fv)


def main(argv, fv):
    if len(argv) > 1:
        from absl import app

        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if fv.devices:
        # Before the first use of jax devices: N simulated host devices, CPU only.
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={fv.devices}"
        ).strip()
        import jax

        jax.config.update("jax_platforms", "cpu")
    else:
        from gpt2jax import distributed

        # On a multi-host slice every worker runs the planner and they join into one mesh.
        distributed.initialize()
    from gpt2jax.fileio import write_json_atomic

    # A config that cannot run on this mesh is a ConfigError naming why (no traceback: gpt2jax.cli).
    p = plan(fv.config, compile=fv.compile, device_memory_gib=fv.device_memory_gib)
    print(format_plan(p), flush=True)
    if fv.json:
        write_json_atomic(fv.json, p)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
