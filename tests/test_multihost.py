"""Multi-host pieces on one machine: two training processes on loopback (gloo CPU collectives, 4
devices each) against the single-process 8-device run, and the byte-range reader for token files in
a bucket (tested on fsspec's in-memory filesystem)."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import fsspec
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2jax import sharding as shd
from gpt2jax.data import loader
from gpt2jax.data.sources import DataNotFoundError
from gpt2jax.train import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 3

CONFIG = '''
from gpt2jax.config import get_config as base


def get_config():
    c = base()
    c.model.n_layer, c.model.n_embd, c.model.n_head, c.model.block_size = 2, 64, 4, 32
    c.model.vocab_size = 1000
    c.data.dir = {data!r}
    c.train.num_steps, c.train.batch_size, c.train.seed = {steps}, 8, 0
    c.train.log_every, c.train.eval_every, c.train.eval_batches = 1, 0, 1
    c.train.compile_cache = ""
    c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 1e-2, 1e-3, 0
    c.checkpoint.every, c.checkpoint.keep = 0, 1
    c.checkpoint.dir = {ckpt!r}  # shared by both processes (a bucket on a real slice)
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 2
    return c
'''


def write_tokens(d: pathlib.Path, n=20_000, vocab=1000, used=64) -> str:
    rng = np.random.default_rng(0)
    ids = rng.choice(vocab, used, replace=False)
    succ = rng.permutation(used)
    x = np.zeros(n, np.int64)
    noise, rand = rng.random(n) < 0.1, rng.integers(0, used, n)
    for i in range(1, n):
        x[i] = rand[i] if noise[i] else succ[x[i - 1]]
    d.mkdir(parents=True, exist_ok=True)
    meta = {"dtype": "uint16", "splits": {}}
    for split, t in (("train", ids[x]), ("val", ids[x[::-1]])):
        t = t.astype(np.uint16)
        t.tofile(d / f"{split}.bin")
        meta["splits"][split] = {"documents": 1, "tokens": len(t), "max_token_id": int(t.max())}
    (d / "meta.json").write_text(json.dumps(meta))
    return str(d)


def load_config(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("mh_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multihost")
    data = write_tokens(tmp / "data")
    cfg_path = tmp / "mh_config.py"
    cfg_path.write_text(CONFIG.format(data=data, steps=STEPS, ckpt=str(tmp / "shared")))
    return tmp, cfg_path


def test_two_processes_match_one(setup):
    tmp, cfg_path = setup
    workdir = tmp / "run"
    port = free_port()
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",  # each process: 4 CPU devices
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable, "-m", "gpt2jax.train", f"--config={cfg_path}", f"--workdir={workdir}",
                f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
            ],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}:\n{out[-2000:]}\n{err[-6000:]}"
        assert f"process {i}/2: 4 local of 8 devices (cpu)" in out

    # The same run in this process on 8 devices (same mesh 2x2x2, same global batches).
    config = load_config(cfg_path)
    tr = Trainer(config, shd.make_mesh(config.mesh))
    assert tr.batch_slice == (0, 1)
    params, opt = tr.init_state(config.train.seed)
    ds = loader.TokenDataset(config.data.dir, "train", 32, 1000)
    ref = []
    for s in range(STEPS):
        batch = tr.global_batch(loader.train_batch(ds, s, 8, config.train.seed))
        params, opt, o = tr.train_step(params, opt, batch, jnp.int32(s))
        ref.append(float(o["loss"]))

    # Logging from process 0 only: one metrics file, one row per step.
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, STEPS + 1))
    assert losses[0] == pytest.approx(ref[0], rel=1e-5)
    np.testing.assert_allclose(losses[1:], ref[1:], rtol=1e-4)

    # The checkpoint written by both processes restores whole, equal to the 8-device parameters
    # (to 1e-3 of each array's scale: Adam moves entries with ~0 gradients by ~lr either way, so
    # those are not bit-comparable after 3 steps; a missing or misplaced shard is off by O(1)).
    from gpt2jax.checkpoint import load_params

    assert not (workdir / "checkpoints").exists()
    _, saved = load_params(tmp / "shared")
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(params)):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3 * np.abs(b).max())


def test_process_rows_follow_the_batch_sharding():
    """Which rows each of two would-be processes (devices 0-3, 4-7) loads, from the batch sharding.
    With tensor parallelism across all 8 devices every device holds every row: each process must
    load the whole batch, not half of it."""
    from jax.sharding import NamedSharding, PartitionSpec as P

    halves = [jax.devices()[:4], jax.devices()[4:]]
    for mesh_shape, want in (((2, 2, 2), [(0, 2), (1, 2)]), ((1, 2, 4), [(0, 2), (1, 2)]),
                             ((8, 1, 1), [(0, 2), (1, 2)]), ((1, 1, 8), [(0, 1), (0, 1)])):
        mesh = jax.make_mesh(mesh_shape, shd.AXES, devices=jax.devices())
        sharding = NamedSharding(mesh, P(("data", "fsdp"), None))
        got = [shd.process_batch_slice(sharding, (8, 33), devices=d) for d in halves]
        assert got == want, mesh_shape
    # Rows a process holds that are not one block are refused rather than loaded wrongly.
    mesh = jax.make_mesh((2, 4, 1), shd.AXES, devices=jax.devices())
    sharding = NamedSharding(mesh, P(("fsdp", "data"), None))  # fsdp-major: devices 0-3 interleave
    with pytest.raises(Exception, match="non-contiguous"):
        shd.process_batch_slice(sharding, (8, 33), devices=halves[0])


# ---------------------------------------------------------------------- remote token files
@pytest.fixture
def memfs_data(tmp_path):
    """The same prepared split locally and on fsspec's in-memory filesystem."""
    local = tmp_path / "local"
    local.mkdir()
    tokens = (np.arange(8 * 500 + 3) * 7 % 50000).astype(np.uint16)
    tokens.tofile(local / "train.bin")
    meta = {"dtype": "uint16", "splits": {"train": {"documents": 1, "tokens": len(tokens),
                                                    "max_token_id": int(tokens.max())}}}
    (local / "meta.json").write_text(json.dumps(meta))
    fs = fsspec.filesystem("memory")
    root = f"/gpt2jax-test-{os.getpid()}-{tmp_path.name}"
    fs.pipe(f"{root}/train.bin", tokens.tobytes())
    fs.pipe(f"{root}/meta.json", json.dumps(meta).encode())
    yield str(local), f"memory://{root}", fs
    fs.rm(root, recursive=True)


