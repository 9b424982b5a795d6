"""Misuse: every mistake a user can make with prepare, train, sample, convert, evaluate and plan ends
with a non-zero exit, no traceback, one last stderr line `error: ...` naming the thing -- and loses
nothing (the workdir and the data hash the same before and after).

The cases that fail before compiling call each tool's main() in-process through gpt2jax.cli.call;
the one-writer-per-workdir test runs two real trainers. docs/fault_tolerance.md tabulates this file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gpt2jax import cli, checkpoint as ckpt_lib, convert, evaluate, plan, prepare, sample
from gpt2jax import train as train_lib
from gpt2jax.config import get_config
from gpt2jax.lock import LOCK_NAME, LockError, WorkdirLock
from gpt2jax.model import init_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")

jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


# -- helpers ----------------------------------------------------------------------------------------
def digest(*paths) -> str:
    """One hash of every file (name and bytes) under the paths; a missing path hashes as absent."""
    h = hashlib.sha256()
    for path in paths:
        path = pathlib.Path(path)
        if not path.exists():
            h.update(b"<absent>" + str(path).encode())
            continue
        for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
            h.update(str(p).encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def run(capsys, tool, *argv) -> tuple[int, str, str]:
    rc = cli.call(tool.main, tool.define_flags, [tool.__name__, *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def refused(result, *names, rc=None) -> str:
    """Assert one clear error: non-zero exit, no traceback, last stderr line `error: ...` naming each
    of `names`. Returns that line."""
    code, out, err = result
    assert code != 0 and (rc is None or code == rc), (code, out[-2000:], err[-3000:])
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err[-3000:]
    for name in names:
        assert str(name) in last, (name, last)
    return last


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("misuse_xla_cache")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small prepared corpus (text source): 25k tokens."""
    root = tmp_path_factory.mktemp("misuse_data")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "home", "to", "see", "his"]
    for i in range(24):
        (src / f"{i:02d}.txt").write_text(" ".join(rng.choice(words, 900)) + ".\n")
    from gpt2jax.data.prepare import prepare as prep

    prep(f"text:{src}/*.txt", str(root / "data"), progress=False)
    return root / "data"


@pytest.fixture(scope="module")
def converted_run(tmp_path_factory):
    """A params-only checkpoint (step 0) of the tiny model, as convert --from_hf writes."""
    wd = tmp_path_factory.mktemp("misuse_run")
    c = get_config()
    c.model.n_layer, c.model.n_embd, c.model.n_head, c.model.block_size = 2, 64, 2, 32
    ckpt_lib.save_params(wd, c, init_params(c.model, jax.random.PRNGKey(0)))
    return wd


def train_args(workdir, data_dir, cache, *extra):
    return [f"--config={TINY}", f"--workdir={workdir}", f"--config.data.dir={data_dir}",
            f"--config.train.compile_cache={cache}", *extra]


