"""gpt2jax.detect: each score against its formula computed here from the model's logits, the CLI (JSON Lines
in order, a summary line, a byte-vocabulary run, sample --out read back by ids), and bad input.

The models are random-init tiny ones (tests/conftest.py's tiny config) in float32. The token embedding is
scaled up so the next-token distributions are far from uniform and every score has something to measure.
"""

from __future__ import annotations

import functools
import json
import math

import jax
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

from gpt2jax import cli, detect, sample
from gpt2jax import watermark as W
from gpt2jax.checkpoint import save_params
from gpt2jax.model import GPT2, ModelConfig, init_params
from gpt2jax.tokenizer import ByteTokenizer, get_tokenizer, tokenizer_record

from conftest import tiny_config

KEY = 99


def peaked(c, seed):
    params = init_params(c.model, jax.random.PRNGKey(seed))
    return {**params, "wte": params["wte"] * 10.0}


@pytest.fixture(scope="module")
def models():
    c = tiny_config(model__dtype="float32")
    return c, peaked(c, 0), peaked(c, 1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, models):
    """Two GPT-2-vocabulary runs (performer, observer) and a byte-vocabulary run, saved."""
    c, p0, p1 = models
    root = tmp_path_factory.mktemp("detect")
    save_params(root / "a", c, p0)
    save_params(root / "b", c, p1)
    cb = tiny_config(model__vocab_size=257, model__dtype="float32")
    save_params(root / "bytes", cb, peaked(cb, 2))
    (root / "bytes" / "run.json").write_text(json.dumps({"tokenizer": tokenizer_record(ByteTokenizer())}))
    return root


@functools.lru_cache
def forward(model_cfg):
    return jax.jit(lambda params, x: GPT2(model_cfg).apply({"params": params}, x))


green_mask = jax.jit(W.green_mask, static_argnames=("vocab_size", "gamma"))


def logprobs(c, params, ids):
    """log p(x_t | x_<t) rows for t = 1..T-1, float64, each from at most block_size tokens before it: one
    right-padded window per token, read at the window's last real position."""
    ctx, V = c.model.block_size, c.model.vocab_size
    windows = np.zeros((len(ids) - 1, ctx), np.int32)
    last = []
    for t in range(1, len(ids)):
        w = ids[max(0, t - ctx):t]
        windows[t - 1, :len(w)] = w
        last.append(len(w) - 1)
    logits = np.asarray(forward(ModelConfig.of(c.model))(params, windows), np.float64)
    logits = logits[np.arange(len(last)), last, :V]
    return logits - logsumexp(logits, axis=-1, keepdims=True)


def text_ids(n, seed=0):
    return np.random.default_rng(seed).integers(0, 50257, n).tolist()


@pytest.mark.parametrize("n", [20, 45], ids=["within_context", "past_context"])
def test_scores_equal_their_formulas(models, n):
    c, p0, p1 = models
    ids = text_ids(n)
    ids[12:16] = ids[2:6]  # repeated (previous, current) pairs for --ignore_repeated
    got = detect.score_ids(c.model, p0, ids, observer=(c.model, p1),
                           watermark=dict(key=KEY, gamma=0.25, context=1, ignore_repeated=False))
    L = logprobs(c, p0, ids)
    x = np.asarray(ids[1:])
    lx = L[np.arange(len(x)), x]
    P = np.exp(L)
    rank = np.array([1 + np.sum(L[i] > lx[i]) for i in range(len(x))])
    mu = (P * L).sum(-1)
    var = (P * L ** 2).sum(-1) - mu ** 2
    want = {
        "log_likelihood": lx.mean(),
        "log_rank": np.log(rank).mean(),
        "entropy": -(P * L).sum(-1).mean(),
        "fast_detectgpt": (lx.sum() - mu.sum()) / np.sqrt(var.sum()),
    }
    Q = np.exp(logprobs(c, p1, ids))  # the observer's distributions
    want["binoculars"] = (-lx).mean() / (-(Q * L).sum(-1)).mean()
    assert got["tokens"] == n and got["scored"] == n - 1
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=2e-4, abs=2e-4), k
    assert 0.5 < got["entropy"] < 10.0  # not uniform (log 50257 = 10.8): the scores measure something
    # The watermark test, from the sorted green lists: z = (|s|_G - gamma T) / sqrt(T gamma (1 - gamma)).
    green = np.asarray(green_mask(W.key_words(KEY), np.asarray(ids[:-1])[:, None], vocab_size=50257, gamma=0.25))
    g = green[np.arange(n - 1), x]
    gamma = 12564 / 50257
    z = (g.sum() - gamma * (n - 1)) / math.sqrt((n - 1) * gamma * (1 - gamma))
    assert got["watermark_green"] == g.sum() and got["watermark_z"] == pytest.approx(z)
    assert got["watermark_p"] == pytest.approx(norm.sf(z))
    pairs = list(zip(ids[:-1], ids[1:]))
    first = [i for i, pr in enumerate(pairs) if pr not in pairs[:i]]
    assert len(first) == n - 1 - 3  # three pairs repeat
    once = W.score(ids, KEY, vocab_size=50257, ignore_repeated=True)
    assert once["watermark_scored"] == len(first) and once["watermark_green"] == g[first].sum()