def test_remote_reader_reads_byte_ranges_only(memfs_data, monkeypatch):
    local, remote, fs = memfs_data
    mm = loader.TokenDataset(local, "train", 8)
    rd = loader.TokenDataset(remote, "train", 8)
    assert isinstance(mm.tokens, np.memmap) and rd.tokens is None  # local mmap, remote no copy
    assert (rd.num_tokens, rd.num_windows) == (mm.num_tokens, mm.num_windows)

    # Count what the remote reader fetches; a read without a byte range fails the test.
    fetched = []
    cls = type(fs)
    orig = cls.cat_file

    def counting(self, path, start=None, end=None, **k):
        assert start is not None and end is not None, "whole-file read"
        fetched.append(end - start)
        return orig(self, path, start, end, **k)

    monkeypatch.setattr(cls, "cat_file", counting)
    for step in (0, 3, 125):  # 125 x 4 rows crosses into the second epoch
        for p in range(2):
            a = loader.train_batch(mm, step, 4, 1, process_index=p, process_count=2)
            b = loader.train_batch(rd, step, 4, 1, process_index=p, process_count=2)
            assert b.dtype == np.int32
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loader.eval_batch(mm, 7, 16), loader.eval_batch(rd, 7, 16))
    # Each process fetched only its own rows: one range of (seq_len + 1) tokens per window.
    assert fetched and set(fetched) == {2 * 9} and len(fetched) == 3 * 2 * 2 + 16


def test_remote_reader_errors(memfs_data):
    _, remote, fs = memfs_data
    with pytest.raises(DataNotFoundError, match="val.bin"):
        loader.TokenDataset(remote, "val", 8)
    with pytest.raises(DataNotFoundError, match="meta.json"):
        loader.TokenDataset(remote + "-missing", "train", 8)
    fs.pipe(remote.removeprefix("memory://") + "/train.bin", b"\0" * 11)
    with pytest.raises(Exception, match="11 bytes is not a whole number"):
        loader.TokenDataset(remote, "train", 8)


def test_file_url_is_memory_mapped(memfs_data):
    local, _, _ = memfs_data
    ds = loader.TokenDataset("file://" + local, "train", 8)
    assert isinstance(ds.tokens, np.memmap)