def copy_data(src, dst, *, tokens=None, meta=None, train_bytes=None):
    """A copy of a prepared dir with damage: a train.bin of other tokens/bytes, another meta.json."""
    dst.mkdir()
    for name in ("train.bin", "val.bin", "meta.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    if tokens is not None:
        tokens.astype(np.uint16).tofile(dst / "train.bin")
    if train_bytes is not None:
        (dst / "train.bin").write_bytes(train_bytes)
    if meta is not None:
        (dst / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return dst


# -- flags and configs, on every tool ---------------------------------------------------------------
@pytest.mark.parametrize("tool", [train_lib, sample, convert, evaluate, prepare, plan], ids=lambda t: t.__name__)
def test_unknown_flag_is_named(capsys, tool):
    refused(run(capsys, tool, "--no_such_flag=1"), "no_such_flag", rc=2)


@pytest.mark.parametrize("tool", [train_lib, plan], ids=lambda t: t.__name__)
def test_config_file_and_key_mistakes(capsys, tmp_path, tool):
    extra = [f"--workdir={tmp_path / 'wd'}"] if tool is train_lib else ["--nocompile"]
    refused(run(capsys, tool, "--config=configs/nope.py", *extra), "configs/nope.py", "no such config file", rc=2)
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    refused(run(capsys, tool, f"--config={broken}", *extra), str(broken), "SyntaxError", rc=2)
    last = refused(run(capsys, tool, f"--config={TINY}", "--config.train.num_stepz=3", *extra),
                   "config.train.num_stepz", "'config.train.num_steps'", rc=2)
    assert "did you mean" in last
    refused(run(capsys, tool, f"--config={TINY}", "--config.train.num_steps=abc", *extra),
            "--config.train.num_steps=abc", rc=2)
    for bad in ("optim.lr=inf", "optim.lr=nan", "optim.eps=-inf"):
        refused(run(capsys, tool, f"--config={TINY}", f"--config.{bad}", *extra), "config." + bad.split("=")[0], rc=1)
    refused(run(capsys, tool, f"--config={TINY}", "--config.model.n_head=5", *extra), "config.model.n_embd", rc=1)
    assert not (tmp_path / "wd").exists()  # nothing was written


def test_debug_shows_the_traceback(capsys, monkeypatch):
    code, _, err = run(capsys, plan, f"--config={TINY}", "--config.optim.lr=inf", "--nocompile", "--debug")
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: config.optim.lr")
    monkeypatch.setenv("GPT2JAX_DEBUG", "1")
    code, _, err = run(capsys, plan, f"--config={TINY}", "--config.optim.lr=inf", "--nocompile")
    assert code == 1 and "Traceback" in err


# -- prepare: data that cannot change underfoot -----------------------------------------------------
def test_prepare_again(capsys, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one two three four five six seven eight nine ten. " * 40)
    (src / "b.txt").write_text("alpha beta gamma delta. " * 60)
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, prepare, f"--source=text:{src}/*.txt", f"--out_dir={out}", "--val_fraction=0.5")
    assert code == 0 and "wrote" in stdout
    meta = json.loads((out / "meta.json").read_text())
    for split in ("train", "val"):
        blob = (out / f"{split}.bin").read_bytes()
        assert meta["splits"][split]["sha256"] == hashlib.sha256(blob).hexdigest()
        assert meta["splits"][split]["tokens"] == len(blob) // 2
    before = digest(out)
    # The same source and options: nothing to do (so `make quickstart` can run again).
    code, stdout, _ = run(capsys, prepare, f"--source=text:{src}/*.txt", f"--out_dir={out}", "--val_fraction=0.5")
    assert code == 0 and "nothing to do" in stdout and digest(out) == before
    # Other options or another source: refused, naming the directory and what differs.
    refused(run(capsys, prepare, f"--source=text:{src}/*.txt", f"--out_dir={out}", "--val_fraction=0.1"),
            str(out), "val_fraction 0.5 -> 0.1", "--overwrite")
    refused(run(capsys, prepare, f"--source=text:{src}/a.txt", f"--out_dir={out}", "--val_fraction=0.5"),
            str(out), "source")
    assert digest(out) == before
    # --overwrite builds beside and swaps; other files in the directory stay.
    (out / "NOTES.txt").write_text("mine")
    code, stdout, _ = run(capsys, prepare, f"--source=text:{src}/a.txt", f"--out_dir={out}", "--val_fraction=0.5",
                          "--overwrite")
    assert code == 0 and json.loads((out / "meta.json").read_text())["source"] == f"text:{src}/a.txt"
    assert (out / "NOTES.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]  # nothing half-built left beside it
    # A failed overwrite keeps the dataset as it was.
    before = digest(out)
    refused(run(capsys, prepare, "--source=text:/nonexistent/*.txt", f"--out_dir={out}", "--overwrite"),
            "/nonexistent/*.txt")
    assert digest(out) == before and sorted(os.listdir(tmp_path)) == ["out", "src"]
    # A directory with token files but no meta.json is not silently replaced either.
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train.bin").write_bytes(b"\0\0")
    refused(run(capsys, prepare, f"--source=text:{src}/a.txt", f"--out_dir={tmp_path / 'half'}"),
            str(tmp_path / "half"), "no meta.json")


def test_prepare_malformed_sources(capsys, tmp_path):
    bad = tmp_path / "docs.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "broken"\n')
    refused(run(capsys, prepare, f"--source=jsonl:{bad}", f"--out_dir={tmp_path / 'o'}"), f"{bad}:2", "invalid JSON")
    refused(run(capsys, prepare, f"--source=jsonl:{bad}:body", f"--out_dir={tmp_path / 'o'}"), f"{bad}:1", "'body'")
    refused(run(capsys, prepare, f"--source=text:{tmp_path}/none*.txt", f"--out_dir={tmp_path / 'o'}"), "none*.txt")
    refused(run(capsys, prepare, "--source=nosuchkind:x", f"--out_dir={tmp_path / 'o'}"), "nosuchkind")
    refused(run(capsys, prepare, "--source=shakespeare", f"--out_dir={tmp_path / 'o'}", "--val_fraction=1.5"),
            "val_fraction")
    refused(run(capsys, prepare, "--source=shakespeare"), "out_dir", rc=2)
    assert not (tmp_path / "o").exists()


# -- readers: only what they are given --------------------------------------------------------------
def test_readers_never_fall_back_to_a_parent(capsys, tmp_path, converted_run):
    fresh = converted_run / "new_run"  # an empty run dir inside a run that has checkpoints
    fresh.mkdir(exist_ok=True)
    before = digest(converted_run)
    refused(run(capsys, sample, f"--workdir={fresh}", "--max_new_tokens=2"), str(fresh), "no checkpoints in")
    refused(run(capsys, evaluate, f"--workdir={fresh}", "--tasks=lambada", f"--tasks_dir={ROOT / 'tests'}"),
            "lambada_test.jsonl")  # task files are checked first, before any model is loaded
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "lambada_test.jsonl").write_text(json.dumps({"text": "the cat sat on the mat"}) + "\n")
    refused(run(capsys, evaluate, f"--workdir={fresh}", "--tasks=lambada", f"--tasks_dir={tasks}",
                f"--out={tmp_path / 'r.json'}"), str(fresh))
    refused(run(capsys, convert, f"--workdir={fresh}", f"--to_hf={tmp_path / 'hf'}"), str(fresh))
    refused(run(capsys, sample, f"--workdir={tmp_path / 'nope'}"), str(tmp_path / "nope"), "does not exist")
    refused(run(capsys, sample, f"--workdir={converted_run}", "--step=7"), "step 7", "available: [0]")
    refused(run(capsys, sample), "--workdir", rc=2)
    refused(run(capsys, convert, f"--workdir={tmp_path / 'x'}", f"--from_hf={tmp_path / 'nohf'}"), "nohf")
    refused(run(capsys, convert, f"--workdir={converted_run}", f"--from_hf={tmp_path}"), "config.json")
    assert not (tmp_path / "hf").exists() and not (tmp_path / "r.json").exists()
    assert digest(converted_run) == before


def test_evaluate_task_mistakes(capsys, tmp_path, converted_run):
    last = refused(run(capsys, evaluate, f"--workdir={converted_run}", "--tasks=lambada,nope"), "'nope'")
    assert "known tasks: lambada" in last and "hellaswag" in last
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    good = json.dumps({"text": "the cat sat on the mat"})
    (tasks / "lambada_test.jsonl").write_text(good + "\n" + good[:-3] + "\n")
    (tasks / "hellaswag_val.jsonl").write_text(json.dumps({"ctx_a": "x"}) + "\n")
    out = tmp_path / "r.json"
    refused(run(capsys, evaluate, f"--workdir={converted_run}", "--tasks=lambada", f"--tasks_dir={tasks}",
                f"--out={out}"), f"{tasks / 'lambada_test.jsonl'}:2")
    refused(run(capsys, evaluate, f"--workdir={converted_run}", "--tasks=hellaswag", f"--tasks_dir={tasks}",
                f"--out={out}"), f"{tasks / 'hellaswag_val.jsonl'}:1", "'activity_label'")
    refused(run(capsys, evaluate, f"--workdir={converted_run}", "--tasks=piqa", f"--tasks_dir={tasks}"),
            "dev.jsonl", "dev-labels.lst")
    assert not out.exists()


# -- the writer lock --------------------------------------------------------------------------------
def _lock_file(d, **holder):
    d.mkdir(parents=True, exist_ok=True)
    (d / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": 1.0,
                                           **holder}))
    return d / LOCK_NAME


