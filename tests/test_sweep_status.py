"""Sweeps that say where they stand (gpt2jax/scaling/status.py, gpt2jax/scaling/local.py): --status from
the workdirs alone, a failed run that does not stop the others (and the --only command that retries it),
a changed spec refused over an existing root, and Ctrl-C during a run's start-up (once: a clean stop;
twice: the run killed, and said so)."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import write_spec

from gpt2jax import cli
from gpt2jax import sweep as sweep_cli
from gpt2jax import train as train_lib
from gpt2jax.errors import SweepError
from gpt2jax.scaling import launch, resolve, status
from gpt2jax.scaling import spec as spec_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "configs/tiny.py"


def snapshot(root) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in pathlib.Path(root).rglob("*")}


# -- --status on workdirs built by hand ---------------------------------------------------------
STATES = """
def get_sweep():
    return Sweep(runs=[Run(n, "configs/tiny.py", {"train.num_steps": 4}) for n in
                       ("new", "begun", "live", "remote", "stale", "done", "crashed", "crashed_log", "stopped")])
"""


def test_status_reads_each_state_from_the_workdirs(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, STATES)
    root = tmp_path / "r"
    ckpts = {"live": 2, "stale": 2, "done": 4, "crashed": 2, "stopped": 3}
    monkeypatch.setattr(status, "latest_step", lambda p, wd: ckpts.get(p.name))  # Orbax's reading: elsewhere
    for name in ("begun", "live", "remote", "stale", "done", "crashed", "crashed_log", "stopped"):
        (root / name).mkdir(parents=True)
        (root / name / "train.log").write_text("\n=== 2026-01-01 00:00:00 $ python -m gpt2jax.train\nstarting\n")
    here = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()

    def lock(name, host, pid):
        (root / name / "writer.lock").write_text(json.dumps({"host": host, "pid": pid, "started": time.time()}))

    lock("live", here, os.getpid())
    (root / "live" / "metrics.jsonl").write_text('{"step": 1, "loss": 9}\n{"step": 3, "loss": 8}\n')
    lock("remote", "elsewhere", 123)
    lock("stale", here, dead.pid)
    status.write_attempt(str(root / "begun"), {"host": here, "pid": dead.pid, "exit_code": 130, "interrupted": True})
    status.write_attempt(str(root / "stopped"), {"host": here, "pid": dead.pid, "exit_code": 130, "interrupted": True})
    with open(root / "crashed" / "train.log", "a") as f:
        f.write("train:  50%|#####     | 2/4\nerror: data.dir=/x: no such directory\n")
    status.write_attempt(str(root / "crashed"), {"host": here, "pid": dead.pid, "exit_code": 1, "interrupted": False})
    with open(root / "crashed_log" / "train.log", "a") as f:  # no attempt record: the log says it
        f.write("Traceback (most recent call last):\n  File \"x.py\", line 1\nZeroDivisionError: division by zero\n")
    before = snapshot(root)

    planned = resolve.plan(resolve.load_spec(spec), spec)
    rows = {r["name"]: r for r in status.sweep_status(planned, str(root))}
    assert {n: r["state"] for n, r in rows.items()} == {
        "new": "not started", "begun": "not started", "live": "running", "remote": "running",
        "stale": "preempted", "done": "finished", "crashed": "failed", "crashed_log": "failed",
        "stopped": "preempted"}
    assert rows["live"]["step"] == 3 and (rows["live"]["host"], rows["live"]["pid"]) == (here, os.getpid())
    assert "another host" in rows["remote"]["detail"] and rows["remote"]["host"] == "elsewhere"
    assert rows["crashed"]["exit_code"] == 1 and rows["crashed"]["error"] == "error: data.dir=/x: no such directory"
    assert rows["crashed_log"]["error"] == "ZeroDivisionError: division by zero"
    assert rows["begun"]["detail"] == "stopped before its first checkpoint" and rows["new"]["log"] is None
    assert rows["stopped"]["detail"] == "resumable from its checkpoint at step 3"
    assert "scheduler" not in rows["new"]

    with_sched = status.sweep_status(planned[:2], str(root), scheduler={"new": "PENDING (job 7_0)"})
    assert [r["scheduler"] for r in with_sched] == ["PENDING (job 7_0)", None]
    table = status.format_status(with_sched).splitlines()
    assert table[0].split() == ["run", "state", "step", "scheduler", "detail"]
    assert table[1].split()[:5] == ["new", "not", "started", "-/4", "PENDING"]

    # the CLI: a table, or JSON; exit 0; nothing written
    assert sweep_cli.run_sweep(spec, str(root), status=True) == 0
    out = capsys.readouterr().out
    assert "crashed      failed       2/4   exit code 1: error: data.dir=/x: no such directory" in out
    assert out.rstrip().endswith("9 runs: 2 not started, 2 running, 2 preempted, 1 finished, 2 failed")
    assert snapshot(root) == before


def test_status_json_and_only(tmp_path, monkeypatch, capsys):
    spec = write_spec(tmp_path, STATES)
    monkeypatch.setattr(status, "latest_step", lambda p, wd: 4 if p.name == "done" else None)
    argv = ["gpt2jax-sweep", spec, f"--root={tmp_path / 'r'}", "--status", "--json", "--only=done", "--only=new"]
    assert cli.call(sweep_cli.main, sweep_cli.define_flags, argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["state"], r["step"], r["target"]) for r in rows] == [("new", "not started", None, 4),
                                                                              ("done", "finished", 4, 4)]
    assert not (tmp_path / "r").exists()
    assert cli.call(sweep_cli.main, sweep_cli.define_flags, argv[:-2] + ["--only=nope", "--only=nah"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --only: no runs named 'nope', 'nah' in {spec} (its runs: new, begun, live, remote, stale, done, "
        "crashed, crashed_log, stopped)")


# -- a changed spec over an existing root -------------------------------------------------------
def test_a_changed_spec_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    body = "def get_sweep():\n    return Sweep(runs=[Run('a', 'configs/tiny.py', {A}), Run('b', 'configs/tiny.py', {B})])\n"
    spec64 = write_spec(tmp_path, body.format(A="{'train.num_steps': 4}", B="{'train.num_steps': 4}"))
    root = tmp_path / "r"
    planned = resolve.plan(resolve.load_spec(spec64), spec64)
    launch.write_records(planned, str(root), spec64)
    for p in planned:  # both trained to step 2 (the run.json train writes; vocab_size as resolved)
        (root / p.name / "run.json").write_text(json.dumps({"config": train_lib.config_lib.to_dict(p.config)}))
    monkeypatch.setattr(launch, "latest_step", lambda p, wd: 2)
    before = snapshot(root)

    spec128 = write_spec(tmp_path, body.format(A="{'train.num_steps': 4, 'model.n_embd': 128, 'optim.lr': 2e-3}",
                                               B="{'train.num_steps': 4}"), name="spec128.py")
    with pytest.raises(SweepError) as e:
        sweep_cli.run_sweep(spec128, str(root), progress=False)
    msg = str(e.value)
    assert f"the spec changed runs already trained in {root}: a (" in msg
    assert "model.n_embd: 64 -> 128" in msg and "optim.lr: 0.001 -> 0.002" in msg and "b (" not in msg
    assert "new --root" in msg
    assert snapshot(root) == before  # no record rewritten
    assert cli.call(sweep_cli.main, sweep_cli.define_flags, ["gpt2jax-sweep", spec128, f"--root={root}"]) == 2
    assert "model.n_embd: 64 -> 128" in capsys.readouterr().err

    # more steps, and other intervals, continue as a resume does
    longer = write_spec(tmp_path, body.format(A="{'train.num_steps': 8, 'train.eval_every': 2}",
                                              B="{'train.num_steps': 6, 'checkpoint.every': 3}"), name="longer.py")
    assert sweep_cli.run_sweep(longer, str(root), dry_run=True) == 0
    assert capsys.readouterr().out.count("$ ") == 2


def test_config_changes_lists_the_fields_but_the_harmless_ones():
    [p] = resolve.plan(spec_lib.Sweep(runs=[spec_lib.Run("a", TINY)]), "x")
    saved = train_lib.config_lib.to_dict(p.config)
    saved["train"]["num_steps"], saved["checkpoint"]["every"], saved["train"]["seed"] = 1, 3, 9
    saved["model"]["vocab_size"] = 65
    assert launch.config_changes(saved, p.config) == ["model.vocab_size: 65 -> 50257", "train.seed: 9 -> 0"]
    p.config.model.vocab_size = 0  # the data's: set by train, matches what it was
    assert launch.config_changes(saved, p.config) == ["train.seed: 9 -> 0"]


# -- a real local sweep with a failing run ------------------------------------------------------
@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("xla")


def test_a_failed_run_does_not_stop_the_others(tmp_path, shakespeare_dir, xla_cache, monkeypatch, capsys):
    monkeypatch.setenv("XLA_FLAGS", "")  # the children: one CPU device
    missing = tmp_path / "missing"
    spec = write_spec(tmp_path, f"""
