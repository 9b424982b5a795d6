"""Checkpoints: retention, restore onto other meshes, resume rules, exact resume, non-finite steps and
bad input caught before anything compiles (in-process, 8 simulated CPU devices)."""

import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gpt2jax import checkpoint as ckpt_lib
from gpt2jax import config as config_lib
from gpt2jax.errors import NonFiniteError
from gpt2jax import sharding as shd
from gpt2jax import train as train_lib
from gpt2jax.data import loader
from gpt2jax.data.sources import DataError
from gpt2jax.model import abstract_params
from gpt2jax.train import Trainer, train

from conftest import tiny_config

# Every XLA compilation in this process, by function name (the bad-input tests expect none).
COMPILED: list = []


def _on_event(event, _secs, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILED.append(kw.get("fun_name"))


jax.monitoring.register_event_duration_secs_listener(_on_event)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("xla_cache_ckpt")


def cfg(data_dir, cache_dir, **kw):
    c = tiny_config(data_dir, cache_dir, **kw)
    return c


def as_numpy(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def bitwise_equal(a, b) -> bool:
    return all(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
               for x, y in zip(as_numpy(a), as_numpy(b)))


def losses(wd):
    rows = [json.loads(x) for x in (pathlib.Path(wd) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in rows if "loss" in r]


# -- retention ------------------------------------------------------------------------------------
def test_keeps_the_latest_n_plus_every_kth(tmp_path):
    ck = ckpt_lib.Checkpointer(tmp_path, keep=2, keep_every=4)
    x = {"w": jnp.arange(4.0)}
    for s in range(1, 11):
        ck.save(s, x, None, {"step": s}, force=True)
    ck.close()
    assert ckpt_lib.Checkpointer(tmp_path, read_only=True).all_steps() == [4, 8, 9, 10]
    ck = ckpt_lib.Checkpointer(tmp_path, keep=2, keep_every=0)  # keep_every off: only the latest 2
    ck.save(11, x, None, {"step": 11}, force=True)
    ck.close()
    assert ckpt_lib.Checkpointer(tmp_path, read_only=True).all_steps() == [10, 11]


def test_reader_of_a_live_run_reads_the_new_latest_when_its_step_is_cleaned_up(tmp_path):
    """The writer keeps 2; between a reader's listing and its read, the writer saves twice more and
    deletes the step the reader chose. The reader reads the new latest instead of failing; a step
    that is still there and still the latest but unreadable is an error, not a retry."""
    writer = ckpt_lib.Checkpointer(tmp_path, keep=2, async_save=False)
    x = lambda s: {"w": jnp.full((4,), float(s))}
    for s in (1, 2):
        writer.save(s, x(s), None, {"step": s}, force=True)
    reader = ckpt_lib.Checkpointer(tmp_path, read_only=True)
    abstract = {"w": jax.ShapeDtypeStruct((4,), jnp.float32)}
    tried = []

    def read(step):
        tried.append(step)
        if len(tried) == 1:  # the writer moves on while this reader is starting up
            for s in (3, 4):
                writer.save(s, x(s), None, {"step": s}, force=True)
            assert not (tmp_path / "checkpoints" / str(step)).exists()
        return reader.restore(step, abstract)[0]

    out = reader.pinned(None, read)
    assert tried == [2, 4] and float(out["w"][0]) == 4.0
    writer.close()
    (tmp_path / "checkpoints" / "4" / "params").rename(tmp_path / "moved")  # latest, present, unreadable
    reader.manager.reload()
    with pytest.raises(ckpt_lib.CorruptCheckpointError, match="/4"):
        reader.pinned(None, lambda step: reader.restore(step, abstract))


def test_reader_lists_the_steps_again_when_one_vanishes_while_listed(tmp_path, monkeypatch):
    """Orbax reads each step directory's metadata while listing them (opening a manager, reload); the
    writer's clean-up can remove one in between, and the listing raises FileNotFoundError naming it (seen
    as `sample` failing on a live run). Opening a reader and pinned's reload list again instead."""
    writer = ckpt_lib.Checkpointer(tmp_path, keep=2, async_save=False)
    for s in (1, 2):
        writer.save(s, {"w": jnp.full((4,), float(s))}, None, {"step": s}, force=True)
    writer.close()
    real = ocp.CheckpointManager._load_checkpoint_infos
    fails = {"left": 0}

    def flaky(self, *a, **k):
        if fails["left"]:
            fails["left"] -= 1
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "checkpoints" / "1"))
        return real(self, *a, **k)

    monkeypatch.setattr(ocp.CheckpointManager, "_load_checkpoint_infos", flaky)
    fails["left"] = 2  # the first two listings meet a vanishing step
    reader = ckpt_lib.Checkpointer(tmp_path, read_only=True)
    assert reader.all_steps() == [1, 2]
    calls = []

    def read(step):
        calls.append(step)
        if len(calls) == 1:
            fails["left"] = 1  # pinned's reload after this failure meets one too
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "checkpoints" / str(step)))
        return ckpt_lib.Checkpointer(tmp_path, read_only=True).read_meta(step)

    assert reader.pinned(None, read)["step"] == 2 and calls == [2, 2]
    fails["left"] = ckpt_lib._READER_TRIES  # a directory that never lists is still an error
    with pytest.raises(FileNotFoundError):
        ckpt_lib.Checkpointer(tmp_path, read_only=True)