def test_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path, capsys):
    wd = tmp_path / "wd"
    live = _lock_file(wd, pid=os.getppid())  # a live process on this host
    with pytest.raises(LockError, match=rf"in use by another writer \(host {socket.gethostname()}, pid {os.getppid()}"):
        WorkdirLock([wd]).acquire()
    other = _lock_file(wd, host="elsewhere", pid=1)  # another host, fresh heartbeat: cannot judge its pid
    with pytest.raises(LockError, match="host elsewhere, pid 1"):
        WorkdirLock([wd]).acquire()
    old = time.time() - 700
    os.utime(other, (old, old))  # ... but its heartbeat is 11 minutes old: stale
    with WorkdirLock([wd]) as lock:
        assert "taking over the stale lock" in capsys.readouterr().err
        assert json.loads(live.read_text())["pid"] == os.getpid()
        with pytest.raises(LockError):  # even the same process cannot take it twice
            WorkdirLock([wd]).acquire()
    assert not live.exists() and lock._held == []
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock_file(wd, pid=dead.pid)  # a dead pid on this host: stale at once
    with WorkdirLock([wd, tmp_path / "ckpts", wd]):
        assert "no longer running" in capsys.readouterr().err
        assert (tmp_path / "ckpts" / LOCK_NAME).exists()
    # One directory refused: none is kept.
    _lock_file(tmp_path / "ckpts", pid=os.getppid())
    with pytest.raises(LockError):
        WorkdirLock([wd, tmp_path / "ckpts"]).acquire()
    assert not (wd / LOCK_NAME).exists()
    # Not process 0 of a multi-host run: no lock at all.
    with WorkdirLock([tmp_path / "p1"], enabled=False):
        assert not (tmp_path / "p1").exists()


