"""The SLURM launcher on a real one-node cluster (tests/slurm_cluster.py): a sweep submitted as a job array
with its cooldown branch in a second array after it (--dependency=afterok) trains the same losses as the
local launcher, bit for bit; scancel makes a run save (SIGTERM, then SIGKILL KillWait seconds later), and the
same sweep submitted again resumes it; analyze collects the runs. Skipped where SLURM is not installed
(apt-get install slurmctld slurmd slurm-client munge), unless GPT2JAX_REQUIRE_SLURM=1 (.ci/run sets it)."""

import json
import os
import sys
import time

import pytest

from gpt2jax import sweep as sweep_cli
from gpt2jax.errors import SweepError
from gpt2jax.scaling import slurm
from slurm_cluster import INSTALL, OneNodeCluster, missing_binaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SLURM_SETTINGS = (f"Slurm(partition='debug', nodes=1, ntasks_per_node=1, gpus_per_node=0, cpus_per_task=1, "
                  f"time='00:10:00', repo_dir={ROOT!r}, setup={'export PATH=' + os.path.dirname(sys.executable) + ':$PATH'!r})")

# A cooldown parent and a plain run in the first array, the parent's branch in the second.
SPEC = f"""from gpt2jax.scaling import *

def get_sweep():
    runs = cooldowns("cd", "configs/tiny.py", [(1, 32)], tokens={{(1, 32): [4 * 32 * 10]}}, seq_len=32,
                     batch_size=lambda shape, Ds: 4, n_head=lambda shape: 2, lr=lambda shape, Ds: 1e-3,
                     warmup=lambda shape, steps: 1, overrides={{"train.eval_batches": 1, "train.log_every": 1}})
    runs.append(Run("t", "configs/tiny.py", {{"train.num_steps": 4, "train.eval_batches": 1, "train.log_every": 1}}))
    return Sweep(runs=runs, slurm={SLURM_SETTINGS}, name="cd")
"""
PARENT, BRANCH = "cd-L1-D32-stable", "cd-T1e03-L1-D32"

