"""WSD schedules and cooldown branches (train.branch_from / train.branch_step)."""

import json

import jax
import numpy as np
import pytest

from gpt2jax import config as config_lib
from gpt2jax.checkpoint import CheckpointError, Checkpointer, load_params
from gpt2jax.optim import schedule
from gpt2jax.train import train

from conftest import tiny_config


def _optim(**kw):
    c = config_lib.get_config().optim
    for k, v in kw.items():
        c[k] = v
    return c


def test_wsd_shape():
    o = _optim(schedule="wsd", lr=1.0, min_lr=0.1, warmup_steps=10, decay_fraction=0.2, decay_shape="1-sqrt")
    f = schedule(o, 100)
    lrs = np.array([float(f(i)) for i in range(101)])
    np.testing.assert_allclose(lrs[:11], np.arange(11) / 10, rtol=1e-6)  # linear warmup
    assert (lrs[10:81] == 1.0).all()  # stable until the last 20 steps
    t = np.arange(0, 21) / 20
    np.testing.assert_allclose(lrs[80:], 0.1 + 0.9 * (1 - np.sqrt(t)), rtol=1e-6)  # 1 - sqrt cooldown
    lin = np.array([float(schedule(_optim(**{**o, "decay_shape": "linear"}), 100)(i)) for i in range(80, 101)])
    np.testing.assert_allclose(lin, 1.0 - 0.9 * t, rtol=1e-6)
    cos = np.array([float(schedule(_optim(**{**o, "decay_shape": "cosine"}), 100)(i)) for i in range(80, 101)])
    np.testing.assert_allclose(cos, 0.1 + 0.45 * (1 + np.cos(np.pi * t)), rtol=1e-5, atol=1e-7)
    # The stable phase does not depend on the run's length: a longer run's first 80 steps are the same.
    longer = schedule(o, 1000)
    assert all(float(longer(i)) == lrs[i] for i in range(81))
    const = schedule(_optim(schedule="constant", lr=1.0, warmup_steps=10), 100)
    assert float(const(5)) == pytest.approx(0.5) and float(const(99)) == 1.0


def test_cosine_default_is_unchanged():
    o = _optim(lr=6e-4, min_lr=6e-5, warmup_steps=100)
    f = schedule(o, 1000)
    assert o.schedule == "cosine"
    assert float(f(50)) == pytest.approx(3e-4)
    assert float(f(550)) == pytest.approx(6e-5 + 0.5 * (6e-4 - 6e-5), rel=1e-5)
    assert float(f(1000)) == pytest.approx(6e-5)


def _cfg(data, cache, **kw):
    base = dict(model__vocab_size=0, num_steps=16, batch_size=8, log_every=4, eval_every=0, eval_batches=2,
                optim__schedule="wsd", optim__warmup_steps=2, optim__lr=3e-3, optim__min_lr=0.0,
                optim__decay_fraction=0.2, checkpoint__every=0, mesh__data=2, mesh__fsdp=2, mesh__tensor=2)
    base.update(kw)
    return tiny_config(data, cache, **base)


def test_branch_equals_fresh_run_bitwise(byte_data, tmp_path):
    cache = tmp_path / "cache"
    S, k = 6, 4
    # The parent: WSD to 16 steps, stable through step 12; it keeps step S for branches.
    parent = _cfg(byte_data, cache, checkpoint__steps=(S,), checkpoint__keep=1)
    train(parent, str(tmp_path / "parent"), progress=False)
    before = sorted(p.name for p in (tmp_path / "parent" / "checkpoints").iterdir())
    # The branch: from step S, cooling down over its last k steps.
    frac = k / (S + k)
    branch = _cfg(byte_data, cache, num_steps=S + k, optim__decay_fraction=frac,
                  branch_from=str(tmp_path / "parent"), branch_step=S)
    out_b = train(branch, str(tmp_path / "branch"), progress=False)
    fresh = _cfg(byte_data, cache, num_steps=S + k, optim__decay_fraction=frac)
    out_f = train(fresh, str(tmp_path / "fresh"), progress=False)
    _, pb = load_params(tmp_path / "branch")
    _, pf = load_params(tmp_path / "fresh")
    for a, b in zip(jax.tree.leaves(pb), jax.tree.leaves(pf)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert out_b["val_loss"] == out_f["val_loss"] and out_b["resumed_from"] == S
    info = json.loads((tmp_path / "branch" / "run.json").read_text())
    assert info["branch"]["parent"] == str(tmp_path / "parent") and info["branch"]["step"] == S
    assert len(info["branch"]["fingerprint"]) == 16
    # The parent is unchanged (only read).
    assert sorted(p.name for p in (tmp_path / "parent" / "checkpoints").iterdir()) == before
    assert str(S) in before and "16" in before
    rows = [json.loads(line) for line in (tmp_path / "branch" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] > S  # the branch logs only its own steps
    assert "val_bpb" in rows[-1]


def test_branch_refusals(byte_data, tmp_path):
    cache = tmp_path / "cache"
    parent = _cfg(byte_data, cache, num_steps=8, checkpoint__steps=(4,))
    train(parent, str(tmp_path / "parent"), progress=False)
    p = str(tmp_path / "parent")
    changed = _cfg(byte_data, cache, num_steps=10, model__n_embd=32, model__n_head=2, optim__lr=1e-3,
                   branch_from=p, branch_step=4)
    with pytest.raises(config_lib.ConfigError) as e:
        train(changed, str(tmp_path / "b1"), progress=False)
    assert "model.n_embd: 64 -> 32" in str(e.value) and "optim.lr: 0.003 -> 0.001" in str(e.value)
    assert not (tmp_path / "b1" / "checkpoints").exists() or not any((tmp_path / "b1" / "checkpoints").iterdir())
    missing = _cfg(byte_data, cache, num_steps=10, branch_from=p, branch_step=3)
    with pytest.raises(CheckpointError, match=r"no checkpoint at that step \(it has \[4, 8\]"):
        train(missing, str(tmp_path / "b2"), progress=False)
    # What a branch may change: length, decay fraction, shape and min_lr.
    ok = _cfg(byte_data, cache, num_steps=10, optim__decay_fraction=0.6, optim__decay_shape="linear",
              optim__min_lr=1e-4, branch_from=p, branch_step=4)
    assert train(ok, str(tmp_path / "b3"), progress=False)["step"] == 10
    assert Checkpointer(None, read_only=True, directory=tmp_path / "parent" / "checkpoints").all_steps() == [4, 8]
