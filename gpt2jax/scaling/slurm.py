"""The SLURM launcher: one job array for the sweep (array index -> run), written to ROOT/sweep.sbatch and
submitted with `sbatch --parsable` (--dry_run prints the file and the command, and runs nothing). Each
submission is recorded in ROOT/slurm_jobs.json (job id, sbatch file, array index -> run name), which
`--status` reads to ask squeue (and sacct, where the cluster keeps accounting) what each run's task is
doing; a sweep whose jobs squeue still lists is not submitted again.

Stopping: the trainer saves and exits on SIGTERM. scancel and preemption send SIGTERM to the job's
processes and SIGKILL the cluster's KillWait seconds later (30 s by default); the sbatch file asks for
SIGTERM Slurm.signal_grace_s (120 s) before the time limit (`#SBATCH --signal=TERM@120`). Submitting the
same sweep again resumes every run from its last checkpoint (a finished run exits at once).

Cooldown branches (runs whose train.branch_from names another run of the sweep, as `cooldowns` builds)
go into a second job array, ROOT/sweep-branches.sbatch, submitted with
`sbatch --dependency=afterok:<the first array's job id>` (read from `sbatch --parsable`), so that no
branch starts before every parent has finished well (a failed parent holds the branches; resubmit after
fixing it: finished runs are skipped by train itself, which resumes from its checkpoints). Branches of
branches make a third array after the second, and so on.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time

from gpt2jax.errors import SweepError
from gpt2jax.scaling.launch import branch_depths, check_placeholders, print_cmd, run_cmd, train_args
from gpt2jax.scaling.spec import Slurm


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
    ]
    if slurm.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={slurm.gpus_per_node}")
    lines += [
        f"#SBATCH --cpus-per-task={slurm.cpus_per_task}",
        f"#SBATCH --time={slurm.time}",
        f"#SBATCH --output={root}/slurm-%A_%a.out",
    ]
    if slurm.signal_grace_s:  # the trainer saves on SIGTERM; this sends it before the time limit's SIGKILL
        lines.append(f"#SBATCH --signal=TERM@{slurm.signal_grace_s}")
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


def slurm_jobs(planned: list, slurm: Slurm, root: str, name: str) -> list:
    """[(sbatch file, its text)], one job array per depth of cooldown branching: ROOT/sweep.sbatch for the
    runs that start on their own (every run of a sweep without branches), ROOT/sweep-branches.sbatch for
    the branches of those, ROOT/sweep-branches-2.sbatch for branches of branches. Each array after the
    first is submitted to wait for the one before it (afterok)."""
    root = os.path.abspath(root)
    depth = branch_depths(planned)
    jobs = []
    for k in range(max(depth.values()) + 1):
        runs = [p for p in planned if depth[p.name] == k]
        suffix = "" if k == 0 else "-branches" if k == 1 else f"-branches-{k}"
        jobs.append((os.path.join(root, f"sweep{suffix}.sbatch"), sbatch_script(runs, slurm, root, name + suffix)))
    return jobs


def parse_job_id(stdout: str) -> str:
    """The job id in `sbatch --parsable`'s output ('<id>' or '<id>;<cluster>')."""
    first = next((ln.strip() for ln in (stdout or "").splitlines() if ln.strip()), "")
    job = first.split(";")[0].strip()
    if not re.fullmatch(r"\d+", job):
        raise SweepError(f"sbatch --parsable printed {stdout.strip()!r}, not a job id: cannot make the cooldown "
                         "branches wait for their parents")
    return job


