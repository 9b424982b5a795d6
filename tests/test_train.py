import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2jax import config as config_lib
from gpt2jax.checkpoint import load_params
from gpt2jax.data import loader
from gpt2jax.optim import decay_mask
from gpt2jax.train import Trainer, train

from conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("xla_cache")


def test_loss_falls_when_overfitting_one_batch(shakespeare_dir, cache_dir):
    c = tiny_config(shakespeare_dir, cache_dir, num_steps=30, optim__lr=1e-2, optim__min_lr=1e-2, optim__warmup_steps=0)
    tr = Trainer(c)
    params, opt = tr.init_state(0)
    ds = loader.TokenDataset(c.data.dir, "train", 32)
    batch = tr.global_batch(loader.train_batch(ds, 0, 8, 0))
    losses = []
    for s in range(30):
        params, opt, out = tr.train_step(params, opt, batch, jnp.int32(s))
        losses.append(float(out["loss"]))
    assert losses[0] > 10.0  # ~ln(50257) at init
    assert losses[-1] < 0.5 * losses[0]
    # Padded vocabulary rows of the tied embedding stay exactly zero under training.
    assert not np.asarray(params["wte"][c.model.vocab_size :]).any()


def test_gradient_accumulation_matches_full_batch(shakespeare_dir, cache_dir):
    outs = []
    for accum in (1, 4):
        c = tiny_config(shakespeare_dir, cache_dir, optim__accum_steps=accum, batch_size=32, optim__warmup_steps=0)
        tr = Trainer(c)
        params, opt = tr.init_state(0)
        ds = loader.TokenDataset(c.data.dir, "train", 32)
        batch = tr.global_batch(loader.train_batch(ds, 0, 32, 0))
        params, opt, out = tr.train_step(params, opt, batch, jnp.int32(0))
        outs.append((jax.device_get(params), float(out["loss"]), float(out["grad_norm"])))
    (p1, l1, g1), (p4, l4, g4) = outs
    assert l1 == pytest.approx(l4, rel=1e-5) and g1 == pytest.approx(g4, rel=1e-4)
    # Adam's first update is about lr * sign(g): equal within 2% of lr (1e-3) everywhere.
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_weight_decay_mask():
    mask = decay_mask(config_lib.get_config().model)
    assert mask["wte"] and mask["wpe"]
    assert mask["h"]["attn"]["c_attn"]["kernel"] and mask["h"]["mlp"]["c_proj"]["kernel"]
    assert not mask["h"]["attn"]["c_attn"]["bias"] and not mask["h"]["ln_1"]["scale"]
    assert not mask["ln_f"]["bias"]


def test_train_writes_metrics_checkpoints_and_resumes(shakespeare_dir, cache_dir, tmp_path):
    wd = tmp_path / "run"
    c = tiny_config(shakespeare_dir, cache_dir, num_steps=10)
    s1 = train(c, str(wd), progress=False)
    assert s1["step"] == 10 and s1["val_loss"] is not None
    info = json.loads((wd / "run.json").read_text())
    assert info["params"] > 0 and info["flops_per_token"] > 0 and info["devices"]["count"] == jax.device_count()
    assert info["config"]["model"]["n_layer"] == 2 and "jax" in info["versions"]
    rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logs] == [5, 10]
    for r in logs:
        assert set(r) >= {"step", "loss", "lr", "tokens", "tokens_per_sec", "mfu"}
        assert r["tokens"] == r["step"] * 8 * 32
    assert [r["step"] for r in rows if "val_loss" in r] == [10]
    assert (wd / "checkpoints" / "10").is_dir() and list((wd / "tb").iterdir())

    # Same workdir, more steps: resumes from step 10 and continues the step count.
    c2 = tiny_config(shakespeare_dir, cache_dir, num_steps=20)
    s2 = train(c2, str(wd), progress=False)
    assert s2["step"] == 20
    rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [5, 10, 15, 20]
    assert (wd / "checkpoints" / "20").is_dir()

    # A changed model is refused on resume, naming the field.
    c3 = tiny_config(shakespeare_dir, cache_dir, num_steps=30)
    c3.model.n_layer = 3
    with pytest.raises(config_lib.ConfigError, match="model.n_layer"):
        train(c3, str(wd), progress=False)

    # init_from: a fresh run (step 0, new optimizer) starting from this run's weights.
    _, trained = load_params(wd)
    c4 = tiny_config(shakespeare_dir, cache_dir, num_steps=1, init_from=str(wd), eval_batches=1)
    c4.optim.lr = 1e-12
    c4.optim.min_lr = 0.0
    wd4 = tmp_path / "finetune"
    train(c4, str(wd4), progress=False)
    _, tuned = load_params(wd4)
    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(tuned)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    first = [json.loads(x) for x in (wd4 / "metrics.jsonl").read_text().splitlines()][0]
    assert first["step"] == 1 and first["loss"] < 10.5  # below a fresh init's ln(50257) = 10.83


def test_train_cli(shakespeare_dir, cache_dir, tmp_path):
    wd = tmp_path / "cli"
    cmd = [
        sys.executable, "-m", "gpt2jax.train", f"--config={ROOT / 'configs' / 'tiny.py'}", f"--workdir={wd}",
        f"--config.data.dir={shakespeare_dir}", "--config.train.num_steps=4", "--config.train.log_every=2",
        f"--config.train.compile_cache={cache_dir}",
    ]
    env = {**os.environ, "XLA_FLAGS": ""}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "final val_loss" in out.stdout
    info = json.loads((wd / "run.json").read_text())
    assert info["devices"]["count"] == 1 and info["config"]["train"]["num_steps"] == 4
    # A misspelt override fails before anything runs.
    bad = subprocess.run(cmd + ["--config.train.num_stepz=3"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert bad.returncode != 0 and "num_stepz" in bad.stderr


def test_missing_data_is_one_clear_error(tmp_path, cache_dir):
    c = tiny_config(tmp_path / "nothing_here", cache_dir)
    with pytest.raises(Exception, match="prepare"):
        train(c, str(tmp_path / "wd"), progress=False)
    assert not (tmp_path / "wd" / "checkpoints").exists()


def test_zero_shot_tasks_during_training(shakespeare_dir, cache_dir, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    lines = ["The king said that he would see the queen", "Give me your hand and let us go to dinner"]
    (tasks / "lambada_test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in lines))
    c = tiny_config(shakespeare_dir, cache_dir, num_steps=4, eval_batches=1)
    c.eval.tasks, c.eval.tasks_dir, c.eval.every = "lambada", str(tasks), 2
    train(c, str(tmp_path / "wd"), progress=False)
    rows = [json.loads(x) for x in (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()]
    ev = [r for r in rows if "eval/lambada/acc" in r]
    assert [r["step"] for r in ev] == [2, 4]
    for r in ev:
        assert 0.0 <= r["eval/lambada/acc"] <= 1.0 and r["eval/lambada/perplexity"] > 1.0


def test_relative_workdir(shakespeare_dir, cache_dir, tmp_path, monkeypatch):
    """Orbax needs absolute paths; a relative --workdir (as in the quickstart) must still work."""
    monkeypatch.chdir(tmp_path)
    c = tiny_config(shakespeare_dir, cache_dir, num_steps=2, eval_batches=1)
    train(c, "runs/rel", progress=False)
    assert (tmp_path / "runs" / "rel" / "checkpoints" / "2").is_dir()
    _, params = load_params("runs/rel")
    assert params["wte"].shape[1] == 64
