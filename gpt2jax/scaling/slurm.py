"""The SLURM launcher: one job array for the sweep (array index -> run), written to ROOT/sweep.sbatch and
submitted with sbatch (--dry_run prints the file and the command, and runs nothing).
"""

from __future__ import annotations

import os
import shlex

from gpt2jax.scaling.launch import check_placeholders, print_cmd, run_cmd, train_args
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


def launch_slurm(planned: list, slurm: Slurm, root: str, name: str, dry_run: bool) -> int:
    path = os.path.join(os.path.abspath(root), "sweep.sbatch")
    text = sbatch_script(planned, slurm, root, name)
    if dry_run:
        print(f"# {path} would be:\n{text}")
        print_cmd(["sbatch", path])
        return 0
    check_placeholders(slurm, "slurm", ("partition", "repo_dir", "data_dir", "account"))
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    print(f"wrote {path}")
    run_cmd(["sbatch", path])
    return 0
