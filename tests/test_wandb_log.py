"""Weights & Biases logging (gpt2jax/wandb_log.py), in offline mode (no network).

What a run sent is read back from W&B's own offline transaction log (WORKDIR/wandb/offline-run-*/
run-ID.wandb): a LevelDB-style log of protobuf `Record`s, parsed here with W&B's protobuf classes."""

from __future__ import annotations

import functools
import glob
import json
import os
import struct
import sys
import time

import pytest

wandb = pytest.importorskip("wandb", reason="wandb not installed (pip install -e '.[wandb]')")
from wandb.proto import wandb_internal_pb2 as pb  # noqa: E402

from gpt2jax import config as config_lib  # noqa: E402
from gpt2jax import wandb_log  # noqa: E402

os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_MODE", None)


def _records(path):
    """Protobuf payloads of a .wandb file: a 7-byte header, then 32 KiB blocks of records, each with
    a 7-byte header (crc32, little-endian length, type: 1 full, 2 first, 3 middle, 4 last)."""
    with open(path, "rb") as f:
        data = f.read()
    pos, part, block = 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0:  # zero padding to the end of a block
            pos += left - 7
            continue
        chunk, pos = data[pos : pos + n], pos + n
        if kind == 1:
            yield chunk
        elif kind == 2:
            part = chunk
        elif kind == 3:
            part += chunk
        elif kind == 4:
            yield part + chunk


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _parsed(path: str, timeout_s: float = 60.0) -> list:
    """The file's records once W&B's service has written the run's exit record (it writes the log
    asynchronously, after `finish()` returns)."""
    t0 = time.monotonic()
    while True:
        recs = []
        for payload in _records(path):
            r = pb.Record()
            r.ParseFromString(payload)
            recs.append(r)
        if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.monotonic() - t0 > timeout_s:
            return recs
        time.sleep(0.1)