# -- restore onto another mesh --------------------------------------------------------------------
def test_restore_fsdp8_checkpoint_on_one_device_and_2x2x2_bitwise(shakespeare_dir, cache_dir, tmp_path):
    c8 = cfg(shakespeare_dir, cache_dir, mesh__data=1, mesh__fsdp=8)
    tr8 = Trainer(c8)
    params, opt_state = tr8.init_state(0)
    # Non-zero optimizer moments, so that their restore is tested too.
    opt_state = jax.tree.map(lambda x: x + jnp.asarray(0.25, x.dtype) if x.ndim else x, opt_state)
    assert "fsdp" in str(params["wte"].sharding.spec)  # really sharded over the 8 devices
    ck = ckpt_lib.Checkpointer(tmp_path)
    ck.save(1, params, opt_state, ckpt_lib.make_meta(1, c8, params), force=True)
    ck.close()

    targets = {
        "1 device": (cfg(shakespeare_dir, cache_dir), jax.devices()[:1]),
        "2x2x2": (cfg(shakespeare_dir, cache_dir, mesh__data=2, mesh__fsdp=2, mesh__tensor=2), None),
    }
    for name, (c, devices) in targets.items():
        tr = Trainer(c, mesh=shd.make_mesh(c.mesh, devices=devices))
        p, o, meta = ckpt_lib.Checkpointer(tmp_path, read_only=True).restore(1, tr.abstract_params, tr.abstract_opt_state)
        assert meta["step"] == 1
        for got, want in zip(jax.tree.leaves(p) + jax.tree.leaves(o),
                             jax.tree.leaves(tr.abstract_params) + jax.tree.leaves(tr.abstract_opt_state)):
            assert got.sharding.is_equivalent_to(want.sharding, got.ndim), name
        assert len(p["wte"].sharding.device_set) == (1 if name == "1 device" else 8)
        assert bitwise_equal(p, params) and bitwise_equal(o, opt_state), name

    # One flipped bit in an array file: Orbax would restore it silently; the fingerprints refuse.
    f = max((q for q in (tmp_path / "checkpoints" / "1" / "params").rglob("*") if q.is_file() and "/d/" in str(q)),
            key=lambda q: q.stat().st_size)
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 1
    f.write_bytes(bytes(b))
    with pytest.raises(ckpt_lib.CorruptCheckpointError, match="does not match the fingerprint"):
        ckpt_lib.Checkpointer(tmp_path, read_only=True).restore(1, tr.abstract_params)


