"""The TPU launcher: Cloud TPU VM slices through gcloud queued resources.

`gpt2jax-sweep SPEC --launcher=tpu --action=launch` creates (or reuses) one queued-resource slice per group
of runs, installs the project on all its workers and starts the runs there (`--worker=all`, nohup), data
and checkpoints in buckets; --action=status|tail|fetch|delete follow, copy back (run.json, metrics.jsonl,
train.log into ROOT/<name>/) and delete the slices. Every command is printed before it runs; --dry_run
prints them and runs none.

Cooldown branches (runs whose train.branch_from names another run of the sweep, as `cooldowns` builds)
run on their parent's slice after it: `parent && ( branch1 ; branch2 )`, so a branch starts only once its
parent has finished well, and the branches of one parent run whatever became of each other. Their
train.branch_from is rewritten from the bare parent name to where the parent's checkpoints are,
<checkpoint_bucket>/<parent> (each run's checkpoint.dir), since the parent's workdir on the slice holds
none. A slice (`slices` = 0) is named after the family's first run; with `slices` = k, whole families
are dealt round-robin over the k slices.
"""

from __future__ import annotations

import os
import re
import shlex
import time

from gpt2jax.errors import SweepError
from gpt2jax.scaling.launch import check_placeholders, families, flatten, print_cmd, run_cmd, sweep_parent, train_args
from gpt2jax.scaling.resolve import Planned
from gpt2jax.scaling.spec import TPU


def tpu_families(planned: list, tpu: TPU) -> list:
    """[(slice name, [families])] (a family: a run and its cooldown branches, launch.families): one slice
    per family named `<name_prefix>-<first run's name>` (lower case, other characters as '-', as Cloud TPU
    names must be), or with tpu.slices = k the families dealt round-robin over k slices `<name_prefix>-<i>`.
    Without branches every family is one run."""
    fams = families(planned)
    if not tpu.slices:
        return [(re.sub(r"[^a-z0-9-]", "-", f"{tpu.name_prefix}-{f[0].name}".lower()), [f]) for f in fams]
    groups = [[] for _ in range(min(tpu.slices, len(fams)))]
    for i, f in enumerate(fams):
        groups[i % len(groups)].append(f)
    return [(f"{tpu.name_prefix}-{i}", g) for i, g in enumerate(groups)]


def tpu_slices(planned: list, tpu: TPU) -> list:
    """[(slice name, [planned runs in the order they run there])]."""
    return [(sl, [p for f in fams for p in flatten(f)]) for sl, fams in tpu_families(planned, tpu)]


def _gcloud_where(tpu: TPU) -> list:
    return [f"--zone={tpu.zone}", f"--project={tpu.project}"]


def _install_command(tpu: TPU) -> str:
    if tpu.install:
        return tpu.install
    d, url, rev = tpu.remote_dir, tpu.repo_url, shlex.quote(tpu.revision)
    return (f"if [ -d {d}/.git ]; then cd {d} && git fetch -q origin && git checkout -q {rev}; "
            f"else git clone -q {shlex.quote(url)} {d} && cd {d} && git checkout -q {rev}; fi && "
            f"python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu,gcs]'")


def _checkpoint_dir(tpu: TPU, name: str) -> str:
    return f"{tpu.checkpoint_bucket.rstrip('/')}/{name}"


def _tpu_run_command(p: Planned, tpu: TPU, names=()) -> str:
    wd = f"runs/{p.name}"
    extra = {"checkpoint.dir": _checkpoint_dir(tpu, p.name)}
    if tpu.data_dir:
        extra = {"data.dir": tpu.data_dir, **extra}
    parent = sweep_parent(p, names)
    if parent is not None:  # the parent's checkpoints are in the bucket, not in runs/<parent> on the slice
        extra["train.branch_from"] = _checkpoint_dir(tpu, parent)
    args = train_args(p, wd, extra=extra)
    return f"mkdir -p {wd} && .venv/bin/python {shlex.join(args)} > {wd}/train.log 2>&1"


