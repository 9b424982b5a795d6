"""Watermarked sampling (gpt2jax/watermark.py, sample --watermark=kgw), batched sampling, and sample's
refusals of out-of-range settings.

The models are random-init tiny ones (tests/conftest.py's tiny config): one with a byte vocabulary (257 ids,
context 64, so 200 new tokens run through both the cached steps and the sliding window) for the statistics,
and the default GPT-2-vocabulary one for the CLI. A random-init model's next-token distributions are close
to uniform (high entropy), so the default delta = 2.0 marks text strongly: each token is green with
probability about 0.25 e^2 / (0.25 e^2 + 0.75) = 0.71, an expected z near 15 over 200 tokens.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from gpt2jax import cli, sample
from gpt2jax import watermark as W
from gpt2jax.checkpoint import save_params
from gpt2jax.model import GPT2, init_params
from gpt2jax.sample import generate

from conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEY = 15485863


@pytest.fixture(scope="module")
def bytes_model():
    c = tiny_config(model__vocab_size=257, model__block_size=64, model__dtype="float32")
    return c, init_params(c.model, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    c = tiny_config(model__dtype="float32")
    params = init_params(c.model, jax.random.PRNGKey(1))
    wd = tmp_path_factory.mktemp("wm") / "run"
    save_params(wd, c, params)
    return c, params, wd


def keys_for(seeds):
    return np.stack([jax.random.PRNGKey(s) for s in seeds])


# ------------------------------------------------------------------------------------------ green list
def test_green_list_is_a_keyed_gamma_fraction():
    k = W.key_words(KEY)
    ctx = np.array([[0], [1], [50256], [1]])
    m = np.asarray(W.green_mask(k, ctx, 50257, 0.25))
    assert (m.sum(1) == 12564).all()  # int(0.25 * 50257), exactly, every list
    assert (m[1] == m[3]).all() and (m[0] != m[1]).any() and (m[1] != m[2]).any()
    other = np.asarray(W.green_mask(W.key_words(KEY + 1), ctx, 50257, 0.25))
    assert 0.2 < (other[0] & m[0]).sum() / 12564 < 0.3  # another key: an unrelated list
    # The same lists, by rank, token by token (what detection uses).
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 50257, 4)
    np.testing.assert_array_equal(np.asarray(W.is_green(k, ctx, toks, 50257, 0.25)), m[np.arange(4), toks])
    # Pinned: the PRF is part of the watermark's definition; changing it orphans every marked text.
    assert np.flatnonzero(m[0])[:5].tolist() == [9, 17, 19, 22, 24]


def test_bias_goes_on_green_ids_only():
    k = W.key_words(3)
    logits = np.zeros((2, 260), np.float32)  # 257 ids + 3 padded columns
    ctx = np.array([[5, 6], [7, 8]])
    out = np.asarray(W.bias_logits(logits, k, ctx, 2.0, vocab_size=257, gamma=0.25))
    mask = np.asarray(W.green_mask(k, ctx, 257, 0.25))
    np.testing.assert_array_equal(out[:, :257], np.where(mask, 2.0, 0.0))
    assert (out[:, 257:] == 0).all()


# ------------------------------------------------------------------------------------------ sampling
SEEDS = [0, 1, 2, 3]
MARK = W.Watermark(KEY, gamma=0.25, delta=2.0, context=1)


def draw(c, params, watermark=None, **kw):
    """4 samples of 200 tokens after one prompt token, seeds 0-3, pure sampling, in one batch."""
    return np.asarray(generate(c.model, params, np.full((4, 1), 10), 200, keys=keys_for(SEEDS),
                               temperature=1.0, watermark=watermark, **kw))


@pytest.fixture(scope="module")
def plain(bytes_model):
    return draw(*bytes_model)


@pytest.fixture(scope="module")
def marked(bytes_model):
    return draw(*bytes_model, watermark=MARK)


def test_unwatermarked_text_gives_standard_normal_z(plain):
    zs = [W.score(row[1:], key, vocab_size=257)["watermark_z"] for row in plain for key in range(100)]
    assert abs(np.mean(zs)) < 0.3 and 0.7 < np.std(zs) < 1.3, (np.mean(zs), np.std(zs))
    zs = [W.score(plain[0, 1:], key, vocab_size=257, ignore_repeated=True)["watermark_z"] for key in range(100)]
    assert abs(np.mean(zs)) < 0.3 and 0.7 < np.std(zs) < 1.3, (np.mean(zs), np.std(zs))


def test_watermarked_samples_of_200_tokens_exceed_z4(bytes_model, marked):
    """delta = 2.0 (the default) on the random-init byte model; its context is 64, so the first tokens come
    from the cached steps and the rest from the sliding window."""
    assert len({tuple(r) for r in marked}) == 4
    for row in marked:
        s = W.score(row, KEY, vocab_size=257)
        assert s["watermark_scored"] == 200 and s["watermark_z"] > 4, s
        assert W.score(row, KEY + 1, vocab_size=257)["watermark_z"] < 4  # the wrong key sees nothing


def test_watermarked_greedy_follows_biased_argmax(bytes_model):
    """Each token (cached steps and sliding steps alike) is the argmax of the full forward pass's logits plus
    delta on the green list seeded by the two tokens before it (--watermark_context=2)."""
    c, params = bytes_model
    wm = W.Watermark(7, gamma=0.5, delta=1.5, context=2)
    out = np.asarray(generate(c.model, params, np.array([[65, 66, 67]]), 70, temperature=0.0, watermark=wm))[0]
    forward = jax.jit(lambda x: GPT2(c.model).apply({"params": params}, x))
    ctx = c.model.block_size
    # Position p < ctx is predicted from out[:p] (one pass over out[:ctx]); p >= ctx from out[p - ctx:p].
    first = np.asarray(forward(out[None, :ctx]))[0, 2:ctx - 1]
    later = np.asarray(forward(np.stack([out[p - ctx:p] for p in range(ctx, len(out))])))[:, -1]
    logits = np.concatenate([first, later])[:, :257]
    recent = np.stack([out[1:-2], out[2:-1]], axis=1)  # the two tokens before each of positions 3..
    green = np.asarray(W.green_mask(W.key_words(7), recent, 257, 0.5))
    np.testing.assert_array_equal(out[3:], np.argmax(logits + 1.5 * green, axis=-1))
    assert W.score(out, 7, vocab_size=257, gamma=0.5, context=2)["watermark_green_fraction"] > 0.9


@pytest.mark.parametrize("wm", [None, MARK], ids=["plain", "kgw"])
def test_batched_sampling_equals_one_at_a_time(bytes_model, plain, marked, wm):
    c, params = bytes_model
    batch = marked if wm else plain
    for i in (1, 3):
        one = np.asarray(generate(c.model, params, np.full((1, 1), 10), 200, key=jax.random.PRNGKey(SEEDS[i]),
                                  temperature=1.0, watermark=wm))
        np.testing.assert_array_equal(batch[i], one[0], err_msg=f"sample {i} (seed {SEEDS[i]})")


def test_sample_cli_num_samples_out_jsonl(gpt2_run, tmp_path, capsys):
    c, params, wd = gpt2_run
    out = tmp_path / "s.jsonl"
    args = [f"--workdir={wd}", "--prompt=Hello world", "--max_new_tokens=6", "--temperature=1.0", "--seed=3"]
    rc = cli.call(sample.main, sample.define_flags, ["sample", *args, "--num_samples=3", f"--out={out}",
                                                     "--watermark=kgw", f"--watermark_key={KEY}"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    assert "wrote 3 samples" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2] and [r["seed"] for r in rows] == [3, 4, 5]
    for r in rows:
        assert r["prompt"] == "Hello world" and r["prompt_ids"] == [15496, 995] and len(r["ids"]) == 6
        assert r["settings"]["watermark"] == {"scheme": "kgw", "gamma": 0.25, "delta": 2.0, "context": 1}
        assert "key" not in json.dumps(r["settings"]["watermark"])
    # Sample i is what a one-sample run with --seed=3+i draws.
    one = tmp_path / "one.jsonl"
    rc = cli.call(sample.main, sample.define_flags, ["sample", *args[:-1], "--seed=5", f"--out={one}",
                                                     "--watermark=kgw", f"--watermark_key={KEY}"])
    assert rc == 0
    assert json.loads(one.read_text())["ids"] == rows[2]["ids"]


def test_too_long_prompt_is_cut_with_a_note(gpt2_run, capsys):
    c, params, wd = gpt2_run
    prompt = " ".join(["word"] * 40)  # 40 tokens, context 32
    rc = cli.call(sample.main, sample.define_flags, ["sample", f"--workdir={wd}", f"--prompt={prompt}",
                                                     "--max_new_tokens=2", "--temperature=0"])
    out, err = capsys.readouterr()
    assert rc == 0, err[-2000:]
    assert "the prompt is 40 tokens" in err and "its first 8 tokens were dropped" in err


@pytest.mark.parametrize("flag,value,says", [
    ("temperature", "-0.5", "must be >= 0"),
    ("top_p", "0", "must be in (0, 1]"),
    ("top_p", "1.5", "must be in (0, 1]"),
    ("top_k", "-1", "must be >= 0"),
])
def test_out_of_range_settings_end_in_one_error_line(gpt2_run, flag, value, says):
    _, _, wd = gpt2_run
    r = subprocess.run([sys.executable, "-m", "gpt2jax.sample", f"--workdir={wd}", f"--{flag}={value}"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "XLA_FLAGS": ""}, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"--{flag}={float(value) if flag != 'top_k' else value}" in last, last
    assert says in last, last


def test_generate_refuses_out_of_range_settings(bytes_model):
    c, params = bytes_model
    for kw, says in [(dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"), (dict(top_k=-2), "top_k")]:
        with pytest.raises(ValueError, match=says):
            generate(c.model, params, np.array([[1, 2]]), 2, **kw)
    with pytest.raises(ValueError, match="gamma"):
        W.Watermark(1, gamma=1.0)
    with pytest.raises(ValueError, match="key"):
        W.Watermark(-1)