# -- resume rules ---------------------------------------------------------------------------------
ALLOWED = [("train", "num_steps", 99), ("train", "log_every", 7), ("train", "eval_every", 3),
           ("train", "eval_batches", 5), ("train", "stop_after", 4), ("train", "nonfinite", "skip"),
           ("train", "compile_cache", ""), ("checkpoint", "every", 3), ("checkpoint", "keep", 9),
           ("checkpoint", "keep_every", 10), ("mesh", "fsdp", 2), ("mesh", "data", 4)]
REFUSED = [("model", "n_embd", 128), ("model", "dropout", 0.1), ("model", "vocab_size", 50304),
           ("optim", "lr", 1e-2), ("optim", "accum_steps", 2), ("optim", "weight_decay", 0.0),
           ("data", "dir", "/elsewhere"), ("train", "batch_size", 16), ("train", "seq_len", 16),
           ("train", "seed", 1)]


def test_resume_config_rules(tmp_path):
    saved = config_lib.to_dict(tiny_config(tmp_path, tmp_path))
    for section, key, value in ALLOWED:
        c = tiny_config(tmp_path, tmp_path)
        c[section][key] = value
        train_lib.check_resume_config(saved, c)
    for section, key, value in REFUSED:
        c = tiny_config(tmp_path, tmp_path)
        c[section][key] = value
        with pytest.raises(config_lib.ConfigError, match=rf"{section}\.{key}: "):
            train_lib.check_resume_config(saved, c)
    # Several changes are all named at once.
    c = tiny_config(tmp_path, tmp_path)
    c.model.n_layer, c.optim.b2, c.train.seed = 3, 0.99, 5
    with pytest.raises(config_lib.ConfigError) as e:
        train_lib.check_resume_config(saved, c)
    assert all(f in str(e.value) for f in ("model.n_layer: 2 -> 3", "optim.b2: 0.95 -> 0.99", "train.seed: 0 -> 5"))
    # A checkpoint written before a field existed compares it at its default.
    old = json.loads(json.dumps(saved))
    del old["model"]["remat"], old["train"]["nonfinite"]
    train_lib.check_resume_config(old, tiny_config(tmp_path, tmp_path))


# -- exact resume ---------------------------------------------------------------------------------
def test_exact_resume_2n_equals_n_stop_resume_n(shakespeare_dir, cache_dir, tmp_path):
    # Dropout on, so the RNG stream matters too. The split run is the same run (num_steps=2N, so the
    # same LR schedule) told to stop after N: the path a SIGTERM takes.
    kw = dict(num_steps=6, log_every=1, eval_every=0, eval_batches=1, checkpoint__every=0, model__dropout=0.1)
    a = train(cfg(shakespeare_dir, cache_dir, **kw), str(tmp_path / "a"), progress=False)
    s1 = train(cfg(shakespeare_dir, cache_dir, stop_after=3, **kw), str(tmp_path / "b"), progress=False)
    assert s1["step"] == 3 and s1["stopped_early"]
    assert ckpt_lib.Checkpointer(tmp_path / "b", read_only=True).all_steps() == [3]
    meta = ckpt_lib.Checkpointer(tmp_path / "b", read_only=True).read_meta(3)
    assert meta["loader"] == {"next_step": 3, "seed": 0} and meta["rng"]["seed"] == 0
    assert meta["config"]["train"]["stop_after"] == 3
    # Resume with allowed changes (checkpoint cadence, retention): same numbers.
    kw2 = {**kw, "checkpoint__every": 2, "checkpoint__keep": 5}
    s2 = train(cfg(shakespeare_dir, cache_dir, **kw2), str(tmp_path / "b"), progress=False)
    assert s2["resumed_from"] == 3 and s2["step"] == 6 and not s2["stopped_early"]
    la, lb = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert [s for s, *_ in lb] == [1, 2, 3, 4, 5, 6]  # every step once: none repeated or skipped
    assert la == lb  # loss, grad norm and lr of every step, exactly
    assert a["val_loss"] == s2["val_loss"]
    _, pa = ckpt_lib.load_params(tmp_path / "a")
    _, pb = ckpt_lib.load_params(tmp_path / "b")
    assert bitwise_equal(pa, pb)


