"""The SLURM launcher: one job array for the sweep (array index -> run), written to ROOT/sweep.sbatch and
submitted with sbatch (--dry_run prints the file and the command, and runs nothing).

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


def launch_slurm(planned: list, slurm: Slurm, root: str, name: str, dry_run: bool) -> int:
    jobs = slurm_jobs(planned, slurm, root, name)
    if len(jobs) == 1:  # no branches: one array, submitted as it is
        path, text = jobs[0]
        if dry_run:
            print(f"# {path} would be:\n{text}")
            print_cmd(["sbatch", path])
            return 0
        check_placeholders(slurm, "slurm", ("partition", "repo_dir", "data_dir", "account"))
        _write(path, text)
        run_cmd(["sbatch", path])
        return 0

    def submit_cmd(i, prev):
        return ["sbatch", "--parsable"] + ([f"--dependency=afterok:{prev}"] if i else []) + [jobs[i][0]]

    if dry_run:
        for path, text in jobs:
            print(f"# {path} would be:\n{text}")
        print("# the cooldown branches wait for the runs they branch from: each array after the first is "
              "submitted with --dependency=afterok:<JOB_ID_i>, the job id the sbatch before it prints")
        for i in range(len(jobs)):  # as text: the placeholder unquoted
            print_cmd(" ".join(shlex.quote(a) if "<JOB_ID_" not in a else a for a in submit_cmd(i, f"<JOB_ID_{i - 1}>")))
        return 0
    check_placeholders(slurm, "slurm", ("partition", "repo_dir", "data_dir", "account"))
    for path, text in jobs:
        _write(path, text)
    prev = None
    for i, (path, _) in enumerate(jobs):
        prev = parse_job_id(run_cmd(submit_cmd(i, prev), capture=True).stdout)
        print(f"submitted {path}: job {prev}" + (" (after the job before it succeeds)" if i else ""), flush=True)
    return 0


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    print(f"wrote {path}")
