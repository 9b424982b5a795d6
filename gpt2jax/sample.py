"""KV-cache text generation and its CLI.

    python -m gpt2jax.sample --workdir=runs/shk --prompt="ROMEO." --max_new_tokens=100 \
        [--temperature=0.8 --top_k=200 --top_p=0.95 --seed=0 --num_samples=1 --step=S]

The prompt is encoded, and the sample decoded, with the run's own tokenizer (recorded with its checkpoints
and in run.json: GPT-2's BPE, bytes or a trained BPE; GPT-2's for --hf and for runs without a record).

The prompt is run once through the network to fill the key/value cache (prefill); each new token then
costs one single-token step against the cache. The whole loop is one jit-compiled function.

Past the context (prompt + max_new_tokens > block_size) generation slides: each further token comes
from a full forward pass over the last block_size tokens, exactly as if that window were the prompt
(its positions start at 0 again, so a cache cannot follow the moving window: each of these tokens
costs a whole forward pass).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gpt2jax.model import GPT2, NEG_INF, ModelConfig, init_cache


def filter_logits(logits_BV, temperature: float, top_k: int, top_p: float):
    """Temperature, then top-k, then nucleus (top-p) filtering. Filtered entries get NEG_INF."""
    logits = logits_BV / jnp.maximum(temperature, 1e-6)
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if 0.0 < top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # Keep the smallest set whose probability reaches top_p (always at least one token).
        cutoff_idx = jnp.sum(cum < top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_idx, axis=-1)
        logits = jnp.where(logits < cutoff, NEG_INF, logits)
    return logits


def _pick(logits_BV, k, temperature, top_k, top_p, greedy):
    if greedy:
        return jnp.argmax(logits_BV, axis=-1)
    return jax.random.categorical(k, filter_logits(logits_BV, temperature, top_k, top_p), axis=-1)


@functools.partial(jax.jit, static_argnames=("model_cfg", "max_new_tokens", "top_k", "top_p", "greedy"))
def _generate(params, prompt_BT, key, temperature, *, top_p, model_cfg, max_new_tokens, top_k, greedy):
    model = GPT2(model_cfg)
    B, T0 = prompt_BT.shape
    cache = init_cache(model_cfg, B, T0 + max_new_tokens)
    logits, cache = model.apply({"params": params}, prompt_BT, cache, 0, method=GPT2.decode)

    def pick(logits_BV, k):
        return _pick(logits_BV, k, temperature, top_k, top_p, greedy)

    def step(carry, i):
        last_logits, cache, key = carry
        key, k = jax.random.split(key)
        tok = pick(last_logits, k).astype(jnp.int32)
        logits, cache = model.apply({"params": params}, tok[:, None], cache, T0 + i, method=GPT2.decode)
        return (logits[:, -1], cache, key), tok

    _, toks = jax.lax.scan(step, (logits[:, -1], cache, key), jnp.arange(max_new_tokens))
    return jnp.concatenate([prompt_BT, toks.T], axis=1)


@functools.partial(jax.jit, static_argnames=("model_cfg", "n", "top_k", "top_p", "greedy"))
def _slide(params, window_BT, key, temperature, *, top_p, model_cfg, n, top_k, greedy):
    """n tokens past the context: each from a full forward pass over the last block_size tokens."""
    model = GPT2(model_cfg)

    def step(carry, _):
        window, key = carry
        key, k = jax.random.split(key)
        logits = model.apply({"params": params}, window)[:, -1]
        tok = _pick(logits, k, temperature, top_k, top_p, greedy).astype(jnp.int32)
        return (jnp.concatenate([window[:, 1:], tok[:, None]], axis=1), key), tok

    _, toks = jax.lax.scan(step, (window_BT, key), None, length=n)
    return toks.T


def generate(model_cfg, params, prompt_tokens, max_new_tokens: int, *, key=None, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0):
    """Continue each row of `prompt_tokens` [B, T0] by max_new_tokens. temperature=0 is greedy.
    Returns int32 [B, T0 + max_new_tokens]. Tokens past the context (block_size) slide: each is
    predicted from the last block_size tokens by a full forward pass (see the module docstring)."""
    prompt = jnp.asarray(prompt_tokens, jnp.int32)
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    T0, ctx = prompt.shape[1], int(model_cfg.block_size)
    if T0 > ctx:
        raise ValueError(f"the prompt ({T0} tokens) is longer than the model's context of {ctx} tokens")
    key = jax.random.PRNGKey(0) if key is None else key
    kw = dict(top_p=float(top_p), model_cfg=ModelConfig.of(model_cfg), top_k=int(top_k), greedy=temperature <= 0.0)
    temperature = jnp.float32(temperature)
    cached = min(int(max_new_tokens), ctx - T0)
    out = prompt
    if cached > 0:
        out = _generate(params, prompt, key, temperature, max_new_tokens=cached, **kw)
    rest = int(max_new_tokens) - cached
    if rest > 0:
        more = _slide(params, out[:, -ctx:], jax.random.fold_in(key, 1), temperature, n=rest, **kw)
        out = jnp.concatenate([out, more], axis=1)
    return out


def main(argv, fv):
    from absl import app, logging

    from gpt2jax.tokenizer import check_vocab, for_checkpoint, get_tokenizer

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # keep Orbax's restore INFO lines off the console
    F = fv
    if bool(F.hf) == bool(F.workdir):
        raise app.UsageError("give exactly one of --workdir=RUN or --hf=DIR")
    for name in ("max_new_tokens", "num_samples"):
        if F[name].value < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {F[name].value}")
    if F.hf:
        from gpt2jax.convert import from_hf

        config, params = from_hf(F.hf)
        tok = get_tokenizer()  # a GPT2LMHeadModel directory holds GPT-2's
    else:
        from gpt2jax.checkpoint import load_params

        config, params = load_params(F.workdir, step=F.step)
        tok = for_checkpoint(F.workdir, F.step)  # the run's own: GPT-2's BPE, bytes or a trained BPE
    check_vocab(tok, config.model.vocab_size)
    ids = tok.encode(F.prompt) if F.prompt else [tok.eot_token]
    ids = ids[-config.model.block_size:]  # keep the end of a prompt too long for the context
    prompt = np.tile(np.asarray(ids, np.int32)[None], (F.num_samples, 1))
    out = generate(
        config.model, params, prompt, F.max_new_tokens, key=jax.random.PRNGKey(F.seed),
        temperature=F.temperature, top_k=F.top_k, top_p=F.top_p,
    )
    for i, row in enumerate(np.asarray(out)):
        if F.num_samples > 1:
            print(f"--- sample {i}")
        print(tok.decode(row.tolist()), flush=True)


def define_flags(fv) -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "A training run's workdir (or a converted checkpoint's).", flag_values=fv)
    flags.DEFINE_string("hf", None, "A Hugging Face GPT-2 directory (config.json + model.safetensors).",
                        flag_values=fv)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=fv)
    flags.DEFINE_string("prompt", "", "Text to continue (default: start from end-of-text).", flag_values=fv)
    flags.DEFINE_integer("max_new_tokens", 100, "Tokens to generate. Past the model's context (block_size) "
                         "generation slides: each further token comes from a full forward pass over the "
                         "last block_size tokens (no cache, so slower).", flag_values=fv)
    flags.DEFINE_float("temperature", 0.8, "Sampling temperature; 0 = greedy.", flag_values=fv)
    flags.DEFINE_integer("top_k", 200, "Keep the k most likely tokens (0 = all).", flag_values=fv)
    flags.DEFINE_float("top_p", 1.0, "Nucleus sampling: keep the smallest set with this probability.",
                       flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed.", flag_values=fv)
    flags.DEFINE_integer("num_samples", 1, "How many samples to draw.", flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
