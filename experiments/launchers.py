"""The remote launchers of experiments/sweep.py: TPU VM slices (gcloud queued resources) and SLURM
job arrays. `python -m experiments.sweep SPEC --launcher=tpu|slurm` calls them; every external
command is printed before it runs, and --dry_run prints them and runs none (see sweep.py's docstring).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Sequence

from experiments.sweep import TPU, Planned, Slurm, SweepError, print_cmd, train_args

# ---------------------------------------------------------------------------------------------
# tpu
# ---------------------------------------------------------------------------------------------
PLACEHOLDER_RE = re.compile(r"<[A-Z_]+>")


def _check_placeholders(obj, section: str, fields: Sequence[str]) -> None:
    left = [f"{section}.{f}={getattr(obj, f)!r}" for f in fields if PLACEHOLDER_RE.search(str(getattr(obj, f)))]
    if left:
        raise SweepError("set these launcher settings in the spec's get_sweep() first (they are placeholders): "
                         + ", ".join(left))


def tpu_slices(planned: list, tpu: TPU) -> list:
    """[(slice name, [planned runs])]: one slice per run named `<name_prefix>-<run name>` (lower
    case, other characters as '-', as Cloud TPU names must be), or with tpu.slices = k the runs dealt
    round-robin over k slices `<name_prefix>-<i>`."""
    if not tpu.slices:
        return [(re.sub(r"[^a-z0-9-]", "-", f"{tpu.name_prefix}-{p.name}".lower()), [p]) for p in planned]
    groups = [[] for _ in range(min(tpu.slices, len(planned)))]
    for i, p in enumerate(planned):
        groups[i % len(groups)].append(p)
    return [(f"{tpu.name_prefix}-{i}", g) for i, g in enumerate(groups)]


def _gcloud_where(tpu: TPU) -> list:
    return [f"--zone={tpu.zone}", f"--project={tpu.project}"]


def _install_command(tpu: TPU) -> str:
    if tpu.install:
        return tpu.install
    d, url, rev = tpu.remote_dir, tpu.repo_url, shlex.quote(tpu.revision)
    return (f"if [ -d {d}/.git ]; then cd {d} && git fetch -q origin && git checkout -q {rev}; "
            f"else git clone -q {shlex.quote(url)} {d} && cd {d} && git checkout -q {rev}; fi && "
            f"python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu,gcs]'")


def _tpu_run_command(p: Planned, tpu: TPU) -> str:
    wd = f"runs/{p.name}"
    extra = {"checkpoint.dir": f"{tpu.checkpoint_bucket.rstrip('/')}/{p.name}"}
    if tpu.data_dir:
        extra = {"data.dir": tpu.data_dir, **extra}
    args = train_args(p, wd, extra=extra)
    return f"mkdir -p {wd} && .venv/bin/python {shlex.join(args)} > {wd}/train.log 2>&1"


def tpu_commands(planned: list, tpu: TPU, action: str, root: str) -> list:
    """The gcloud commands of an action, as argument lists. For 'launch', a ('wait', slice) entry
    marks where the launcher polls the queued resource until it is ACTIVE."""
    cmds = []
    where = _gcloud_where(tpu)
    for sl, runs in tpu_slices(planned, tpu):
        ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", sl, *where]
        if action == "launch":
            accel = tpu.accelerator_type
            if len(runs) == 1:
                accel = tpu.accelerator_types.get(runs[0].name, accel)
            create = ["gcloud", "compute", "tpus", "queued-resources", "create", sl, f"--node-id={sl}", *where,
                      f"--accelerator-type={accel}", f"--runtime-version={tpu.runtime_version}"]
            if tpu.spot:
                create.append("--spot")
            create += list(tpu.extra_create_args)
            cmds.append(("create_if_missing", sl, create))
            cmds.append(("wait", sl, ["gcloud", "compute", "tpus", "queued-resources", "describe", sl, *where,
                                      "--format=value(state.state)"]))
            cmds.append(("run", sl, ssh + ["--worker=all", f"--command={_install_command(tpu)}"]))
            chain = " ; ".join(_tpu_run_command(p, tpu) for p in runs)
            start = f"cd {tpu.remote_dir} && nohup bash -c {shlex.quote(chain)} > /dev/null 2>&1 &"
            cmds.append(("run", sl, ssh + ["--worker=all", f"--command={start}"]))
        elif action == "status":
            cmds.append(("run", sl, ["gcloud", "compute", "tpus", "queued-resources", "describe", sl, *where,
                                     "--format=value(state.state)"]))
            tails = " ; ".join(f"echo {p.name}: $(tail -c 300 runs/{p.name}/train.log 2>/dev/null | tr '\\r' '\\n' | tail -n 1)"
                               for p in runs)
            cmds.append(("run", sl, ssh + ["--worker=0", f"--command=cd {tpu.remote_dir} && {tails}"]))
        elif action == "tail":
            for p in runs:
                cmds.append(("run", sl, ssh + ["--worker=0",
                                               f"--command=tail -n 40 {tpu.remote_dir}/runs/{p.name}/train.log"]))
        elif action == "fetch":
            for p in runs:
                files = [f"{sl}:{tpu.remote_dir}/runs/{p.name}/{f}" for f in ("run.json", "metrics.jsonl", "train.log")]
                cmds.append(("run", sl, ["gcloud", "compute", "tpus", "tpu-vm", "scp", *files,
                                         os.path.join(root, p.name) + "/", *where, "--worker=0"]))
        elif action == "delete":
            cmds.append(("run", sl, ["gcloud", "compute", "tpus", "queued-resources", "delete", sl, *where,
                                     "--force", "--quiet", "--async"]))
        else:
            raise SweepError(f"--action={action!r}: one of launch, status, tail, fetch, delete")
    return cmds


def _run_cmd(cmd: list, check: bool = True, capture: bool = False):
    print_cmd(cmd)
    try:
        out = subprocess.run(cmd, text=True, capture_output=capture, check=False)
    except FileNotFoundError:
        raise SweepError(f"{cmd[0]}: command not found (install it, or use --dry_run)") from None
    if check and out.returncode != 0:
        raise SweepError(f"command failed (exit code {out.returncode}): {shlex.join(cmd)}"
                         + (f"\n{out.stderr.strip()}" if capture and out.stderr else ""))
    return out


def launch_tpu(planned: list, tpu: TPU, action: str, root: str, dry_run: bool,
               poll_seconds: float = 30.0, timeout_seconds: float = 6 * 3600) -> int:
    cmds = tpu_commands(planned, tpu, action, root)
    if not dry_run:
        needed = ("project", "zone")
        if action == "launch":
            needed += ("data_dir", "checkpoint_bucket") + (() if tpu.install else ("repo_url",))
        _check_placeholders(tpu, "tpu", needed)
    if action == "fetch" and not dry_run:
        for p in planned:
            os.makedirs(os.path.join(root, p.name), exist_ok=True)
    for kind, sl, cmd in cmds:
        if dry_run:
            if kind == "create_if_missing":
                print(f"# {sl}: created unless it exists (checked with: "
                      f"gcloud compute tpus queued-resources describe {sl} ...)")
            elif kind == "wait":
                print(f"# {sl}: poll until ACTIVE:")
            print_cmd(cmd)
            continue
        if kind == "create_if_missing":
            probe = ["gcloud", "compute", "tpus", "queued-resources", "describe", sl, *_gcloud_where(tpu),
                     "--format=value(state.state)"]
            if _run_cmd(probe, check=False, capture=True).returncode == 0:
                print(f"{sl}: exists, reused")
                continue
            _run_cmd(cmd)
        elif kind == "wait":
            t0 = time.time()
            while True:
                state = _run_cmd(cmd, capture=True).stdout.strip()
                print(f"{sl}: {state}", flush=True)
                if state == "ACTIVE":
                    break
                if state in ("FAILED", "SUSPENDED"):
                    raise SweepError(f"TPU slice {sl} is {state}; see `gcloud compute tpus queued-resources describe {sl}`")
                if time.time() - t0 > timeout_seconds:
                    raise SweepError(f"TPU slice {sl} not ACTIVE after {timeout_seconds:.0f} s (state {state})")
                time.sleep(poll_seconds)
        else:
            _run_cmd(cmd, check=action not in ("status", "tail", "fetch"))
    return 0


# ---------------------------------------------------------------------------------------------
# slurm
# ---------------------------------------------------------------------------------------------
def sbatch_script(planned: list, slurm: Slurm, root: str, name: str) -> str:
    root = os.path.abspath(root)
    n = len(planned)
    array = f"0-{n - 1}" + (f"%{slurm.max_parallel}" if slurm.max_parallel else "")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --array={array}",
        f"#SBATCH --partition={slurm.partition}",
    ]
    if slurm.account:
        lines.append(f"#SBATCH --account={slurm.account}")
    lines += [
        f"#SBATCH --nodes={slurm.nodes}",
        f"#SBATCH --ntasks-per-node={slurm.ntasks_per_node}",
        f"#SBATCH --gpus-per-node={slurm.gpus_per_node}",
        f"#SBATCH --cpus-per-task={slurm.cpus_per_task}",
        f"#SBATCH --time={slurm.time}",
        f"#SBATCH --output={root}/slurm-%A_%a.out",
    ]
    lines += [f"#SBATCH {opt}" for opt in slurm.extra_sbatch]
    lines += [
        "# One array task per run; each writes into ROOT/<name>/ and resumes from its checkpoints there.",
        "set -euo pipefail",
        f"cd {shlex.quote(slurm.repo_dir)}",
    ]
    if slurm.setup:
        lines.append(slurm.setup)
    lines.append('case "$SLURM_ARRAY_TASK_ID" in')
    extra = {"data.dir": slurm.data_dir} if slurm.data_dir else None
    for i, p in enumerate(planned):
        wd = os.path.join(root, p.name)
        args = train_args(p, wd, extra=extra)
        lines.append(f"  {i}) NAME={shlex.quote(p.name)}; ARGS=({shlex.join(args)}) ;;")
    lines += [
        '  *) echo "no run for array index $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;',
        "esac",
        f'mkdir -p {shlex.quote(root)}/"$NAME"',
        f'srun --kill-on-bad-exit=1 python "${{ARGS[@]}}" >> {shlex.quote(root)}/"$NAME"/train.log 2>&1',
        "",
    ]
    return "\n".join(lines)


def launch_slurm(planned: list, slurm: Slurm, root: str, name: str, dry_run: bool) -> int:
    path = os.path.join(os.path.abspath(root), "sweep.sbatch")
    text = sbatch_script(planned, slurm, root, name)
    if dry_run:
        print(f"# {path} would be:\n{text}")
        print_cmd(["sbatch", path])
        return 0
    _check_placeholders(slurm, "slurm", ("partition", "repo_dir", "data_dir", "account"))
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    print(f"wrote {path}")
    _run_cmd(["sbatch", path])
    return 0