def test_second_trainer_on_a_workdir_is_refused(tmp_path, data, cache):
    """Two real processes: the second is refused at once naming the first, which trains on and ends
    with its checkpoints intact; a reader (sample) works on the live run."""
    wd = tmp_path / "wd"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    cmd = [sys.executable, "-m", "gpt2jax.train", *train_args(wd, data, cache, "--config.train.num_steps=100000",
           "--config.train.log_every=1", "--config.checkpoint.every=5", "--config.train.eval_every=0")]
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        ck = wd / "checkpoints"
        while time.time() < deadline and not (ck.exists() and any(p.name.isdigit() for p in ck.iterdir())):
            assert first.poll() is None, first.stdout.read()[-3000:]
            time.sleep(0.2)
        run_json = (wd / "run.json").read_text()
        second = subprocess.run(cmd + ["--config.optim.lr=3e-3"], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
        refused((second.returncode, second.stdout, second.stderr), str(wd), f"pid {first.pid}", "in use")
        assert (wd / "run.json").read_text() == run_json
        reader = subprocess.run([sys.executable, "-m", "gpt2jax.sample", f"--workdir={wd}", "--max_new_tokens=3",
                                 "--temperature=0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
        assert reader.returncode == 0, reader.stderr[-3000:]
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out[-3000:]
    stopped = int(out.split("stop requested: saving step ")[1].split()[0])
    assert ckpt_lib.Checkpointer(wd, read_only=True).latest_step() == stopped
    assert not (wd / LOCK_NAME).exists()
