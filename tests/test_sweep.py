"""gpt2jax-sweep (gpt2jax/sweep.py, gpt2jax/scaling): specs and helpers, clear errors, dry-run commands of every launcher, and a
real two-run local sweep (records, skip when finished, resume when interrupted)."""

import json
import math
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import pytest
from conftest import write_spec

from gpt2jax import sweep as sweep_cli
from gpt2jax.errors import SweepError
from gpt2jax.scaling import launch, overrides, resolve, slurm, tpu
from gpt2jax.scaling import spec as spec_lib
from gpt2jax.model import num_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "configs/tiny.py"


TWO_RUNS = """
def get_sweep():
    runs = grid("t", "configs/tiny.py", {"train.seed": [0, 1]},
                overrides={"train.num_steps": 4, "train.eval_batches": 1})
    tpu = TPU(project="proj", zone="us-central2-b", accelerator_type="v4-8",
              data_dir="gs://bkt/data/shk", checkpoint_bucket="gs://bkt/runs", repo_url="https://x/g.git")
    slurm = Slurm(partition="gpu", nodes=2, ntasks_per_node=8, gpus_per_node=8, cpus_per_task=4,
                  time="01:00:00", repo_dir="/shared/gpt2jax", data_dir="/shared/data/shk")
    return Sweep(runs=runs, tpu=tpu, slurm=slurm, name="two")
"""


# -- helpers ----------------------------------------------------------------------------------
def test_grid_is_the_product_of_its_axes():
    runs = spec_lib.grid("g", TINY, {"optim.lr": [1e-3, 3e-3], "model.n_embd": [32, 64, 128]}, overrides={"train.num_steps": 3})
    assert len(runs) == 6
    assert len({r.name for r in runs}) == 6
    assert {(r.overrides["optim.lr"], r.overrides["model.n_embd"]) for r in runs} == {
        (lr, d) for lr in (1e-3, 3e-3) for d in (32, 64, 128)
    }
    assert all(r.overrides["train.num_steps"] == 3 for r in runs)
    assert runs[0].name == "g-lr0.001-n_embd32" and runs[0].tags == {"optim.lr": 1e-3, "model.n_embd": 32}