def _family_chain(family, tpu: TPU, names) -> str:
    """`run && ( branch ; branch )`: the branches after their parent, and only when it succeeded."""
    p, kids = family
    cmd = _tpu_run_command(p, tpu, names)
    if not kids:
        return cmd
    return f"{cmd} && ( {' ; '.join(_family_chain(k, tpu, names) for k in kids)} )"


def _describe(family) -> str:
    p, kids = family
    if not kids:
        return p.name
    return f"{p.name}, then after it {', '.join(_describe(k) for k in kids)}"


def tpu_commands(planned: list, tpu: TPU, action: str, root: str) -> list:
    """The gcloud commands of an action, as argument lists. For 'launch', a ('wait', slice) entry
    marks where the launcher polls the queued resource until it is ACTIVE."""
    cmds = []
    where = _gcloud_where(tpu)
    names = {p.name for p in planned}
    for sl, fams in tpu_families(planned, tpu):
        runs = [p for f in fams for p in flatten(f)]
        ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", sl, *where]
        if action == "launch":
            accel = tpu.accelerator_type
            if len(fams) == 1:  # a one-family slice: the type given for its first run (a parent's shape)
                accel = tpu.accelerator_types.get(fams[0][0].name, accel)
            create = ["gcloud", "compute", "tpus", "queued-resources", "create", sl, f"--node-id={sl}", *where,
                      f"--accelerator-type={accel}", f"--runtime-version={tpu.runtime_version}"]
            if tpu.spot:
                create.append("--spot")
            create += list(tpu.extra_create_args)
            cmds.append(("create_if_missing", sl, create))
            cmds.append(("wait", sl, ["gcloud", "compute", "tpus", "queued-resources", "describe", sl, *where,
                                      "--format=value(state.state)"]))
            cmds.append(("run", sl, ssh + ["--worker=all", f"--command={_install_command(tpu)}"]))
            if len(runs) > len(fams):
                cmds.append(("note", sl, f"{sl} runs, in order: " + "; ".join(_describe(f) for f in fams)
                             + " (a branch starts when the run it branches from has succeeded)"))
            chain = " ; ".join(_family_chain(f, tpu, names) for f in fams)
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



def launch_tpu(planned: list, tpu: TPU, action: str, root: str, dry_run: bool,
               poll_seconds: float = 30.0, timeout_seconds: float = 6 * 3600) -> int:
    cmds = tpu_commands(planned, tpu, action, root)
    if not dry_run:
        needed = ("project", "zone")
        if action == "launch":
            needed += ("data_dir", "checkpoint_bucket") + (() if tpu.install else ("repo_url",))
        check_placeholders(tpu, "tpu", needed)
    if action == "fetch" and not dry_run:
        for p in planned:
            os.makedirs(os.path.join(root, p.name), exist_ok=True)
    for kind, sl, cmd in cmds:
        if kind == "note":
            print(f"# {cmd}", flush=True)
            continue
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
            if run_cmd(probe, check=False, capture=True).returncode == 0:
                print(f"{sl}: exists, reused")
                continue
            run_cmd(cmd)
        elif kind == "wait":
            t0 = time.time()
            while True:
                state = run_cmd(cmd, capture=True).stdout.strip()
                print(f"{sl}: {state}", flush=True)
                if state == "ACTIVE":
                    break
                if state in ("FAILED", "SUSPENDED"):
                    raise SweepError(f"TPU slice {sl} is {state}; see `gcloud compute tpus queued-resources describe {sl}`")
                if time.time() - t0 > timeout_seconds:
                    raise SweepError(f"TPU slice {sl} not ACTIVE after {timeout_seconds:.0f} s (state {state})")
                time.sleep(poll_seconds)
        else:
            run_cmd(cmd, check=action not in ("status", "tail", "fetch"))
    return 0