def call(capsys, *argv):
    rc = cli.call(detect.main, detect.define_flags, ["detect", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_scores_each_text_in_order(runs, models, tmp_path, capsys):
    c, p0, p1 = models
    texts = ["To be, or not to be, that is the question.", "Hello world, this is a test.", "A b c d e f g."]
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"body": t, "n": i}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "scores.jsonl"
    rc, stdout, err = call(capsys, f"--workdir={runs / 'a'}", f"--texts={src}", "--field=body", f"--out={out}",
                           f"--observer={runs / 'b'}", f"--watermark_key={KEY}")
    assert rc == 0, err[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    tok = get_tokenizer()
    for r, t in zip(rows, texts):
        ids = tok.encode(t)
        assert r["tokens"] == len(ids)
        want = detect.score_ids(c.model, p0, ids, observer=(c.model, p1), watermark=dict(key=KEY, gamma=0.25,
                                                                                         context=1))
        for k in ("log_likelihood", "fast_detectgpt", "binoculars", "watermark_z"):
            assert r[k] == pytest.approx(want[k], rel=1e-5), k
    assert stdout.strip().splitlines()[-1].startswith("summary: 3 texts")
    assert "watermark z > 4: 0 of 3" in stdout


def test_byte_vocabulary_run(runs, capsys):
    rc, out, err = call(capsys, f"--workdir={runs / 'bytes'}", "--text=hello there")
    assert rc == 0, err[-2000:]
    row = json.loads(out.splitlines()[0])
    assert row["tokens"] == 11 and row["scored"] == 10 and "watermark_z" not in row


def test_watermarked_samples_read_back_by_ids(runs, tmp_path, capsys):
    """sample --out on the byte run with a watermark; detect --ids_field=ids finds it, a wrong key does not."""
    samples = tmp_path / "s.jsonl"
    rc = cli.call(sample.main, sample.define_flags,
                  ["sample", f"--workdir={runs / 'bytes'}", "--prompt=Once", "--max_new_tokens=60", "--num_samples=3",
                   "--temperature=1", "--top_k=0", f"--out={samples}", "--watermark=kgw", f"--watermark_key={KEY}",
                   "--watermark_delta=4"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    capsys.readouterr()
    rc, out, err = call(capsys, f"--workdir={runs / 'bytes'}", f"--texts={samples}", "--ids_field=ids",
                        f"--watermark_key={KEY}")
    assert rc == 0, err[-2000:]
    rows = [json.loads(line) for line in out.splitlines()[:-1]]
    assert len(rows) == 3 and all(r["watermark_z"] > 4 for r in rows), rows
    assert "watermark z > 4: 3 of 3" in out.splitlines()[-1]


def refused(result, *words):
    rc, out, err = result
    assert rc != 0 and "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err[-2000:]
    for w in words:
        assert w in last, last
    return last


def test_bad_input_ends_in_one_error_line(runs, tmp_path, capsys):
    a = f"--workdir={runs / 'a'}"
    refused(call(capsys, a, "--text="), "--text", "empty")
    refused(call(capsys, a, "--text=Hello"), "--text", "1 token", "at least 2")
    src = tmp_path / "t.jsonl"
    src.write_text(json.dumps({"text": "Fine text here."}) + "\n" + json.dumps({"text": ""}) + "\n")
    refused(call(capsys, a, f"--texts={src}"), f"{src} line 2", "empty")
    refused(call(capsys, a, f"--texts={src}", "--field=body"), f"{src} line 1", "'body'")
    refused(call(capsys, a, "--text=Hello world", f"--observer={runs / 'bytes'}"), "tokenizer mismatch",
            "gpt2", "bytes", str(runs / "bytes"))
    refused(call(capsys, a), "--texts", "--text")
    refused(call(capsys, a, "--text=Hello world", f"--out={tmp_path}"), f"--out={tmp_path}", "is a directory")
    refused(call(capsys, a, "--text=Hello world", f"--out={tmp_path / 'no' / 'x.jsonl'}"), "does not exist")
    refused(call(capsys, a, "--text=Hello world", "--ignore_repeated"), "--watermark_key")