def test_ladder_heads_lr_and_token_rules():
    shapes = [(1, 32), (2, 64), (4, 128)]
    runs = spec_lib.ladder("lad", TINY, shapes, batch_size=4, seq_len=32, tokens=1000, head_dim=32)
    planned = resolve.plan(spec_lib.Sweep(runs=runs), "x")
    for (n_layer, n_embd), p in zip(shapes, planned):
        m = p.config.model
        assert (m.n_layer, m.n_embd, m.n_head, m.block_size) == (n_layer, n_embd, n_embd // 32, 32)
        n = num_params(m, non_embedding=True)
        assert p.record["params_non_embedding"] == n and p.record["params"] == num_params(m)
        assert p.config.optim.lr == pytest.approx(0.003239 - 0.0001395 * math.log(n), rel=1e-3)
        assert p.config.optim.min_lr == pytest.approx(p.config.optim.lr / 10, rel=1e-3)
        assert p.num_steps == math.ceil(1000 / (4 * 32)) == 8  # fixed tokens: same steps for all
        assert p.record["tokens"] == 8 * 4 * 32 and p.record["tags"]["n_head"] == n_embd // 32
    lrs = [p.config.optim.lr for p in planned]
    assert lrs == sorted(lrs, reverse=True)  # bigger model, smaller lr

    # Fixed heads, lr scaled as 1/width from a base, tokens = k x params
    runs = spec_lib.ladder("w", TINY, [(2, 64), (2, 128)], batch_size=4, seq_len=32, tokens_per_param=2,
                     count="total", n_head=4, lr=1e-3, lr_base_width=64)
    planned = resolve.plan(spec_lib.Sweep(runs=runs), "x")
    assert [p.config.model.n_head for p in planned] == [4, 4]
    assert [p.config.optim.lr for p in planned] == [1e-3, 5e-4]
    for p in planned:
        assert p.num_steps == math.ceil(2 * p.record["params"] / (4 * 32))


def test_isoflop_tokens_are_budget_over_6n_and_record_the_budget():
    budgets, shapes = [1e12, 4e12], [(1, 32), (2, 64), (2, 128)]
    runs = spec_lib.isoflop("iso", TINY, budgets, shapes, batch_size=4, seq_len=32, head_dim=32)
    planned = resolve.plan(spec_lib.Sweep(runs=runs), "x")
    assert len(planned) == 6
    for p in planned:
        C, N = p.record["budget_flops"], p.record["params"]
        assert C in budgets and isinstance(C, float)
        assert p.num_steps == math.ceil(C / (6 * N) / (4 * 32))
        assert C / (6 * N) <= p.record["tokens"] < C / (6 * N) + 4 * 32
    # at a fixed budget, bigger models get fewer tokens
    at = [p.record["tokens"] for p in planned if p.record["budget_flops"] == 1e12]
    assert at == sorted(at, reverse=True)
    # runs too short for min_steps are left out
    few = spec_lib.isoflop("iso", TINY, [1e12], shapes, batch_size=4, seq_len=32, head_dim=32, min_steps=10**9)
    assert few == []


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, expected",
    [
        ("x = 1\n", "defines no get_sweep()"),
        ("def get_sweep():\n    return 3\n", "must return a Sweep"),
        ("def get_sweep():\n    raise RuntimeError('boom')\n", "get_sweep() failed (RuntimeError: boom)"),
        ("def get_sweep():\n    return Sweep(runs=[Run('a', 'configs/tiny.py'), Run('a', 'configs/tiny.py')])\n",
         "run name 'a' appears twice"),
        ("def get_sweep():\n    return Sweep(runs=[Run('a b', 'configs/tiny.py')])\n", "run name 'a b'"),
        ("def get_sweep():\n    return Sweep(runs=[Run('a', 'configs/nope.py')])\n", "run 'a': config file 'configs/nope.py' not found"),
    ],
)
def test_bad_spec_is_one_clear_error(tmp_path, body, expected):
    path = write_spec(tmp_path, body)
    with pytest.raises(SweepError) as e:
        resolve.plan(resolve.load_spec(path), path)
    assert expected in str(e.value)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"optim.lrr": 1e-3}, "run 'bad': config.optim.lrr: no such field"),
        ({"train.num_steps": "many"}, "run 'bad': config.train.num_steps: cannot parse 'many' as int"),
        ({"train.num_steps": 2.5}, "run 'bad': config.train.num_steps: expected int, got 2.5 (float)"),
        ({"model.n_head": 3}, "run 'bad': config.model.n_embd: 64 is not divisible by model.n_head=3"),
        ({"model": 3}, "run 'bad': config.model is a section"),
    ],
)
def test_bad_override_names_the_run_and_field(overrides, expected):
    runs = [spec_lib.Run("good", TINY), spec_lib.Run("bad", TINY, overrides)]
    with pytest.raises(SweepError) as e:
        resolve.plan(spec_lib.Sweep(runs=runs), "x")
    assert expected in str(e.value)


def test_string_overrides_parse_to_the_field_type():
    p = resolve.plan(spec_lib.Sweep(runs=[spec_lib.Run("a", TINY, {"optim.lr": "3e-4", "train.num_steps": "7",
                                                  "model.scan_layers": "false"})]), "x")[0]
    assert p.config.optim.lr == 3e-4 and p.config.train.num_steps == 7 and p.config.model.scan_layers is False
    assert p.overrides == {"optim.lr": 3e-4, "train.num_steps": 7, "model.scan_layers": False}