# -- non-finite steps -----------------------------------------------------------------------------
POISON = 50255  # a row of only this token makes the loss (and so the gradients) NaN


@pytest.fixture
def poisoned(monkeypatch):
    """Make chosen steps' loss and gradients NaN: the batch gets a row of POISON tokens."""
    bad_steps = set()
    orig_batch, orig_loss = loader.train_batch, Trainer._loss

    def train_batch(ds, step, *a, **k):
        rows = orig_batch(ds, step, *a, **k)
        if step in bad_steps:
            rows = rows.copy()
            rows[0] = POISON
        return rows

    def _loss(self, params, batch, key):
        loss = orig_loss(self, params, batch, key)
        return loss * jnp.where(jnp.all(batch[0] == POISON), jnp.nan, 1.0)

    monkeypatch.setattr(loader, "train_batch", train_batch)
    monkeypatch.setattr(Trainer, "_loss", _loss)
    return bad_steps


def test_nonfinite_skip_and_stop(shakespeare_dir, cache_dir, tmp_path, poisoned):
    # 'skip': the updates of steps 2 and 4 (batch indices 1 and 3) are skipped, counted and logged.
    poisoned.update({1, 3})
    c = cfg(shakespeare_dir, cache_dir, num_steps=6, log_every=3, eval_batches=1, nonfinite="skip")
    s = train(c, str(tmp_path / "skip"), progress=False)
    assert s["skipped_steps"] == 2
    rows = [json.loads(x) for x in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["skipped_steps"]) for r in rows if "loss" in r] == [(3, 1), (6, 2)]
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    tr = Trainer(c)
    p, o, meta = ckpt_lib.Checkpointer(tmp_path / "skip", read_only=True).restore(
        None, tr.abstract_params, tr.abstract_opt_state)
    assert all(np.isfinite(x).all() for x in as_numpy(p)) and meta["skipped_steps"] == 2
    counts = [int(x) for x in as_numpy(o) if x.dtype == np.int32 and x.ndim == 0]
    assert counts and set(counts) == {4}  # the optimizer saw 4 updates, not 6

    # 'stop': a message naming the step; the bad state is never saved; the last good checkpoint stays.
    poisoned.clear()
    poisoned.add(3)  # the update that makes step 4
    c = cfg(shakespeare_dir, cache_dir, num_steps=6, log_every=1, eval_batches=1, checkpoint__every=2)
    with pytest.raises(NonFiniteError, match="non-finite loss at step 4") as e:
        train(c, str(tmp_path / "stop"), progress=False)
    assert e.value.step == 4 and "latest checkpoint is step 2" in str(e.value)
    assert ckpt_lib.Checkpointer(tmp_path / "stop", read_only=True).all_steps() == [2]
    # Nothing lost: the same workdir resumes from step 2 (nonfinite may change on resume).
    c.train.nonfinite = "skip"
    s = train(c, str(tmp_path / "stop"), progress=False)
    assert s["resumed_from"] == 2 and s["step"] == 6 and s["skipped_steps"] == 1


# -- bad input: one clear error before anything compiles, nothing lost -----------------------------
def _copy_data(src, dst, split_tokens=None, max_token_id=None, odd=False):
    dst.mkdir()
    meta = json.loads((src / "meta.json").read_text())
    for split in ("train", "val"):
        data = (src / f"{split}.bin").read_bytes()
        if split_tokens and split in split_tokens:
            data = data[: 2 * split_tokens[split]]
            meta["splits"][split]["tokens"] = split_tokens[split]
        if odd and split == "train":
            data += b"\0"
        (dst / f"{split}.bin").write_bytes(data)
    if max_token_id is not None:
        meta["splits"]["train"]["max_token_id"] = max_token_id
    (dst / "meta.json").write_text(json.dumps(meta))
    return dst