def get_sweep():
    return Sweep(runs=[
        Run("bad", "configs/tiny.py", {{"train.num_steps": 2, "data.dir": "{missing}"}}),
        Run("ok", "configs/tiny.py", {{"train.num_steps": 2, "train.eval_batches": 1,
                                      "data.dir": "{shakespeare_dir}"}}),
        Run("bad-cd", "configs/tiny.py", {{"train.num_steps": 3, "train.branch_from": "bad", "train.branch_step": 2,
                                          "data.dir": "{missing}"}}),
    ])
""")
    root = tmp_path / "r"
    sets = [f"train.compile_cache={xla_cache}"]
    assert sweep_cli.run_sweep(spec, str(root), sets=sets, progress=False) == 1
    cap = capsys.readouterr()
    bad_log = root / "bad" / "train.log"
    assert f"error: run bad failed (exit code 1); its log: {bad_log}" in cap.err
    assert "bad-cd: skipped, not started: its parent bad failed" in cap.err
    assert "1/3 runs finished; not yet: bad-cd (its parent bad failed), bad (failed)" in cap.out
    table = cap.err[cap.err.index("1 run(s) failed:"):].splitlines()
    assert table[1].split() == ["run", "exit", "code", "last", "error", "line", "log"]
    assert table[2].startswith("  bad  1          error: prepared data not found: missing ")
    assert table[2].endswith(f"  {bad_log}")
    assert table[3] == (f"to retry only these (and the branches skipped with them: bad-cd): gpt2jax-sweep {spec} "
                        f"--root={root} --set=train.compile_cache={xla_cache} --only=bad --only=bad-cd")
    attempt = json.loads((root / "bad" / "sweep_attempt.json").read_text())
    assert attempt["exit_code"] == 1 and attempt["interrupted"] is False and attempt["host"] == socket.gethostname()

    assert sweep_cli.run_sweep(spec, str(root), sets=sets, status=True) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:7] == ["bad", "failed", "-/2", "exit", "code", "1:", "error:"]
    assert sweep_cli.run_sweep(spec, str(root), sets=sets, status=True, as_json=True, only=["bad"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["error"].startswith(f"error: prepared data not found: missing {missing}/meta.json")
    assert (row["state"], row["exit_code"], row["log"]) == ("failed", 1, str(bad_log))
    assert out[2].split()[:3] == ["ok", "finished", "2/2"] and out[3].split()[:4] == ["bad-cd", "not", "started", "-/3"]

    # the retry command's --only: those runs alone (the records still cover all three)
    assert sweep_cli.run_sweep(spec, str(root), sets=sets, only=["bad", "bad-cd"], dry_run=True) == 0
    out = capsys.readouterr().out
    assert "2 runs from" in out and "(--only: 2 of 3)" in out and "ok: finished" not in out
    assert [ln.split("--workdir=")[1].split()[0] for ln in out.splitlines() if ln.startswith("$ ")] == [
        str(root / "bad"), str(root / "bad-cd")]
    assert [r["name"] for r in json.loads((root / "sweep.json").read_text())["runs"]] == ["bad", "ok", "bad-cd"]


# -- Ctrl-C ---------------------------------------------------------------------------------------
def test_startup_stop_turns_ctrl_c_into_a_flag():
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under a shell's background job
    with train_lib.StartupStop() as early:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert early.requested
        with pytest.raises(KeyboardInterrupt):
            early.check()
    assert signal.getsignal(signal.SIGINT) is before  # the handler it found is back


def _start_sweep(tmp_path, shakespeare_dir, xla_cache):
    spec = write_spec(tmp_path, "def get_sweep():\n    return Sweep(runs=[Run('long', 'configs/tiny.py', "
                                "{'train.num_steps': 100000, 'checkpoint.every': 0, 'train.eval_every': 0})])\n")
    root = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt2jax.sweep", spec, f"--root={root}", f"--set=data.dir={shakespeare_dir}",
         f"--set=train.compile_cache={xla_cache}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "XLA_FLAGS": ""})
    attempt = root / "long" / status.ATTEMPT
    deadline = time.time() + 120
    while not attempt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return proc, root, json.loads(attempt.read_text())["pid"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_during_start_up_stops_the_run_cleanly(tmp_path, shakespeare_dir, xla_cache):
    proc, root, child = _start_sweep(tmp_path, shakespeare_dir, xla_cache)
    time.sleep(1.0)  # the child imports JAX
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert err.rstrip().endswith("interrupted: run the same command to continue")
    log = (root / "long" / "train.log").read_text()
    assert "Traceback" not in log and "Exception ignored" not in log and "error: interrupted" in log, log
    assert not (root / "long" / "writer.lock").exists() and not _alive(child)
    attempt = json.loads((root / "long" / status.ATTEMPT).read_text())
    assert attempt["exit_code"] == 130 and attempt["interrupted"] is True and attempt["killed"] is False
    if not os.path.isdir(root / "long" / "checkpoints") or not os.listdir(root / "long" / "checkpoints"):
        assert "run long stopped before its first checkpoint (nothing to resume: it starts again)" in err


def test_a_second_ctrl_c_kills_the_run_and_says_what_it_left(tmp_path, shakespeare_dir, xla_cache):
    proc, root, child = _start_sweep(tmp_path, shakespeare_dir, xla_cache)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)  # the second: end at once
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    assert "run long killed while it started; it has no checkpoint yet; the same command starts it again" in err
    assert not _alive(child)
    attempt = json.loads((root / "long" / status.ATTEMPT).read_text())
    assert attempt["exit_code"] == -signal.SIGKILL and attempt["killed"] is True
