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


SEEN: list = []  # (test, exit status, error line) of every refusal, for docs/fault_tolerance.md


@pytest.fixture(scope="module", autouse=True)
def _log_refusals():
    """GPT2JAX_MISUSE_LOG=FILE: write every refusal of the run there (JSON lines)."""
    yield
    if os.environ.get("GPT2JAX_MISUSE_LOG"):
        with open(os.environ["GPT2JAX_MISUSE_LOG"], "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in SEEN)


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
    SEEN.append((os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], code, last))
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
    # A meta.json written before options were recorded (an older version's): same fields, same answer.
    meta_path = out / "meta.json"
    original = meta_path.read_bytes()
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "options"}))
    legacy = digest(out)
    code, stdout, _ = run(capsys, prepare, f"--source=text:{src}/*.txt", f"--out_dir={out}", "--val_fraction=0.5")
    assert code == 0 and "nothing to do" in stdout and digest(out) == legacy
    refused(run(capsys, prepare, f"--source=text:{src}/*.txt", f"--out_dir={out}", "--val_fraction=0.1"),
            str(out), "val_fraction 0.5 -> 0.1")
    meta_path.write_bytes(original)
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
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "XLA_FLAGS": ""}
    cmd = [sys.executable, "-m", "gpt2jax.train", *train_args(wd, data, cache, "--config.train.num_steps=100000",
           "--config.train.log_every=1", "--config.checkpoint.every=5", "--config.train.eval_every=0")]
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 600  # generous: a loaded 2-core machine compiles slowly
        ck = wd / "checkpoints"
        while time.time() < deadline and not (ck.exists() and any(p.name.isdigit() for p in ck.iterdir())):
            assert first.poll() is None, first.stdout.read()[-3000:]
            time.sleep(0.2)
        run_json = (wd / "run.json").read_text()
        second = subprocess.run(cmd + ["--config.optim.lr=3e-3"], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=600)
        refused((second.returncode, second.stdout, second.stderr), str(wd), f"pid {first.pid}", "in use")
        assert (wd / "run.json").read_text() == run_json
        reader = subprocess.run([sys.executable, "-m", "gpt2jax.sample", f"--workdir={wd}", "--max_new_tokens=3",
                                 "--temperature=0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert reader.returncode == 0, reader.stderr[-3000:]
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out[-3000:]
    stopped = int(out.split("stop requested: saving step ")[1].split()[0])
    assert ckpt_lib.Checkpointer(wd, read_only=True).latest_step() == stopped
    assert not (wd / LOCK_NAME).exists()


# -- train: data and runs ---------------------------------------------------------------------------
def test_train_refuses_bad_data_naming_the_file(capsys, tmp_path, data, cache):
    before = digest(data)
    meta = json.loads((data / "meta.json").read_text())
    n = meta["splits"]["train"]["tokens"]
    no_meta = copy_data(data, tmp_path / "no_meta")
    (no_meta / "meta.json").unlink()
    cases = {
        "missing meta.json": (no_meta, "meta.json"),
        "garbage meta.json": (copy_data(data, tmp_path / "garbage", meta="{not json"), "meta.json"),
        "meta.json of something else": (copy_data(data, tmp_path / "other", meta=[1, 2]), "meta.json"),
        "empty train.bin": (copy_data(data, tmp_path / "empty", train_bytes=b""), "train.bin: the file is empty"),
        "odd-sized train.bin": (copy_data(data, tmp_path / "odd", train_bytes=(data / "train.bin").read_bytes() + b"\0"),
                                "not a whole number"),
        "train.bin shorter than meta.json says": (
            copy_data(data, tmp_path / "short", train_bytes=(data / "train.bin").read_bytes()[:-64]), "truncated"),
        "smaller than one batch": (
            copy_data(data, tmp_path / "small", tokens=np.arange(200),
                      meta={**meta, "splits": {**meta["splits"], "train": {"tokens": 200, "max_token_id": 199}}}),
            "fewer than one batch of 8"),
    }
    for name, (d, what) in cases.items():
        wd = tmp_path / f"wd_{name.replace(' ', '_')}"
        last = refused(run(capsys, train_lib, *train_args(wd, d, cache)), what)
        assert str(d) in last, (name, last)
        assert not (wd / "checkpoints").exists(), name
    # Ids >= vocab_size under a meta.json that claims otherwise: the batch that reads them says where.
    bad = copy_data(data, tmp_path / "ids", tokens=np.full(n, 60000))
    wd = tmp_path / "wd_ids"
    refused(run(capsys, train_lib, *train_args(wd, bad, cache)), str(bad / "train.bin"), "token id 60000 at token offset")
    assert ckpt_lib.Checkpointer(wd, read_only=True).all_steps() == []
    assert digest(data) == before


def _rows(wd):
    return [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]


def test_resume_refuses_changed_data(capsys, tmp_path, data, cache):
    d = copy_data(data, tmp_path / "data")
    wd = tmp_path / "wd"
    args = train_args(wd, d, cache, "--config.train.num_steps=4", "--config.train.stop_after=2",
                      "--config.train.eval_every=0", "--config.train.eval_batches=1")
    assert run(capsys, train_lib, *args)[0] == 0
    sha = json.loads((d / "meta.json").read_text())["splits"]["train"]["sha256"]
    assert json.loads((wd / "run.json").read_text())["data"]["train"]["sha256"] == sha
    assert ckpt_lib.Checkpointer(wd, read_only=True).read_meta(2)["data"]["train"]["sha256"] == sha
    # The corpus is prepared again (another source) under the same data.dir: the resume is refused.
    src = tmp_path / "other.txt"
    src.write_text("a completely different corpus. " * 900)
    from gpt2jax.data.prepare import prepare as prep

    prep(f"text:{src}", str(d), progress=False, overwrite=True)
    new_sha = json.loads((d / "meta.json").read_text())["splits"]["train"]["sha256"]
    before = digest(wd)
    refused(run(capsys, train_lib, *args[:-3]), f"{wd / 'checkpoints'}/2", "the data changed",
            f"train sha256 {sha} -> {new_sha}")
    assert digest(wd) == before
    # Data prepared before meta.json held hashes: one warning, and the run records them.
    legacy = copy_data(data, tmp_path / "legacy")
    meta = json.loads((legacy / "meta.json").read_text())
    for split in meta["splits"].values():
        del split["sha256"]
    (legacy / "meta.json").write_text(json.dumps(meta))
    from gpt2jax.data import loader

    ident = loader.data_identity(*(loader.TokenDataset(legacy, s, 32) for s in ("train", "val")))
    assert capsys.readouterr().out.count("records no sha256") == 1
    assert ident["train"]["sha256"] == sha and ident["train"]["tokens"] == meta["splits"]["train"]["tokens"]


def test_loss_diverging_is_flagged_once(capsys, tmp_path, data, cache):
    wd = tmp_path / "wd"
    code, out, err = run(capsys, train_lib, *train_args(
        wd, data, cache, "--config.optim.lr=10", "--config.optim.min_lr=10", "--config.optim.warmup_steps=0",
        "--config.train.num_steps=12", "--config.train.log_every=1", "--config.train.eval_every=0",
        "--config.train.eval_batches=1", "--config.train.nonfinite=skip"))
    assert code == 0, err[-3000:]
    rows = [r for r in _rows(wd) if "loss" in r]
    flagged = [r for r in rows if r.get("warning") == "loss_diverging"]
    assert len(flagged) == 1 and out.count("WARNING: the loss is diverging") == 1
    first = rows[0]["loss"]
    assert flagged[0]["loss"] > 2 * first
    assert all(r["loss"] is None or r["loss"] <= 2 * first for r in rows if r["step"] < flagged[0]["step"])


def test_disk_full_during_a_save_names_the_last_intact_checkpoint(capsys, tmp_path, data, cache, monkeypatch):
    import orbax.checkpoint as ocp

    real_save = ocp.CheckpointManager.save

    def save(self, step, *a, **k):
        if step == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.directory / "4"))
        return real_save(self, step, *a, **k)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    wd = tmp_path / "wd"
    args = train_args(wd, data, cache, "--config.train.num_steps=6", "--config.checkpoint.every=2",
                      "--config.train.eval_every=0", "--config.train.eval_batches=1")
    refused(run(capsys, train_lib, *args), "disk full", f"last intact checkpoint is step 2 ({wd / 'checkpoints' / '2'})")
    assert ckpt_lib.Checkpointer(wd, read_only=True).all_steps() == [2]
    assert not (wd / LOCK_NAME).exists()