def _tree_digest(path):
    h = hashlib.sha256()
    for p in sorted(pathlib.Path(path).rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def other_shape_run(tmp_path_factory, shakespeare_dir, cache_dir):
    """A workdir holding a checkpoint of a narrower model (n_embd 32)."""
    wd = tmp_path_factory.mktemp("other_shape")
    c = tiny_config(shakespeare_dir, cache_dir)
    c.model.n_embd = 32
    shapes = abstract_params(c.model)
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    ckpt_lib.save_params(wd, c, params)
    return wd


def _bad_cases(data, tmp, other):
    d = lambda **k: _copy_data(data, tmp / f"data_{len(list(tmp.iterdir()))}", **k)  # noqa: E731
    return {
        "n_embd % n_head": (dict(model__n_embd=65), config_lib.ConfigError, r"model\.n_embd: 65 is not divisible"),
        "batch vs data-parallel x accum": (dict(optim__accum_steps=2), config_lib.ConfigError,
                                           r"8 / optim.accum_steps 2 = 4 .* not divisible by the 8 data-parallel"),
        "seq longer than positions": (dict(seq_len=64), config_lib.ConfigError, "longer than the position table"),
        "impossible mesh": (dict(mesh__data=3), config_lib.ConfigError, r"config\.mesh: .* 8 devices"),
        "missing files": (dict(data__dir=str(tmp / "nothing")), DataError, "prepared data not found"),
        "odd-sized file": (dict(data__dir=str(d(odd=True))), DataError, "not a whole number of uint16 tokens"),
        "token id >= vocab": (dict(data__dir=str(d(max_token_id=50257))), DataError, "does not fit vocab_size 50257"),
        "val shorter than a sequence": (dict(data__dir=str(d(split_tokens={"val": 20}))), DataError,
                                        r"split 'val' .* fewer than seq_len \+ 1 = 33"),
        "init_from another shape": (dict(init_from=str(other)), ckpt_lib.CheckpointError,
                                    r"parameter 'h/attn/c_attn/bias' has shape \(2, 3, 2, 16\) in the checkpoint "
                                    r"but the model expects \(2, 3, 2, 32\)"),
        "resume another shape": ("resume", config_lib.ConfigError, r"model\.n_embd: 32 -> 64"),
    }


def test_bad_input_is_one_clear_error_before_any_compile(shakespeare_dir, cache_dir, tmp_path, other_shape_run):
    before = _tree_digest(other_shape_run)
    for name, (overrides, exc, msg) in _bad_cases(shakespeare_dir, tmp_path, other_shape_run).items():
        wd = other_shape_run if overrides == "resume" else tmp_path / name.replace(" ", "_")
        c = tiny_config(shakespeare_dir, cache_dir, **({} if overrides == "resume" else overrides))
        COMPILED.clear()
        with pytest.raises(exc, match=msg):
            train(c, str(wd), progress=False)
        assert COMPILED == [], (name, COMPILED)
    assert _tree_digest(other_shape_run) == before  # the existing checkpoint is untouched
    jax.jit(lambda x: x * 3.0 + 1.0)(jnp.arange(5.0))  # ... and the listener does see compiles
    assert COMPILED
    # Unknown keys: a locked config refuses them, and so does a stored config.
    c = tiny_config(shakespeare_dir, cache_dir)
    with pytest.raises(AttributeError, match="num_stepz"):
        c.train.num_stepz = 3
    with pytest.raises(config_lib.ConfigError, match=r"config\.train\.num_stepz: unknown field"):
        config_lib.from_dict({"train": {"num_stepz": 3}})