def test_cli_bad_override_fails_at_dry_run_with_one_message(tmp_path):
    spec = write_spec(tmp_path, TWO_RUNS)
    out = subprocess.run(
        [sys.executable, "-m", "gpt2jax.sweep", spec, f"--root={tmp_path / 'r'}", "--dry_run",
         "--set=train.batch_size=0"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: run 't-seed0': config.train.batch_size: must be > 0, got 0"]
    assert not (tmp_path / "r").exists()


# -- dry runs ---------------------------------------------------------------------------------
def test_dry_run_local_prints_train_commands_and_writes_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path, TWO_RUNS)
    root = tmp_path / "r"
    assert sweep_cli.run_sweep(spec, str(root), "local", dry_run=True) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("$ ")]
    assert len(lines) == 2
    for seed, line in zip((0, 1), lines):
        assert f"-m gpt2jax.train --config={ROOT / TINY} --workdir={root / f't-seed{seed}'}" in line
        assert "--config.train.num_steps=4" in line and f"--config.train.seed={seed}" in line
    assert not root.exists()


def test_dry_run_tpu_commands(tmp_path, capsys):
    spec = write_spec(tmp_path, TWO_RUNS)
    root = tmp_path / "r"
    where = "--zone=us-central2-b --project=proj"
    assert sweep_cli.run_sweep(spec, str(root), "tpu", dry_run=True, action="launch") == 0
    cmds = [ln[2:] for ln in capsys.readouterr().out.splitlines() if ln.startswith("$ ")]
    assert len(cmds) == 8  # per slice: create, poll, install, start
    for i, name in enumerate(("t-seed0", "t-seed1")):
        sl = f"gpt2jax-{name}"
        create, poll, install, start = cmds[4 * i: 4 * i + 4]
        assert create == (f"gcloud compute tpus queued-resources create {sl} --node-id={sl} {where} "
                          "--accelerator-type=v4-8 --runtime-version=tpu-ubuntu2204-base")
        assert poll == f"gcloud compute tpus queued-resources describe {sl} {where} '--format=value(state.state)'"
        assert install.startswith(f"gcloud compute tpus tpu-vm ssh {sl} {where} --worker=all '--command=")
        assert "git clone -q https://x/g.git ~/gpt2jax" in install and ".venv/bin/pip install -q -e" in install
        assert start.startswith(f"gcloud compute tpus tpu-vm ssh {sl} {where} --worker=all '--command=cd ~/gpt2jax && nohup ")
        assert (f".venv/bin/python -m gpt2jax.train --config=configs/tiny.py --workdir=runs/{name} "
                "--config.train.num_steps=4") in start
        assert f"--config.data.dir=gs://bkt/data/shk --config.checkpoint.dir=gs://bkt/runs/{name} > runs/{name}/train.log 2>&1" in start
        assert start.endswith("> /dev/null 2>&1 &'")
    for action, expect in [
        ("status", "gcloud compute tpus queued-resources describe gpt2jax-t-seed0"),
        ("tail", f"gcloud compute tpus tpu-vm ssh gpt2jax-t-seed0 {where} --worker=0 '--command=tail -n 40 ~/gpt2jax/runs/t-seed0/train.log'"),
        ("fetch", "gcloud compute tpus tpu-vm scp 'gpt2jax-t-seed0:~/gpt2jax/runs/t-seed0/run.json'"),
        ("delete", f"gcloud compute tpus queued-resources delete gpt2jax-t-seed1 {where} --force --quiet --async"),
    ]:
        assert sweep_cli.run_sweep(spec, str(root), "tpu", dry_run=True, action=action) == 0
        out = capsys.readouterr().out
        assert expect in out, (action, out)
    assert not root.exists()


def test_tpu_launch_refuses_placeholders(tmp_path):
    spec = write_spec(tmp_path, "def get_sweep():\n    return Sweep(runs=[Run('a', 'configs/tiny.py')])\n")
    with pytest.raises(SweepError, match=r"tpu.project='<PROJECT>', tpu.zone='<ZONE>'"):
        sweep_cli.run_sweep(spec, str(tmp_path / "r"), "tpu", dry_run=False, action="launch")