LONG = f"""from gpt2jax.scaling import *

def get_sweep():
    return Sweep(runs=[Run("long", "configs/tiny.py", {{"train.num_steps": 100000, "checkpoint.every": 0,
                                                       "train.eval_every": 0, "train.log_every": 1,
                                                       "train.eval_batches": 1}})],
                 slurm={SLURM_SETTINGS}, name="long")
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        why = f"SLURM is not installed here (missing {', '.join(missing)}; {INSTALL})"
        if os.environ.get("GPT2JAX_REQUIRE_SLURM") == "1":
            pytest.fail(why + ", and GPT2JAX_REQUIRE_SLURM=1")
        pytest.skip(why)
    with OneNodeCluster(str(tmp_path_factory.mktemp("slurm"))) as c:
        yield c


@pytest.fixture
def env(cluster, monkeypatch, xla_cache):
    monkeypatch.setenv("SLURM_CONF", cluster.conf)  # for sbatch, squeue and the jobs (sbatch exports it)
    monkeypatch.setenv("XLA_FLAGS", "")  # the runs: one CPU device
    return cluster


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("xla")


def _losses(run_dir) -> list:
    rows = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl")).read().splitlines() if x.strip()]
    return [(r["step"], r.get("loss"), r.get("val_loss")) for r in rows]


def _spec(tmp_path, text, name):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_slurm_sweep_equals_the_local_one(tmp_path, env, shakespeare_dir, xla_cache, capsys):
    spec = _spec(tmp_path, SPEC, "spec.py")
    common = [f"data.dir={shakespeare_dir}", f"train.compile_cache={xla_cache}"]
    root = tmp_path / "slurm"
    assert sweep_cli.run_sweep(spec, str(root), "slurm", sets=common, progress=False) == 0
    out = capsys.readouterr().out
    jobs = slurm.read_jobs(str(root))
    assert [j["runs"] for j in jobs] == [[PARENT, "t"], [BRANCH]]
    first, second = (j["job"] for j in jobs)
    assert f"submitted {root / 'sweep.sbatch'}: job {first}, array tasks 0-1 = {PARENT}, t" in out
    # The branch waits for the first array: pending on its dependency while the parent trains.
    squeue = env.run("squeue", "--noheader", f"--jobs={second}", "--format=%T %E").stdout.split()
    assert squeue[0] == "PENDING" and squeue[1].startswith(f"afterok:{first}"), squeue
    states = slurm.scheduler_states(str(root))
    assert states[BRANCH] == f"PENDING ({second}_0)" and states[PARENT].split()[0] in ("PENDING", "RUNNING")
    with pytest.raises(SweepError, match="still queued or running"):  # no second copy while it runs
        sweep_cli.run_sweep(spec, str(root), "slurm", sets=common, progress=False)
    capsys.readouterr()
    assert sweep_cli.run_sweep(spec, str(root), "slurm", sets=common, status=True, as_json=True) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[BRANCH]["scheduler"] == f"PENDING ({second}_0)" and rows[BRANCH]["detail"].startswith("queued")
    assert rows[BRANCH]["state"] == "not started"

    local = tmp_path / "local"  # the same spec on this machine, while the cluster trains
    assert sweep_cli.run_sweep(spec, str(local), "local", sets=common, progress=False) == 0
    env.wait_idle()
    for name in (PARENT, "t", BRANCH):
        got, want = _losses(root / name), _losses(local / name)
        assert got == want and len(got) >= 2, (name, got, want)
    for task in (f"{first}_0", f"{first}_1", f"{second}_0"):
        assert (root / f"slurm-{task}.out").exists()
    capsys.readouterr()
    assert sweep_cli.run_sweep(spec, str(root), "slurm", sets=common, status=True, as_json=True) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["state"], r["scheduler"].split()[0]) for r in rows] == [("finished", "COMPLETED")] * 3

    from gpt2jax.scaling import table  # what gpt2jax-analyze --root reads

    runs = {r["name"]: r for r in table.collect(str(root))}
    assert set(runs) == {PARENT, "t", BRANCH}
    assert runs[BRANCH]["loss"] == pytest.approx(_losses(local / BRANCH)[-1][2], rel=1e-6)


def test_scancel_saves_and_resubmitting_resumes(tmp_path, env, shakespeare_dir, xla_cache, capsys):
    spec = _spec(tmp_path, LONG, "long.py")
    common = [f"data.dir={shakespeare_dir}", f"train.compile_cache={xla_cache}"]
    root = tmp_path / "r"
    assert sweep_cli.run_sweep(spec, str(root), "slurm", sets=common, progress=False) == 0
    (job,) = [j["job"] for j in slurm.read_jobs(str(root))]
    metrics = root / "long" / "metrics.jsonl"
    deadline = time.time() + 180
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    assert metrics.exists(), env.run("squeue").stdout
    assert slurm.scheduler_states(str(root)) == {"long": f"RUNNING ({job}_0)"}
    env.run("scancel", job)  # SIGTERM to the job's processes; SIGKILL KillWait seconds later
    env.wait_idle()
    log = (root / "long" / "train.log").read_text()
    assert "stop requested: saving step" in log, log[-2000:]
    steps = [int(d) for d in os.listdir(root / "long" / "checkpoints") if d.isdigit()]
    assert len(steps) == 1 and 1 <= steps[0] < 100000
    k = steps[0]

    # The same sweep again (to 2 steps past the save, so that the test stays short): it resumes there.
    capsys.readouterr()
    assert sweep_cli.run_sweep(spec, str(root), "slurm", sets=common + [f"train.stop_after={k + 2}"],
                               progress=False) == 0
    env.wait_idle()
    log = (root / "long" / "train.log").read_text()
    assert f"resuming from step {k}" in log, log[-2000:]
    steps = sorted(int(d) for d in os.listdir(root / "long" / "checkpoints") if d.isdigit())
    assert steps[-1] == k + 2
    assert len(slurm.read_jobs(str(root))) == 2