def read_offline_run(run_dir: str) -> dict:
    """{'id', 'project', 'tags', 'config': {key: value}, 'history': [row], 'files': [path]}."""
    (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    out = {"history": [], "files": [], "config": {}}
    for r in _parsed(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(id=r.run.run_id, project=r.run.project, tags=list(r.run.tags))
            out["config"].update({_key(i): json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in r.history.item}
            out["history"].append({k: v for k, v in row.items() if not k.startswith("_")})
        elif kind == "files":
            out["files"] += [f.path for f in r.files.files]
    return out


def offline_runs(base: str) -> list[str]:
    return sorted(glob.glob(os.path.join(base, "wandb", "offline-run-*")))


def wandb_config(project="gpt2jax-test", **kw):
    c = config_lib.get_config()
    c.train.wandb.project = project
    c.train.wandb.mode = "offline"
    for k, v in kw.items():
        c.train.wandb[k] = v
    return c


def test_writer_offline_rows_config_run_json_and_resume(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_DIR", raising=False)
    c = wandb_config(tags="a, b", name="first")
    workdir = str(tmp_path / "run")
    ids = []
    for start in (0, 1):  # a start, then a resume of the same workdir
        info = {"config": config_lib.to_dict(c), "params": 123}
        w = wandb_log.start(c, workdir, info, is_main=True)
        with open(os.path.join(workdir, "run.json"), "w") as f:
            json.dump(info, f)
        w.log_run_json(os.path.join(workdir, "run.json"))
        w.write({"step": 10 * start + 5, "loss": 2.5 - start, "mfu": None, "lr": float("nan")})
        w.write({"step": 10 * start + 5, "eval/lambada/acc": 0.25 * (start + 1)})
        w.close()
        ids.append(info["wandb"]["id"])
        assert info["wandb"]["dir"] == os.path.join(workdir, "wandb") and info["wandb"]["mode"] == "offline"
    assert ids[0] == ids[1]
    with open(os.path.join(workdir, "run.json")) as f:
        assert json.load(f)["wandb"]["id"] == ids[0]
    runs = offline_runs(workdir)
    assert len(runs) == 2 and all(r.endswith("-" + ids[0]) for r in runs)
    for start, r in enumerate(runs):
        got = read_offline_run(r)
        assert got["id"] == ids[0] and got["project"] == "gpt2jax-test" and got["tags"] == ["a", "b"]
        assert got["history"] == [
            {"step": 10 * start + 5, "loss": 2.5 - start},  # None / NaN left out
            {"step": 10 * start + 5, "eval/lambada/acc": 0.25 * (start + 1)},
        ]
        assert got["config"]["model"]["n_layer"] == c.model.n_layer
        assert got["config"]["train"]["wandb"]["project"] == "gpt2jax-test"
        assert got["config"]["run"] == {"params": 123}
        assert "run.json" in got["files"]


def test_wandb_dir_and_only_process_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    c = wandb_config()
    assert wandb_log.start(c, str(tmp_path / "w1"), {}, is_main=False) is None
    assert not (tmp_path / "elsewhere").exists()
    info = {"config": config_lib.to_dict(c)}
    w = wandb_log.start(c, str(tmp_path / "w2"), info, is_main=True)
    w.write({"step": 1, "loss": 1.0})
    w.close()
    assert len(offline_runs(str(tmp_path / "elsewhere"))) == 1
    assert not (tmp_path / "w2" / "wandb").exists()
    assert wandb_log.start(config_lib.get_config(), str(tmp_path / "w3"), {}, is_main=True) is None  # no project


def test_config_errors_and_missing_package(tmp_path, monkeypatch):
    c = wandb_config(mode="sometimes")
    with pytest.raises(config_lib.ConfigError, match=r"config\.train\.wandb\.mode"):
        wandb_log.check(c)
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(wandb_log.WandbMissing, match=r"train\.wandb\.project='gpt2jax-test'.*pip install -e '\.\[wandb\]'"):
        wandb_log.check(wandb_config())
    wandb_log.check(config_lib.get_config())  # off: wandb not needed


def test_config_round_trip_with_nested_wandb():
    c = wandb_config(tags="x", entity="team")
    d = config_lib.to_dict(c)
    assert d["train"]["wandb"] == {"project": "gpt2jax-test", "entity": "team", "name": "", "mode": "offline", "tags": "x"}
    assert config_lib.to_dict(config_lib.from_dict(d)) == d
    old = config_lib.to_dict(config_lib.get_config())
    del old["train"]["wandb"]  # a checkpoint written before the section existed
    assert config_lib.from_dict(old).train.wandb.project == ""
    d["train"]["wandb"] = {"project": "p"}  # a partial section keeps the other defaults
    assert config_lib.from_dict(d).train.wandb.mode == ""
    d["train"]["wandb"] = {"projekt": "p"}
    with pytest.raises(config_lib.ConfigError, match=r"config\.train\.wandb\.projekt: unknown field"):
        config_lib.from_dict(d)


def test_training_run_logs_its_rows_and_resume_continues_the_run(shakespeare_dir, tmp_path, monkeypatch):
    """A tiny run (zero-shot task included) stopped at step 2 and resumed to 4, W&B offline: both
    starts log to one W&B run id (kept in run.json), together exactly the rows of metrics.jsonl; the
    zero-shot task's batches are sharded over the training mesh as evaluate shards them."""
    import importlib.util

    from gpt2jax import train as train_lib
    from gpt2jax.eval import tasks as eval_tasks

    monkeypatch.delenv("WANDB_DIR", raising=False)
    spec = importlib.util.spec_from_file_location("tiny", os.path.join(os.path.dirname(__file__), "..", "configs", "tiny.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    c.data.dir = str(shakespeare_dir)
    c.train.compile_cache = str(tmp_path / "xla")
    c.train.num_steps, c.train.log_every, c.train.eval_every, c.train.eval_batches = 4, 2, 2, 1
    c.train.stop_after = 2
    c.checkpoint.every = 0  # saved where it stops (step 2) and at the end
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "lambada_test.jsonl").write_text(json.dumps({"text": "The king said that he would see the queen"}) + "\n")
    c.eval.tasks, c.eval.tasks_dir, c.eval.every, c.eval.batch_size = "lambada", str(tasks), 2, 3
    c.train.wandb.project, c.train.wandb.mode = "gpt2jax-test", "offline"
    seen = []
    real = eval_tasks.evaluate_tasks

    def spy(*a, **k):
        seen.append((k.get("batch_size"), k.get("batch_sharding")))
        return real(*a, **k)

    monkeypatch.setattr(eval_tasks, "evaluate_tasks", spy)
    wd = tmp_path / "wd"
    train_lib.train(c, str(wd), progress=False)
    first_id = json.loads((wd / "run.json").read_text())["wandb"]["id"]
    c.train.stop_after = 0
    train_lib.train(c, str(wd), progress=False)  # resumes from step 2
    info = json.loads((wd / "run.json").read_text())
    assert info["wandb"]["id"] == first_id and info["wandb"]["dir"] == str(wd / "wandb")
    runs = offline_runs(str(wd))
    assert len(runs) == 2 and all(r.endswith("-" + first_id) for r in runs)
    logged = [row for r in runs for row in read_offline_run(r)["history"]]
    rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    expect = [{k: v for k, v in row.items() if v is not None} for row in rows]
    key = functools.partial(json.dumps, sort_keys=True)
    assert sorted(logged, key=key) == sorted(expect, key=key)
    assert {r["step"] for r in logged if "eval/lambada/acc" in r} == {2, 4}
    assert {r["step"] for r in logged if "val_loss" in r} == {2, 4}
    got = read_offline_run(runs[1])
    assert got["config"]["train"]["num_steps"] == 4 and got["config"]["run"]["params"] == info["params"]
    assert "run.json" in got["files"]
    assert len(seen) == 2
    for batch_size, sharding in seen:
        assert sharding is not None and sharding.mesh.size == 8 and batch_size == 8  # 3 rounded up to 8 devices