def test_dry_run_slurm_sbatch_file(tmp_path, capsys):
    spec = write_spec(tmp_path, TWO_RUNS)
    root = tmp_path / "r"
    assert sweep_cli.run_sweep(spec, str(root), "slurm", dry_run=True) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"$ sbatch --parsable {root / 'sweep.sbatch'}"
    script = slurm.sbatch_script(resolve.plan(resolve.load_spec(spec), spec), resolve.load_spec(spec).slurm, str(root), "two")
    assert script in out
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for opt in ["--job-name=two", "--array=0-1", "--partition=gpu", "--nodes=2", "--ntasks-per-node=8",
                "--gpus-per-node=8", "--cpus-per-task=4", "--time=01:00:00", f"--output={root}/slurm-%A_%a.out",
                "--signal=TERM@120"]:
        assert f"#SBATCH {opt}" in lines
    assert "cd /shared/gpt2jax" in lines and "source .venv/bin/activate" in lines
    for i, name in enumerate(("t-seed0", "t-seed1")):
        case = next(ln for ln in lines if ln.startswith(f"  {i}) "))
        assert case.startswith(f"  {i}) NAME={name}; ARGS=(-m gpt2jax.train --config=configs/tiny.py --workdir={root / name} ")
        assert f"--config.train.seed={i}" in case and "--config.data.dir=/shared/data/shk" in case
    assert f'srun --kill-on-bad-exit=1 python "${{ARGS[@]}}" >> {root}/"$NAME"/train.log 2>&1' in lines
    assert not root.exists()


# -- cooldown branches: the order on SLURM and TPU ----------------------------------------------
BRANCHES = """
def get_sweep():
    runs = cooldowns("cd", "configs/tiny.py", [(1, 32)], tokens={(1, 32): [4 * 32 * 10, 4 * 32 * 20]},
                     seq_len=32, batch_size=lambda shape, Ds: 4, n_head=lambda shape: 2,
                     lr=lambda shape, Ds: 1e-3, warmup=lambda shape, steps: 1)
    runs += grid("t", "configs/tiny.py", {"train.seed": [0]}, overrides={"train.num_steps": 4})
    tpu = TPU(project="proj", zone="us-central2-b", accelerator_type="v4-8", slices=SLICES,
              data_dir="gs://bkt/data/shk", checkpoint_bucket="gs://bkt/runs", repo_url="https://x/g.git")
    slurm = Slurm(partition="gpu", time="01:00:00", repo_dir="/shared/gpt2jax", data_dir="/shared/data/shk")
    return Sweep(runs=runs, tpu=tpu, slurm=slurm, name="cd")
"""
PARENT, B1, B2 = "cd-L1-D32-stable", "cd-T1e03-L1-D32", "cd-T3e03-L1-D32"


def test_dry_run_slurm_branches_wait_for_their_parents(tmp_path, capsys):
    spec = write_spec(tmp_path, BRANCHES.replace("SLICES", "0"))
    root = tmp_path / "r"
    assert sweep_cli.run_sweep(spec, str(root), "slurm", dry_run=True) == 0
    out = capsys.readouterr().out
    parents, branches = root / "sweep.sbatch", root / "sweep-branches.sbatch"
    assert out.splitlines()[-2:] == [f"$ sbatch --parsable {parents}",
                                     f"$ sbatch --parsable --dependency=afterok:<JOB_ID_0> {branches}"]
    planned = resolve.plan(resolve.load_spec(spec), spec)
    (p0, first), (p1, second) = slurm.slurm_jobs(planned, resolve.load_spec(spec).slurm, str(root), "cd")
    assert (p0, p1) == (str(parents), str(branches)) and first in out and second in out
    assert "#SBATCH --array=0-1" in first.splitlines() and "#SBATCH --job-name=cd" in first.splitlines()
    assert "#SBATCH --job-name=cd-branches" in second.splitlines() and "#SBATCH --array=0-1" in second.splitlines()
    case = [ln for ln in first.splitlines() if ln.startswith("  0) ") or ln.startswith("  1) ")]
    assert [c.split("NAME=")[1].split(";")[0] for c in case] == [PARENT, "t-seed0"]
    case = [ln for ln in second.splitlines() if ln.startswith("  0) ") or ln.startswith("  1) ")]
    assert [c.split("NAME=")[1].split(";")[0] for c in case] == [B1, B2]
    # a branch reads its parent as the sibling of its workdir: ROOT/<parent>, where the parent writes
    assert all(f"--config.train.branch_from={PARENT} " in c and f"--workdir={root / c.split('NAME=')[1].split(';')[0]} " in c
               for c in case)
    assert not root.exists()