def test_ctrl_c_during_evaluation_stops_within_a_batch_and_saves(capsys, tmp_path, data, cache, monkeypatch):
    from gpt2jax.eval import scoring

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "home"]
    lines = [json.dumps({"text": " ".join(rng.choice(words, 12))}) for _ in range(160)]
    (tasks / "lambada_test.jsonl").write_text("\n".join(lines) + "\n")
    calls = []
    real = scoring._cached_fn

    def cached_fn(key, cfg):
        fn = real(key, cfg)

        def counted(*a):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of 20 batches
            return fn(*a)

        return counted

    monkeypatch.setattr(scoring, "_cached_fn", cached_fn)
    wd = tmp_path / "wd"
    code, out, err = run(capsys, train_lib, *train_args(
        wd, data, cache, "--config.train.num_steps=4", "--config.train.eval_every=0", "--config.train.eval_batches=1",
        "--config.eval.tasks=lambada", f"--config.eval.tasks_dir={tasks}", "--config.eval.every=2",
        "--config.eval.batch_size=8"))
    assert code == 0, err[-3000:]
    assert len(calls) <= 4 and "evaluation interrupted" in out and "stop requested: saving step 2" in out
    assert ckpt_lib.Checkpointer(wd, read_only=True).all_steps() == [2]
    assert not any(k.startswith("eval/") for r in _rows(wd) for k in r)


def test_ctrl_c_in_evaluate_keeps_the_finished_tasks(capsys, tmp_path, converted_run, monkeypatch):
    from gpt2jax.eval import tasks as T

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "lambada_test.jsonl").write_text(json.dumps({"text": "the cat sat"}) + "\n")
    (tasks / "hellaswag_val.jsonl").write_text("{}\n")

    def run_task(scorer, name, tasks_dir, limit=None, **kw):
        if name == "hellaswag":
            raise KeyboardInterrupt  # Ctrl-C while the second task is scored
        return {"acc": 0.5, "n": 1}

    monkeypatch.setattr(T, "run_task", run_task)
    out = tmp_path / "r.json"
    refused(run(capsys, evaluate, f"--workdir={converted_run}", "--tasks=lambada,hellaswag", f"--tasks_dir={tasks}",
                f"--out={out}", "--noprogress"), "interrupted", rc=130)
    assert json.loads(out.read_text()) == {"lambada": {"acc": 0.5, "n": 1}}


def test_a_second_ctrl_c_stops_at_once():
    # Start from Python's own SIGINT handler whatever earlier tests (or imported libraries) installed.
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with train_lib.StopFlag() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 5
            while not stop.requested and time.monotonic() < deadline:
                time.sleep(0.01)  # the handler runs in the main thread at the next check
            assert stop.requested  # the first: finish the step, save, exit
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the handler runs here
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored on exit
    finally:
        signal.signal(signal.SIGINT, outer)
