"""Starting JAX's multi-process runtime: one process per host (or per GPU), all in one program.

    from gpt2jax import distributed
    distributed.initialize()            # before anything touches jax devices

Explicit settings win: the arguments (the train CLI's --coordinator_address, --num_processes,
--process_id) or the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID. Otherwise the cluster is detected the way `jax.distributed.initialize()` detects it:
a Cloud TPU VM slice (GCE or GKE), a SLURM job step with several tasks (srun) or an Open MPI launch
(mpirun) with several ranks. A single process with none of these is left alone (nothing to
initialize). CPU collectives across processes use gloo (only the CPU backend reads this setting).
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)

# jax cluster environments we start automatically: clusters that launch one program per host.
# (K8sCluster is left out: an ordinary single-process pod would otherwise try to rendezvous.)
_AUTO_CLUSTERS = ("GceTpuCluster", "GkeTpuCluster", "SlurmCluster", "OmpiCluster")
_COUNTED = ("SlurmCluster", "OmpiCluster")  # started only when they report more than one process


def is_initialized() -> bool:
    try:
        from jax._src import distributed as _d

        return _d.global_state.client is not None
    except Exception:  # pragma: no cover - private API moved
        return False


def detect_cluster() -> str | None:
    """The name of the multi-process cluster this process runs in, or None."""
    try:
        from jax._src import clusters
    except Exception:  # pragma: no cover - private API moved: only explicit settings then
        return None
    for env in clusters.ClusterEnv._cluster_types:
        name = env.__name__
        if name not in _AUTO_CLUSTERS:
            continue
        try:
            if not env.is_env_present():
                continue
            if name in _COUNTED and env.get_process_count() <= 1:
                continue
        except Exception as e:  # a half-configured environment: not a cluster we can join
            log.debug("cluster %s not usable: %s", name, e)
            continue
        return name
    return None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Start jax.distributed if this is one of several processes. Returns True when it did (or it
    already was). Must run before the first use of jax devices."""
    if is_initialized():
        return True
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    explicit = coordinator_address is not None or num_processes is not None or process_id is not None
    if explicit:
        if num_processes == 1 and not coordinator_address:
            return False
        missing = [
            n for n, v in (("coordinator_address", coordinator_address), ("num_processes", num_processes),
                           ("process_id", process_id)) if v is None
        ]
        cluster = detect_cluster()
        if missing and cluster is None:
            raise ValueError(
                f"multi-process run: set all of --coordinator_address, --num_processes and "
                f"--process_id (missing: {', '.join(missing)}), or launch under a TPU slice, SLURM or mpirun"
            )
    else:
        cluster = detect_cluster()
        if cluster is None:
            return False
    _use_gloo_on_cpu()
    log.info("jax.distributed.initialize (%s)", cluster or coordinator_address)
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    return True


def _use_gloo_on_cpu() -> None:
    """Cross-process collectives for the CPU backend (ignored by GPU and TPU backends)."""
    try:
        if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError:  # pragma: no cover - option renamed
        pass


def describe() -> str:
    return (
        f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} local of "
        f"{jax.device_count()} devices ({jax.devices()[0].platform})"
    )