def test_slurm_submits_the_branches_after_the_parents_job(tmp_path, monkeypatch, capsys):
    """A submission with a stand-in sbatch: the first array with --parsable, its job id (before ';cluster')
    in the second's --dependency=afterok, each job recorded with its runs in ROOT/slurm_jobs.json; without
    branches, one array. (tests/test_slurm.py submits to a real one-node cluster.)"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/bash\necho \"$*\" >> {calls}\n"
                      f"n=$(wc -l < {calls}); echo \"$((4241 + n));clusterA\"\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    spec = write_spec(tmp_path, BRANCHES.replace("SLICES", "0"))
    root = tmp_path / "r"
    assert sweep_cli.run_sweep(spec, str(root), "slurm") == 0
    assert calls.read_text().splitlines() == [
        f"--parsable {root / 'sweep.sbatch'}",
        f"--parsable --dependency=afterok:4242 {root / 'sweep-branches.sbatch'}"]
    out = capsys.readouterr().out
    assert f"submitted {root / 'sweep.sbatch'}: job 4242, array tasks 0-1 = {PARENT}, t-seed0" in out
    assert f"job 4243, array tasks 0-1 = {B1}, {B2} (after the job before it succeeds)" in out
    assert (root / "sweep-branches.sbatch").read_text().startswith("#!/bin/bash")
    jobs = slurm.read_jobs(str(root))
    assert [(j["job"], j["runs"]) for j in jobs] == [("4242", [PARENT, "t-seed0"]), ("4243", [B1, B2])]

    calls.unlink()
    plain = write_spec(tmp_path, TWO_RUNS, name="plain.py")
    assert sweep_cli.run_sweep(plain, str(tmp_path / "p"), "slurm") == 0
    assert calls.read_text().splitlines() == [f"--parsable {tmp_path / 'p' / 'sweep.sbatch'}"]
    assert not (tmp_path / "p" / "sweep-branches.sbatch").exists()

    with pytest.raises(SweepError, match="sbatch --parsable printed 'Submitted batch job 7', not a job id"):
        slurm.parse_job_id("Submitted batch job 7\n")
    assert slurm.parse_job_id("99\n") == "99"


def _start_chain(start_cmd: str) -> str:
    """The chain of runs inside a slice's start command (`cd DIR && nohup bash -c CHAIN > ... &`)."""
    words = shlex.split(shlex.split(start_cmd)[-1].removeprefix("--command="))
    return words[words.index("-c") + 1]


