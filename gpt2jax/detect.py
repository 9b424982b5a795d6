"""Scores for telling generated text from human text, and the watermark test.

    python -m gpt2jax.detect --workdir=runs/124m --texts=samples.jsonl [--field=text] --out=scores.jsonl
    python -m gpt2jax.detect --hf=hf/gpt2 --text="Some text to score."
        [--watermark_key=SECRET --watermark_gamma=0.25 --watermark_context=1 --ignore_repeated]
        [--observer=runs/124m-other]   # adds binoculars (two models of the same tokenizer)

Each text is encoded with the scoring model's own tokenizer (the run's record: GPT-2's BPE, bytes or a
trained BPE; GPT-2's for --hf), or its token ids are read from a field (--ids_field=ids: what
`sample --out` writes, so generated ids are scored exactly, not re-tokenized). One JSON object per text, in
input order, goes to --out (JSON Lines; stdout without it), then a summary line. Every score is over the
tokens 2..T (the first token has no context), with L_t = log p(x_t | x_<t) under the scoring model:

    log_likelihood   mean_t L_t
    log_rank         mean_t log rank_t    (rank_t: 1 + the number of ids more likely than x_t)
    entropy          mean_t H_t           (H_t = -sum_v p_t(v) log p_t(v), the predictive entropy)
    fast_detectgpt   (sum_t L_t - sum_t mu_t) / sqrt(sum_t var_t), mu_t = sum_v p_t(v) log p_t(v) and
                     var_t = sum_v p_t(v) log^2 p_t(v) - mu_t^2: Bao et al. 2024's analytic curvature with the
                     sampling and scoring model the same
    binoculars       (--observer) mean_t(-L_t) / mean_t(-sum_v q_t(v) log p_t(v)), q the observer's
                     distribution: the scoring model's (performer's) log perplexity over the observer-performer
                     cross-perplexity (Hans et al. 2024)
    watermark_z, watermark_p   (--watermark_key) the Kirchenbauer et al. 2023 test (gpt2jax/watermark.py),
                     over the tokens with --watermark_context tokens before them; needs no forward pass

A text longer than the model's context is scored as sampling slides past it: token t >= block_size is
predicted from the block_size tokens before it (one forward pass each). The scores are float32 (--dtype).
docs/generation_controls.md says what each score means, assumes, and how to use it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

from gpt2jax import watermark as wm_lib
from gpt2jax.errors import DetectionError, FlagsError
from gpt2jax.model import GPT2, ModelConfig

SCORES = ("log_likelihood", "log_rank", "entropy", "fast_detectgpt")
WINDOW_BATCH = 16  # sliding windows per forward pass, for texts longer than the context


# ------------------------------------------------------------------------------------ per-position stats
def _bucket(n: int, cap: int | None = None) -> int:
    b = max(16, 1 << (max(n, 1) - 1).bit_length())
    return min(b, cap) if cap else b


@functools.partial(jax.jit, static_argnames=("model_cfg",))
def _forward(params, tokens_BT, *, model_cfg):
    return GPT2(model_cfg).apply({"params": params}, tokens_BT)


@functools.partial(jax.jit, static_argnames=("model_cfg",))
def _last_logits(params, windows_BT, *, model_cfg):
    return GPT2(model_cfg).apply({"params": params}, windows_BT)[:, -1]


def next_token_logits(model_cfg, params, ids) -> np.ndarray:
    """float32 [T - 1, vocab_size]: the logits predicting ids[1:], each from the tokens before it (at most
    block_size of them: past the context, from a window sliding over the last block_size tokens)."""
    cfg = ModelConfig.of(model_cfg)
    ids = np.asarray(ids, np.int32)
    T, ctx, V = len(ids), int(cfg.block_size), int(cfg.vocab_size)
    first = min(T, ctx)
    width = _bucket(first, ctx)  # right padding: causal attention keeps it out of the real positions
    toks = np.zeros((1, width), np.int32)
    toks[0, :first] = ids[:first]
    # The first window predicts ids[1:first + 1] (ids[ctx] too, from ids[0:ctx], when T > ctx) ...
    parts = [np.asarray(_forward(params, toks, model_cfg=cfg))[0, :min(T - 1, ctx), :V]]
    starts = list(range(1, T - ctx))  # ... then window ids[s:s + ctx] predicts ids[s + ctx]
    for i in range(0, len(starts), WINDOW_BATCH):
        chunk = starts[i:i + WINDOW_BATCH]
        win = np.stack([ids[s:s + ctx] for s in chunk] + [ids[chunk[0]:chunk[0] + ctx]] * (WINDOW_BATCH - len(chunk)))
        parts.append(np.asarray(_last_logits(params, win, model_cfg=cfg))[:len(chunk), :V])
    return np.concatenate(parts, axis=0).astype(np.float32)


@jax.jit
def _stats(logits_NV, targets_N):
    logp = jax.nn.log_softmax(logits_NV, axis=-1)
    lt = jnp.take_along_axis(logp, targets_N[:, None], axis=-1)[:, 0]
    rank = 1 + jnp.sum(logp > lt[:, None], axis=-1)
    p = jnp.exp(logp)
    mu = jnp.sum(p * logp, axis=-1)
    var = jnp.sum(p * logp * logp, axis=-1) - mu * mu
    return lt, rank, mu, var


@jax.jit
def _cross_entropy(observer_NV, performer_NV):
    q = jax.nn.softmax(observer_NV, axis=-1)
    return -jnp.sum(q * jax.nn.log_softmax(performer_NV, axis=-1), axis=-1)


def _padded(x, n=None):
    size = _bucket(len(x))
    return np.pad(x, ((0, size - len(x)),) + ((0, 0),) * (x.ndim - 1))


def position_stats(logits_NV, targets_N) -> dict:
    """Per scored token: log p of the token, its 1-based rank, mu and var of log p under the model."""
    n = len(targets_N)
    lt, rank, mu, var = _stats(_padded(np.asarray(logits_NV, np.float32), n), _padded(np.asarray(targets_N, np.int32), n))
    return {"logp": np.asarray(lt)[:n].astype(np.float64), "rank": np.asarray(rank)[:n].astype(np.float64),
            "mu": np.asarray(mu)[:n].astype(np.float64), "var": np.asarray(var)[:n].astype(np.float64)}


def scores_from_stats(st: dict) -> dict:
    var = float(np.sum(st["var"]))
    return {
        "log_likelihood": float(np.mean(st["logp"])),
        "log_rank": float(np.mean(np.log(st["rank"]))),
        "entropy": float(np.mean(-st["mu"])),
        "fast_detectgpt": float((np.sum(st["logp"]) - np.sum(st["mu"])) / math.sqrt(var)) if var > 0 else None,
    }


def score_ids(model_cfg, params, ids, *, observer=None, watermark: dict | None = None) -> dict:
    """Every score of one text's token ids (len >= 2). observer: (model_cfg, params) of the observer for
    binoculars; watermark: dict(key, gamma, context, ignore_repeated) for the watermark test."""
    ids = [int(i) for i in ids]
    logits = next_token_logits(model_cfg, params, ids)
    targets = np.asarray(ids[1:], np.int32)
    st = position_stats(logits, targets)
    out = {"tokens": len(ids), "scored": len(ids) - 1, **scores_from_stats(st)}
    if observer is not None:
        obs = next_token_logits(observer[0], observer[1], ids)
        n = len(targets)
        xent = np.asarray(_cross_entropy(_padded(obs, n), _padded(logits, n)))[:n].astype(np.float64)
        out["binoculars"] = float(np.mean(-st["logp"]) / np.mean(xent))
    if watermark is not None:
        out.update(wm_lib.score(ids, watermark["key"], vocab_size=int(ModelConfig.of(model_cfg).vocab_size),
                                gamma=watermark["gamma"], context=watermark["context"],
                                ignore_repeated=watermark.get("ignore_repeated", False)))
    return out


# ---------------------------------------------------------------------------------------------- CLI
def load(workdir=None, hf=None, step=None, dtype="float32"):
    """(model config, params, tokenizer, name) of a run or a Hugging Face GPT-2 directory."""
    from gpt2jax.tokenizer import check_vocab, for_checkpoint, get_tokenizer

    if hf:
        from gpt2jax.convert import from_hf

        config, params = from_hf(hf)
        tok, name = get_tokenizer(), hf
    else:
        from gpt2jax.checkpoint import load_params

        config, params = load_params(workdir, step=step)
        tok, name = for_checkpoint(workdir, step), workdir
    model_cfg = ModelConfig.of(config.model)
    if dtype:
        model_cfg = dataclasses.replace(model_cfg, dtype=dtype)
    check_vocab(tok, model_cfg.vocab_size)
    return model_cfg, params, tok, name


def check_same_tokenizer(a, b, name_a, name_b, vocab_a, vocab_b) -> None:
    if a.vocab_hash != b.vocab_hash or int(vocab_a) != int(vocab_b):
        raise DetectionError(
            f"tokenizer mismatch: {name_a} uses {a.name} ({a.n_vocab} ids, hash {a.vocab_hash}, model vocabulary "
            f"{vocab_a}) but --observer={name_b} uses {b.name} ({b.n_vocab} ids, hash {b.vocab_hash}, model "
            f"vocabulary {vocab_b}): binoculars compares the two models' distributions over the same tokens")


def read_texts(F, tok, vocab_size: int, min_tokens: int) -> list[tuple[str, list[int]]]:
    """(where, ids) of each text: --text, or each line of --texts (its --field, or --ids_field's ids)."""
    items = []
    if F.text is not None:
        items.append(("--text", F.text, None))
    else:
        try:
            with open(F.texts) as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise DetectionError(f"--texts={F.texts}: cannot read it ({e.strerror or e})") from e
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{F.texts} line {n}"
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise DetectionError(f"{where}: not JSON ({e})") from e
            field = F.ids_field or F.field
            if not isinstance(obj, dict) or field not in obj:
                raise DetectionError(f"{where}: no field {field!r} (--{'ids_field' if F.ids_field else 'field'})")
            if F.ids_field:
                items.append((where, None, obj[field]))
            else:
                if not isinstance(obj[field], str):
                    raise DetectionError(f"{where}: field {field!r} is not a string")
                items.append((where, obj[field], None))
        if not items:
            raise DetectionError(f"--texts={F.texts}: no texts in it")
    out = []
    for where, text, ids in items:
        if ids is None:
            if text == "":
                raise DetectionError(f"{where}: the text is empty")
            ids = tok.encode(text)
        elif not (isinstance(ids, list) and all(isinstance(i, int) and 0 <= i < vocab_size for i in ids)):
            raise DetectionError(f"{where}: field {F.ids_field!r} is not a list of token ids in [0, {vocab_size})")
        if len(ids) == 0:
            raise DetectionError(f"{where}: the text is empty")
        if len(ids) < min_tokens:
            need = ("2 (the first token has no context)" if min_tokens == 2 else
                    f"{min_tokens} (the watermark test with --watermark_context={min_tokens - 1})")
            raise DetectionError(f"{where}: the text is {len(ids)} token{'s' if len(ids) != 1 else ''} long; "
                                 f"scoring needs at least {need}")
        out.append((where, list(ids)))
    return out


def summary_line(results: list[dict], z_threshold: float, name: str) -> str:
    parts = [f"{len(results)} text{'s' if len(results) != 1 else ''}, {sum(r['scored'] for r in results)} "
             f"tokens scored with {name}"]
    means = []
    for key in (*SCORES, "binoculars"):
        vals = [r[key] for r in results if r.get(key) is not None]
        if vals:
            means.append(f"{key} {np.mean(vals):.4g}")
    parts.append("mean " + ", ".join(means))
    zs = [r["watermark_z"] for r in results if r.get("watermark_z") is not None]
    if "watermark_z" in (results[0] if results else {}):
        parts.append(f"watermark z > {z_threshold:g}: {sum(z > z_threshold for z in zs)} of {len(results)}"
                     + (f" (median z {np.median(zs):.3g})" if zs else ""))
    return "summary: " + "; ".join(parts)


def check_flags(F) -> None:
    if (F.text is None) == (F.texts is None):
        raise FlagsError("give exactly one of --texts=FILE.jsonl or --text=TEXT")
    if bool(F.workdir) == bool(F.hf):
        raise FlagsError("give exactly one scoring model: --workdir=RUN or --hf=DIR")
    if F.ids_field and F.text is not None:
        raise FlagsError("--ids_field reads token ids from --texts lines; it does not go with --text")
    if F.out:
        from gpt2jax.sample import check_out_path

        check_out_path(F.out)
    if F.watermark_key is not None:
        if not 0 <= F.watermark_key < 2**64:
            raise FlagsError(f"--watermark_key={F.watermark_key}: must be in [0, 2**64)")
        if not 0.0 < F.watermark_gamma < 1.0:
            raise FlagsError(f"--watermark_gamma={F.watermark_gamma}: must be in (0, 1)")
        if not 1 <= F.watermark_context <= wm_lib.MAX_CONTEXT:
            raise FlagsError(f"--watermark_context={F.watermark_context}: must be in [1, {wm_lib.MAX_CONTEXT}]")
    elif F.ignore_repeated:
        raise FlagsError("--ignore_repeated is a setting of the watermark test: give --watermark_key too")


def main(argv, fv):
    from absl import app, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    F = fv
    check_flags(F)
    model_cfg, params, tok, name = load(F.workdir, F.hf, F.step, F.dtype)
    observer = None
    if F.observer:
        o_cfg, o_params, o_tok, o_name = load(F.observer, None, None, F.dtype)
        check_same_tokenizer(tok, o_tok, name, o_name, model_cfg.vocab_size, o_cfg.vocab_size)
        observer = (o_cfg, o_params)
    watermark = None
    if F.watermark_key is not None:
        watermark = dict(key=int(F.watermark_key), gamma=F.watermark_gamma, context=F.watermark_context,
                         ignore_repeated=F.ignore_repeated)
    min_tokens = max(2, F.watermark_context + 1) if watermark else 2
    texts = read_texts(F, tok, int(model_cfg.vocab_size), min_tokens)
    results = []
    lines = []
    for i, (_, ids) in enumerate(texts):
        r = {"index": i, **score_ids(model_cfg, params, ids, observer=observer, watermark=watermark)}
        results.append(r)
        lines.append(json.dumps(r) + "\n")
        if not F.out:
            print(lines[-1], end="", flush=True)
    if F.out:
        from gpt2jax.fileio import write_text_atomic

        write_text_atomic(F.out, "".join(lines))
    print(summary_line(results, F.z_threshold, name) + (f"; wrote {F.out}" if F.out else ""), file=sys.stdout,
          flush=True)


def define_flags(fv) -> None:
    from absl import flags

    flags.DEFINE_string("texts", None, "A JSON Lines file of texts to score (one object a line).", flag_values=fv)
    flags.DEFINE_string("field", "text", "The field of each --texts line holding the text.", flag_values=fv)
    flags.DEFINE_string("ids_field", None, "Score the token ids in this field of each line (e.g. `ids`, as "
                        "`sample --out` writes) instead of encoding --field's text.", flag_values=fv)
    flags.DEFINE_string("text", None, "One text to score (instead of --texts).", flag_values=fv)
    flags.DEFINE_string("workdir", None, "The scoring model: a training run's workdir.", flag_values=fv)
    flags.DEFINE_string("hf", None, "The scoring model: a Hugging Face GPT-2 directory.", flag_values=fv)
    flags.DEFINE_integer("step", None, "Checkpoint step of --workdir (default: the latest).", flag_values=fv)
    flags.DEFINE_string("observer", None, "A second run (same tokenizer): adds the binoculars score, with "
                        "the scoring model as performer and this one as observer.", flag_values=fv)
    flags.DEFINE_string("dtype", "float32", "Compute dtype of the models ('' = the run's own).", flag_values=fv)
    flags.DEFINE_string("out", None, "Write one JSON object per text here (JSON Lines); default: stdout.",
                        flag_values=fv)
    flags.DEFINE_integer("watermark_key", None, "The watermark's secret key: adds watermark_z and watermark_p.",
                         flag_values=fv)
    flags.DEFINE_float("watermark_gamma", 0.25, "Green fraction the text was watermarked with.", flag_values=fv)
    flags.DEFINE_integer("watermark_context", 1, "Previous tokens seeding each green list (as sampled).",
                         flag_values=fv)
    flags.DEFINE_bool("ignore_repeated", False, "Count each (context, token) tuple once in the watermark test.",
                      flag_values=fv)
    flags.DEFINE_float("z_threshold", 4.0, "The summary counts texts with watermark_z above this.",
                       flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
