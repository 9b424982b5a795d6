import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from gpt2jax.checkpoint import save_params
from gpt2jax.model import GPT2, init_params
from gpt2jax.sample import filter_logits, generate

from conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    c = tiny_config(model__n_head=4)
    return c, init_params(c.model, jax.random.PRNGKey(0))


def test_greedy_generation_follows_full_forward_argmax(model):
    c, params = model
    prompt = np.array([[464, 3290, 318], [40, 588, 257]])
    out = np.asarray(generate(c.model, params, prompt, 12, temperature=0.0))
    assert out.shape == (2, 15)
    np.testing.assert_array_equal(out[:, :3], prompt)
    logits = np.asarray(GPT2(c.model).apply({"params": params}, out[:, :-1]))
    np.testing.assert_array_equal(logits[:, 2:].argmax(-1), out[:, 3:])


def test_sampling_is_seeded_and_filters_apply(model):
    c, params = model
    prompt = np.array([[464, 3290, 318]])
    a = generate(c.model, params, prompt, 8, key=jax.random.PRNGKey(1), temperature=1.0)
    b = generate(c.model, params, prompt, 8, key=jax.random.PRNGKey(1), temperature=1.0)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    greedy = generate(c.model, params, prompt, 8, temperature=0.0)
    # top_k=1 and a tiny top_p both reduce sampling to the argmax.
    for kw in (dict(top_k=1), dict(top_p=1e-6)):
        s = generate(c.model, params, prompt, 8, key=jax.random.PRNGKey(5), temperature=1.0, **kw)
        np.testing.assert_array_equal(np.asarray(s), np.asarray(greedy))
    assert (np.asarray(a) < c.model.vocab_size).all()


def test_filter_logits():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    k2 = np.asarray(filter_logits(logits, 1.0, 2, 1.0))
    assert (k2[0, :2] > -1e8).all() and (k2[0, 2:] < -1e8).all()
    p = np.asarray(filter_logits(logits, 1.0, 0, 0.7))  # 0.5 + 0.3 reaches 0.7
    assert (p[0, :2] > -1e8).all() and (p[0, 2:] < -1e8).all()


def test_too_long_prompt_is_a_clear_error(model):
    c, params = model
    with pytest.raises(ValueError, match="longer than the model's context"):
        generate(c.model, params, np.zeros((1, 33), np.int32), 5)


def test_generation_past_the_context_slides(model):
    """Past block_size (32) every token is the argmax of a full forward pass over the last 32 tokens;
    before it, of a forward pass over everything so far (the KV-cache path)."""
    c, params = model
    ctx = c.model.block_size
    prompt = np.array([[464, 3290, 318, 257], [40, 588, 257, 1110]])
    out = np.asarray(generate(c.model, params, prompt, 40, temperature=0.0))
    assert out.shape == (2, 44)
    np.testing.assert_array_equal(out[:, :4], prompt)
    net = GPT2(c.model)
    full = np.asarray(net.apply({"params": params}, out[:, :ctx]))
    np.testing.assert_array_equal(full[:, 3:-1].argmax(-1), out[:, 4:ctx])
    for p in range(ctx, out.shape[1]):
        window = out[:, p - ctx:p]
        want = np.asarray(net.apply({"params": params}, window))[:, -1].argmax(-1)
        np.testing.assert_array_equal(want, out[:, p], err_msg=f"position {p}")
    # A prompt as long as the context: only sliding steps.
    long = np.asarray(generate(c.model, params, out[:, :ctx], 3, temperature=0.0))
    np.testing.assert_array_equal(long[:, ctx:], out[:, ctx:ctx + 3])


def test_sample_cli(model, tmp_path):
    c, params = model
    save_params(tmp_path / "run", c, params)
    out = subprocess.run(
        [sys.executable, "-m", "gpt2jax.sample", f"--workdir={tmp_path / 'run'}", "--prompt=Hello world",
         "--max_new_tokens=5", "--temperature=0"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "XLA_FLAGS": ""}, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("Hello world") and len(out.stdout) > len("Hello world")


def test_sample_cli_from_hf_directory(model, tmp_path):
    from gpt2jax.convert import to_hf

    c, params = model
    to_hf(c, params, tmp_path / "hf")
    cmd = [sys.executable, "-m", "gpt2jax.sample", f"--hf={tmp_path / 'hf'}", "--prompt=Hello world",
           "--max_new_tokens=5", "--temperature=0"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "XLA_FLAGS": ""}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # Same weights, same greedy continuation as from our own checkpoint format.
    ids = generate(c.model, params, np.array([[15496, 995]]), 5, temperature=0.0)
    from gpt2jax.tokenizer import get_tokenizer

    assert out.stdout.strip() == get_tokenizer().decode(np.asarray(ids)[0].tolist()).strip()