@pytest.mark.parametrize("slices", [0, 1])
def test_dry_run_tpu_branches_follow_their_parent_on_its_slice(tmp_path, capsys, slices):
    spec = write_spec(tmp_path, BRANCHES.replace("SLICES", str(slices)))
    root = tmp_path / "r"
    assert sweep_cli.run_sweep(spec, str(root), "tpu", dry_run=True, action="launch") == 0
    out = capsys.readouterr().out
    starts = [ln[2:] for ln in out.splitlines() if ln.startswith("$ ") and "nohup" in ln]
    sl = "gpt2jax-cd-l1-d32-stable" if slices == 0 else "gpt2jax-0"
    assert len(starts) == (2 if slices == 0 else 1)
    assert (f"# {sl} runs, in order: {PARENT}, then after it {B1}, {B2}" + ("; t-seed0" if slices else "")
            + " (a branch starts when the run it branches from has succeeded)") in out
    chain = _start_chain(starts[0])
    run = {n: f"mkdir -p runs/{n} && .venv/bin/python -m gpt2jax.train --config=configs/tiny.py --workdir=runs/{n} "
           for n in (PARENT, B1, B2, "t-seed0")}
    i_p, i_1, i_2 = (chain.index(run[n]) for n in (PARENT, B1, B2))
    assert i_p < i_1 < i_2
    assert f"> runs/{PARENT}/train.log 2>&1 && ( {run[B1]}" in chain
    assert f"> runs/{B1}/train.log 2>&1 ; {run[B2]}" in chain and chain.count(" )") >= 1
    # the branches read the parent's checkpoints where they are: its checkpoint.dir in the bucket
    for b in (B1, B2):
        seg = chain[chain.index(run[b]):].split(" > ")[0]
        assert f"--config.train.branch_from=gs://bkt/runs/{PARENT} " in seg and f"--config.checkpoint.dir=gs://bkt/runs/{b}" in seg
    assert f"--config.train.branch_from={PARENT} " not in chain
    if slices == 1:  # the other family after this one, whatever became of it
        assert chain.endswith(f"{B2}/train.log 2>&1 ) ; {run['t-seed0']}" + chain.split(run["t-seed0"])[1])
    else:
        assert run["t-seed0"] in _start_chain(starts[1])


def test_tpu_chain_runs_branches_only_after_their_parent_succeeded(tmp_path, capsys):
    """The slice's chain run by bash with a stand-in python that fails the runs named in FAIL: a failed
    parent skips its branches, not the next family; a failed branch does not stop its sibling."""
    spec = write_spec(tmp_path, BRANCHES.replace("SLICES", "1"))
    planned = resolve.plan(resolve.load_spec(spec), spec)
    [(_, runs)] = tpu.tpu_slices(planned, resolve.load_spec(spec).tpu)
    assert [p.name for p in runs] == [PARENT, B1, B2, "t-seed0"]
    assert sweep_cli.run_sweep(spec, str(tmp_path / "r"), "tpu", dry_run=True, action="launch") == 0
    chain = _start_chain(next(ln[2:] for ln in capsys.readouterr().out.splitlines() if "nohup" in ln))
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.write_text('#!/bin/bash\nfor a; do case $a in --workdir=*) w=${a#--workdir=runs/};; esac; done\n'
                    f'echo "$w" >> {tmp_path / "ran"}\ncase " $FAIL " in *" $w "*) exit 1;; esac\n')
    fake.chmod(0o755)

    def ran(fail):
        (tmp_path / "ran").unlink(missing_ok=True)
        subprocess.run(["bash", "-c", chain], cwd=tmp_path, env={**os.environ, "FAIL": fail}, check=False)
        return (tmp_path / "ran").read_text().split()

    assert ran("") == [PARENT, B1, B2, "t-seed0"]
    assert ran(PARENT) == [PARENT, "t-seed0"]
    assert ran(B1) == [PARENT, B1, B2, "t-seed0"]


# -- a real local sweep ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
    """One compilation cache for this file's children (they compile the same tiny shapes)."""
    return tmp_path_factory.mktemp("xla")


LOCAL_RUNS = """
def get_sweep():
    return Sweep(runs=[
        Run("a", "configs/tiny.py", {"train.num_steps": 4, "train.eval_batches": 1}, tags={"rung": 0}),
        Run("b", "configs/tiny.py", {"train.num_steps": 2, "train.eval_batches": 1},
            budget_flops=1e12, tags={"rung": 1}),
    ])
"""


