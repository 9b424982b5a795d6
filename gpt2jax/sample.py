"""KV-cache text generation and its CLI.

    python -m gpt2jax.sample --workdir=runs/shk --prompt="ROMEO." --max_new_tokens=100 \
        [--temperature=0.8 --top_k=200 --top_p=0.95 --seed=0 --num_samples=1 --step=S]
    python -m gpt2jax.sample --workdir=runs/shk --num_samples=500 --out=samples.jsonl \
        [--watermark=kgw --watermark_key=SECRET --watermark_gamma=0.25 --watermark_delta=2.0]

--num_samples=N draws N samples in one batched run, sample i with its own key PRNGKey(seed + i), so it is
token for token what `--seed=SEED+i --num_samples=1` draws alone. --out=FILE.jsonl writes them one JSON
object a line (index, seed, prompt, prompt_ids, the continuation's text and ids, settings).

--watermark=kgw is Kirchenbauer et al. 2023's watermark (gpt2jax/watermark.py): delta is added to the logits
of a green list seeded by the secret key and the previous token(s) before temperature, top-k and top-p. It
works on the cached and the sliding steps alike and costs no extra forward pass (one keyed permutation of
the vocabulary per token). Detect it with `python -m gpt2jax.detect` and the same key (docs/generation_controls.md).

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

from gpt2jax import watermark as wm_lib
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


def _pick_rows(logits_BV, k_B, temperature, top_k, top_p, greedy):
    """_pick with one key per row: row b draws exactly what _pick would draw for it alone with k_B[b]."""
    if greedy:
        return jnp.argmax(logits_BV, axis=-1)
    filtered = filter_logits(logits_BV, temperature, top_k, top_p)
    return jax.vmap(lambda k, logits_V: jax.random.categorical(k, logits_V, axis=-1))(k_B, filtered)


def _split(key):
    """(next key, this step's key): of one key [2], or of each row's key [B, 2]."""
    if key.ndim == 1:
        return jax.random.split(key)
    ks = jax.vmap(jax.random.split)(key)
    return ks[:, 0], ks[:, 1]


def _chooser(temperature, top_k, top_p, greedy, watermark, wm_args, vocab_size):
    """pick(logits [B, V], key, recent tokens [B, context]) -> tokens [B]. Without a watermark it is _pick
    (one key for the batch) or _pick_rows (a key per row); with one, delta goes on each row's green list
    first (gpt2jax.watermark), before temperature, top-k and top-p."""

    def pick(logits_BV, k, recent_BH):
        if watermark is not None:
            wm_key, wm_delta = wm_args
            logits_BV = wm_lib.bias_logits(logits_BV, wm_key, recent_BH, wm_delta, vocab_size=vocab_size,
                                           gamma=watermark[0])
        fn = _pick if k.ndim == 1 else _pick_rows
        return fn(logits_BV, k, temperature, top_k, top_p, greedy)

    return pick


_STATIC = ("model_cfg", "max_new_tokens", "top_k", "top_p", "greedy", "watermark")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _generate(params, prompt_BT, key, temperature, wm_args=None, *, top_p, model_cfg, max_new_tokens, top_k,
              greedy, watermark=None):
    """max_new_tokens tokens with the KV cache. key: one key [2] for the batch, or one per row [B, 2].
    watermark: None, or static (gamma, context) with wm_args = (key words, delta)."""
    model = GPT2(model_cfg)
    B, T0 = prompt_BT.shape
    cache = init_cache(model_cfg, B, T0 + max_new_tokens)
    logits, cache = model.apply({"params": params}, prompt_BT, cache, 0, method=GPT2.decode)
    pick = _chooser(temperature, top_k, top_p, greedy, watermark, wm_args, model_cfg.vocab_size)

    if watermark is None:  # the plain program, exactly as without watermarks
        def step(carry, i):
            last_logits, cache, key = carry
            key, k = _split(key)
            tok = pick(last_logits, k, None).astype(jnp.int32)
            logits, cache = model.apply({"params": params}, tok[:, None], cache, T0 + i, method=GPT2.decode)
            return (logits[:, -1], cache, key), tok

        _, toks = jax.lax.scan(step, (logits[:, -1], cache, key), jnp.arange(max_new_tokens))
        return jnp.concatenate([prompt_BT, toks.T], axis=1)

    def wm_step(carry, i):  # the same, carrying the last `context` tokens that seed the green list
        last_logits, cache, key, recent = carry
        key, k = _split(key)
        tok = pick(last_logits, k, recent).astype(jnp.int32)
        logits, cache = model.apply({"params": params}, tok[:, None], cache, T0 + i, method=GPT2.decode)
        recent = jnp.concatenate([recent[:, 1:], tok[:, None].astype(jnp.uint32)], axis=1)
        return (logits[:, -1], cache, key, recent), tok

    recent = wm_lib.left_context(prompt_BT, watermark[1])
    _, toks = jax.lax.scan(wm_step, (logits[:, -1], cache, key, recent), jnp.arange(max_new_tokens))
    return jnp.concatenate([prompt_BT, toks.T], axis=1)


@functools.partial(jax.jit, static_argnames=("model_cfg", "n", "top_k", "top_p", "greedy", "watermark"))
def _slide(params, window_BT, key, temperature, wm_args=None, *, top_p, model_cfg, n, top_k, greedy,
           watermark=None):
    """n tokens past the context: each from a full forward pass over the last block_size tokens."""
    model = GPT2(model_cfg)
    pick = _chooser(temperature, top_k, top_p, greedy, watermark, wm_args, model_cfg.vocab_size)

    def step(carry, _):
        window, key = carry
        key, k = _split(key)
        logits = model.apply({"params": params}, window)[:, -1]
        recent = None if watermark is None else wm_lib.left_context(window, watermark[1])
        tok = pick(logits, k, recent).astype(jnp.int32)
        return (jnp.concatenate([window[:, 1:], tok[:, None]], axis=1), key), tok

    _, toks = jax.lax.scan(step, (window_BT, key), None, length=n)
    return toks.T


def check_settings(temperature, top_k, top_p) -> None:
    """ValueError naming a sampling setting out of its range."""
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = all tokens), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (1 = no nucleus filtering), got {top_p}")


def generate(model_cfg, params, prompt_tokens, max_new_tokens: int, *, key=None, keys=None,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, watermark=None):
    """Continue each row of `prompt_tokens` [B, T0] by max_new_tokens. temperature=0 is greedy.
    Returns int32 [B, T0 + max_new_tokens]. Tokens past the context (block_size) slide: each is
    predicted from the last block_size tokens by a full forward pass (see the module docstring).

    key: one PRNG key for the whole batch (default PRNGKey(0)). keys: instead, one key per row ([B, 2], e.g.
    a stack of PRNGKey(seed_b)): row b is then exactly what generating it alone with key=keys[b] gives.
    watermark: a gpt2jax.watermark.Watermark to watermark every row with (Kirchenbauer et al. 2023)."""
    prompt = jnp.asarray(prompt_tokens, jnp.int32)
    if prompt.ndim == 1:
        prompt = prompt[None]
    if prompt.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    check_settings(temperature, top_k, top_p)
    T0, ctx = prompt.shape[1], int(model_cfg.block_size)
    if T0 > ctx:
        raise ValueError(f"the prompt ({T0} tokens) is longer than the model's context of {ctx} tokens")
    if keys is not None:
        if key is not None:
            raise ValueError("give key (one for the batch) or keys (one per row), not both")
        key = jnp.asarray(keys)
        if key.ndim != 2 or key.shape[0] != prompt.shape[0]:
            raise ValueError(f"keys must be one PRNG key per row: shape [{prompt.shape[0]}, 2], got {key.shape}")
    key = jax.random.PRNGKey(0) if key is None else key
    kw = dict(top_p=float(top_p), model_cfg=ModelConfig.of(model_cfg), top_k=int(top_k), greedy=temperature <= 0.0)
    extra = ()
    if watermark is not None:
        kw["watermark"] = (float(watermark.gamma), int(watermark.context))
        extra = ((watermark.key_words(), jnp.float32(watermark.delta)),)
    temperature = jnp.float32(temperature)
    cached = min(int(max_new_tokens), ctx - T0)
    out = prompt
    if cached > 0:
        out = _generate(params, prompt, key, temperature, *extra, max_new_tokens=cached, **kw)
    rest = int(max_new_tokens) - cached
    if rest > 0:
        slide_key = jax.random.fold_in(key, 1) if key.ndim == 1 else jax.vmap(jax.random.fold_in, (0, None))(key, 1)
        more = _slide(params, out[:, -ctx:], slide_key, temperature, *extra, n=rest, **kw)
        out = jnp.concatenate([out, more], axis=1)
    return out


def check_out_path(path, flag: str = "--out") -> None:
    """FlagsError before any work when `path` cannot be written as a file: a directory, or in no directory."""
    import os

    from gpt2jax.errors import FlagsError

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise FlagsError(f"{flag}={path} is a directory, not a file")
    if not os.path.isdir(folder):
        raise FlagsError(f"{flag}={path}: the directory {folder} does not exist")


def check_flags(F) -> None:
    """FlagsError (one `error:` line, exit 2) naming a flag out of its range, before any model is loaded."""
    from gpt2jax.errors import FlagsError

    for name in ("max_new_tokens", "num_samples"):
        if F[name].value < 1:
            raise FlagsError(f"--{name}={F[name].value}: must be >= 1")
    if not F.temperature >= 0.0:
        raise FlagsError(f"--temperature={F.temperature}: must be >= 0 (0 = greedy)")
    if F.top_k < 0:
        raise FlagsError(f"--top_k={F.top_k}: must be >= 0 (0 = all tokens)")
    if not 0.0 < F.top_p <= 1.0:
        raise FlagsError(f"--top_p={F.top_p}: must be in (0, 1] (1 = no nucleus filtering)")
    if F.out:
        check_out_path(F.out)
    if F.watermark == "none":
        return
    if F.watermark_key is None:
        raise FlagsError("--watermark=kgw needs --watermark_key=INT (the secret integer the green lists are "
                         "seeded with; detection needs the same)")
    if not 0 <= F.watermark_key < 2**64:
        raise FlagsError(f"--watermark_key={F.watermark_key}: must be in [0, 2**64)")
    if not 0.0 < F.watermark_gamma < 1.0:
        raise FlagsError(f"--watermark_gamma={F.watermark_gamma}: must be in (0, 1)")
    if not F.watermark_delta >= 0.0:
        raise FlagsError(f"--watermark_delta={F.watermark_delta}: must be >= 0")
    if not 1 <= F.watermark_context <= wm_lib.MAX_CONTEXT:
        raise FlagsError(f"--watermark_context={F.watermark_context}: must be in [1, {wm_lib.MAX_CONTEXT}]")


def main(argv, fv):
    import json
    import sys

    from absl import app, logging

    from gpt2jax.tokenizer import check_vocab, for_checkpoint, get_tokenizer

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # keep Orbax's restore INFO lines off the console
    F = fv
    if bool(F.hf) == bool(F.workdir):
        raise app.UsageError("give exactly one of --workdir=RUN or --hf=DIR")
    check_flags(F)
    watermark = None
    if F.watermark == "kgw":
        watermark = wm_lib.Watermark(int(F.watermark_key), F.watermark_gamma, F.watermark_delta,
                                     F.watermark_context)
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
    ctx = int(config.model.block_size)
    if len(ids) > ctx:  # keep the end of a prompt too long for the context
        print(f"note: the prompt is {len(ids)} tokens, longer than the model's context of {ctx}: its first "
              f"{len(ids) - ctx} tokens were dropped", file=sys.stderr, flush=True)
        ids = ids[-ctx:]
    n = F.num_samples
    seeds = [F.seed + i for i in range(n)]
    prompt = np.tile(np.asarray(ids, np.int32)[None], (n, 1))
    settings = dict(temperature=F.temperature, top_k=F.top_k, top_p=F.top_p)
    if n == 1:  # the one-sample program, as it always was
        rng = dict(key=jax.random.PRNGKey(F.seed))
    else:  # one key per sample: sample i is what --seed=SEED+i --num_samples=1 gives
        rng = dict(keys=jnp.stack([jax.random.PRNGKey(s) for s in seeds]))
    out = np.asarray(generate(config.model, params, prompt, F.max_new_tokens, watermark=watermark, **rng,
                              **settings))
    if F.out:
        from gpt2jax.fileio import write_text_atomic

        record = {"model": F.workdir or F.hf, "step": F.step, "max_new_tokens": F.max_new_tokens, **settings,
                  "tokenizer": tok.name, "watermark": watermark.settings() if watermark else None}
        lines = []
        for i, row in enumerate(out):
            new = row[len(ids):].tolist()
            lines.append(json.dumps({"index": i, "seed": seeds[i], "prompt": F.prompt, "prompt_ids": list(ids),
                                     "text": tok.decode(new), "ids": new, "settings": record}) + "\n")
        write_text_atomic(F.out, "".join(lines))
        print(f"wrote {n} sample{'s' if n > 1 else ''} to {F.out} (seeds {seeds[0]}..{seeds[-1]})", flush=True)
        return
    for i, row in enumerate(out):
        if n > 1:
            print(f"--- sample {i} (seed {seeds[i]})")
        print(tok.decode(row.tolist()), flush=True)


def define_flags(fv) -> None:
    from absl import flags

    flags.DEFINE_string("workdir", None, "A training run's workdir (or a converted checkpoint's).", flag_values=fv)
    flags.DEFINE_string("hf", None, "A Hugging Face GPT-2 directory (config.json + model.safetensors).",
                        flag_values=fv)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=fv)
    flags.DEFINE_string("prompt", "", "Text to continue (default: start from end-of-text). A prompt longer "
                        "than the context keeps its last block_size tokens (a note says how many were dropped).",
                        flag_values=fv)
    flags.DEFINE_integer("max_new_tokens", 100, "Tokens to generate. Past the model's context (block_size) "
                         "generation slides: each further token comes from a full forward pass over the "
                         "last block_size tokens (no cache, so slower).", flag_values=fv)
    flags.DEFINE_float("temperature", 0.8, "Sampling temperature, >= 0; 0 = greedy.", flag_values=fv)
    flags.DEFINE_integer("top_k", 200, "Keep the k most likely tokens, >= 0 (0 = all).", flag_values=fv)
    flags.DEFINE_float("top_p", 1.0, "Nucleus sampling, in (0, 1]: keep the smallest set with this probability "
                       "(1 = off).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Random seed (sample i of --num_samples uses seed + i).", flag_values=fv)
    flags.DEFINE_integer("num_samples", 1, "How many samples to draw, in one batched run; sample i equals a "
                         "one-sample run with --seed=SEED+i.", flag_values=fv)
    flags.DEFINE_string("out", None, "Write the samples to this JSON Lines file (one object per sample: index, "
                        "seed, prompt, prompt_ids, text and ids of the continuation, settings) instead of "
                        "printing them.", flag_values=fv)
    flags.DEFINE_enum("watermark", "none", list(wm_lib.SCHEMES), "kgw: Kirchenbauer et al. 2023's watermark "
                      "(gpt2jax/watermark.py; detect it with gpt2jax-detect and the same key).", flag_values=fv)
    flags.DEFINE_integer("watermark_key", None, "The watermark's secret key, an integer in [0, 2**64).",
                         flag_values=fv)
    flags.DEFINE_float("watermark_gamma", 0.25, "Green fraction of the vocabulary, in (0, 1).", flag_values=fv)
    flags.DEFINE_float("watermark_delta", 2.0, "Added to the green logits (before temperature, top-k, top-p).",
                       flag_values=fv)
    flags.DEFINE_integer("watermark_context", 1, "Previous tokens seeding each green list (1 = lefthash).",
                         flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