def launch_slurm(planned: list, slurm: Slurm, root: str, name: str, dry_run: bool, spec: str = "SPEC") -> int:
    jobs = slurm_jobs(planned, slurm, root, name)
    depth = branch_depths(planned)

    def submit_cmd(i, prev):
        return ["sbatch", "--parsable"] + ([f"--dependency=afterok:{prev}"] if i else []) + [jobs[i][0]]

    if dry_run:
        for path, text in jobs:
            print(f"# {path} would be:\n{text}")
        if len(jobs) > 1:
            print("# the cooldown branches wait for the runs they branch from: each array after the first is "
                  "submitted with --dependency=afterok:<JOB_ID_i>, the job id the sbatch before it prints")
        for i in range(len(jobs)):  # as text: the placeholder unquoted
            print_cmd(" ".join(shlex.quote(a) if "<JOB_ID_" not in a else a for a in submit_cmd(i, f"<JOB_ID_{i - 1}>")))
        return 0
    check_placeholders(slurm, "slurm", ("partition", "repo_dir", "data_dir", "account"))
    active = active_jobs(root)
    if active:
        raise SweepError(f"jobs of this sweep are still queued or running: {', '.join(active)} (squeue); a second "
                         "submission would start the same runs twice. Wait for them, or scancel them (the runs "
                         "save on SIGTERM) and submit again")
    for path, text in jobs:
        _write(path, text)
    prev, ids = None, []
    for i, (path, _) in enumerate(jobs):
        prev = parse_job_id(run_cmd(submit_cmd(i, prev), capture=True).stdout)
        ids.append(prev)
        names = [p.name for p in planned if depth[p.name] == i]
        _record_job(root, prev, path, names)
        print(f"submitted {path}: job {prev}, array tasks 0-{len(names) - 1} = {', '.join(names)}"
              + (" (after the job before it succeeds)" if i else ""), flush=True)
    print(f"follow it with  squeue --array --jobs={','.join(ids)}  or  gpt2jax-sweep {spec} --root={root} "
          "--launcher=slurm --status", flush=True)
    return 0


# -- what the scheduler says --------------------------------------------------------------------
JOBS_FILE = "slurm_jobs.json"


def read_jobs(root: str) -> list:
    """The submissions of this root, oldest first: [{"job", "sbatch", "runs" (array index -> name)}]."""
    import json

    path = os.path.join(root, JOBS_FILE)
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            jobs = json.load(f)
        assert isinstance(jobs, list) and all({"job", "runs"} <= set(j) for j in jobs)
        return jobs
    except (OSError, ValueError, AssertionError):
        raise SweepError(f"{path} is not a list of SLURM submissions written by gpt2jax-sweep; move it away "
                         "(squeue still lists the jobs)") from None


def _record_job(root: str, job: str, sbatch: str, names: list) -> None:
    from gpt2jax.fileio import write_json_atomic

    jobs = read_jobs(root) + [{"job": job, "sbatch": sbatch, "runs": names,
                               "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    write_json_atomic(os.path.join(root, JOBS_FILE), jobs)


def _query(cmd: list) -> str:
    """A query's output; '' when the command is missing or fails (sacct without accounting, a job id
    squeue no longer knows)."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout if r.returncode == 0 else ""


def _task_states(jobs: list) -> dict:
    """'<job>_<index>' -> state, from sacct (finished tasks, where the cluster keeps accounting) and then
    squeue (queued and running ones, one line per array task)."""
    ids = ",".join(str(j["job"]) for j in jobs)
    states = {}
    for line in _query(["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={ids}",
                        "--format=JobID,State"]).splitlines():
        task, _, state = line.partition("|")
        if "_" in task and "[" not in task:
            states[task.strip()] = state.split()[0] if state.split() else state
    for line in _query(["squeue", "--noheader", "--array", "--states=all", f"--jobs={ids}",
                        "--format=%i %T"]).splitlines():
        parts = line.split()
        if len(parts) == 2 and "[" not in parts[0]:
            states[parts[0]] = parts[1]
    return states


def active_jobs(root: str) -> list:
    """The array tasks of this root's submissions that squeue still lists, as '<job>_<index>'."""
    jobs = read_jobs(root)
    if not jobs:
        return []
    ids = ",".join(str(j["job"]) for j in jobs)
    out = _query(["squeue", "--noheader", "--array", f"--jobs={ids}", "--format=%i"])
    return [ln.strip() for ln in out.splitlines() if ln.strip()]


def scheduler_states(root: str) -> dict:
    """Run name -> what SLURM says of its latest array task ('PENDING', 'RUNNING', 'COMPLETED', ... with
    the job id), for the runs this root submitted; runs the scheduler no longer knows are left out."""
    jobs = read_jobs(root)
    if not jobs:
        return {}
    states = _task_states(jobs)
    out = {}
    for j in jobs:  # later submissions win
        for i, name in enumerate(j["runs"]):
            task = f"{j['job']}_{i}"
            if task in states:
                out[name] = f"{states[task]} ({task})"
    return out


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    print(f"wrote {path}")