def test_local_sweep_records_skips_and_resumes(tmp_path, shakespeare_dir, xla_cache, monkeypatch, capsys):
    monkeypatch.setenv("XLA_FLAGS", "")  # the children: one CPU device
    spec = write_spec(tmp_path, LOCAL_RUNS)
    root = tmp_path / "r"
    common = [f"data.dir={shakespeare_dir}", f"train.compile_cache={xla_cache}"]

    def log_starts(name):
        return (root / name / "train.log").read_text().count("\n=== ")

    # 1: every run stops after step 2 (as an interrupted run would, saving there): a is half done,
    # b (2 steps) is finished
    rc = sweep_cli.run_sweep(spec, str(root), "local", sets=common + ["train.stop_after=2"], progress=False)
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("$ ") == 2 and "all 2 runs finished" in out
    sweep_json = json.loads((root / "sweep.json").read_text())
    assert sweep_json["spec"] == spec and [r["name"] for r in sweep_json["runs"]] == ["a", "b"]
    for name, steps, budget in (("a", 4, None), ("b", 2, 1e12)):
        rec = json.loads((root / name / "sweep_run.json").read_text())
        assert rec == sweep_json["runs"][0 if name == "a" else 1]
        assert set(rec) == {"name", "config", "overrides", "budget_flops", "tokens", "params",
                            "params_non_embedding", "tags"}
        assert rec["name"] == name and rec["config"] == TINY and rec["budget_flops"] == budget
        assert rec["overrides"]["train.num_steps"] == steps and rec["overrides"]["train.stop_after"] == 2
        assert rec["tokens"] == steps * 8 * 32 and rec["tags"] == {"rung": 0 if name == "a" else 1}
        cfg = overrides.load_config(TINY)
        assert rec["params"] == num_params(cfg.model) and rec["params_non_embedding"] == num_params(cfg.model, True)
        assert sorted(os.listdir(root / name / "checkpoints")) == ["2"]
        assert log_starts(name) == 1

    # 1b: the same command again: a is done to its stop_after (as a cooldown sweep's parent is), so
    # nothing starts
    assert sweep_cli.run_sweep(spec, str(root), "local", sets=common + ["train.stop_after=2"], progress=False) == 0
    out = capsys.readouterr().out
    assert "$ " not in out and "a: done to train.stop_after=2 (checkpoint at step 2; num_steps 4), skipped" in out
    assert "b: finished (checkpoint at step 2 of 2), skipped" in out and "all 2 runs finished" in out

    # 2: the same command without stop_after resumes a from step 2 and finishes it; b is skipped
    assert sweep_cli.run_sweep(spec, str(root), "local", sets=common, progress=False) == 0
    out = capsys.readouterr().out
    assert "b: finished (checkpoint at step 2 of 2), skipped" in out and "all 2 runs finished" in out
    assert out.count("$ ") == 1 and "--workdir=" + str(root / "a") in out
    log = (root / "a" / "train.log").read_text()
    assert "resuming from step 2" in log and "final val_loss" in log
    rows = [json.loads(x) for x in (root / "a" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and "val_loss" in rows[-1]
    planned = resolve.plan(resolve.load_spec(spec), spec, resolve.parse_sets(common))[0]
    assert launch.latest_step(planned, str(root / "a")) == 4

    # 3: again: everything is finished, so nothing trains
    assert sweep_cli.run_sweep(spec, str(root), "local", sets=common, progress=False) == 0
    out = capsys.readouterr().out
    assert "a: finished (checkpoint at step 4 of 4), skipped" in out and "$ " not in out
    assert [log_starts(n) for n in ("a", "b")] == [2, 1]


def test_ctrl_c_is_passed_to_the_run_which_saves(tmp_path, shakespeare_dir, xla_cache):
    spec = write_spec(tmp_path, "def get_sweep():\n    return Sweep(runs=[Run('long', 'configs/tiny.py', "
                                "{'train.num_steps': 100000, 'checkpoint.every': 0, 'train.eval_every': 0, "
                                "'train.log_every': 1})])\n")
    root = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt2jax.sweep", spec, f"--root={root}", f"--set=data.dir={shakespeare_dir}",
         f"--set=train.compile_cache={xla_cache}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "XLA_FLAGS": ""},
    )
    metrics = root / "long" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends to the sweep
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "interrupted: run the same command to continue" in err
    steps = [int(d) for d in os.listdir(root / "long" / "checkpoints") if d.isdigit()]
    assert len(steps) == 1 and 1 <= steps[0] < 100000  # the run saved where it stopped
    assert "stop requested: saving step" in (root / "long" / "train.log").read_text()
