"""The green list of Kirchenbauer et al. (2023, "A Watermark for Large Language Models"), shared by watermarked
sampling (gpt2jax.sample --watermark=kgw) and detection (gpt2jax.detect).

At each position the `context` previous tokens (1: the previous token, their "lefthash" scheme) and a secret
key seed a pseudorandom function; the green list is the first int(gamma * V) ids of the keyed permutation of
the vocabulary (V = the model's `vocab_size`, padded rows excluded) it defines. Sampling adds `delta` to the
green ids' logits (before temperature, top-k and top-p); detection counts the green tokens of a text:

    z = (green - gamma' T) / sqrt(T gamma' (1 - gamma')),   p = P(N(0, 1) > z)   (one-sided)

over the T scored tokens (every token with `context` tokens before it), gamma' = int(gamma V) / V the exact
green fraction (0.25 -> 0.249995 for GPT-2's 50257 ids; 64/257 for bytes).

The pseudorandom function is ours, in JAX: Threefry-2x32 (the counter-based PRF under jax.random, called
directly so no PRNG-key derivation setting such as jax_threefry_partitionable can change it) keyed by the
secret (a 64-bit integer split into two 32-bit words), chained over the context tokens, then evaluated at the
counters 0..V-1; the green ids are those of the int(gamma V) smallest outputs (ties broken by the lower id).
Kirchenbauer's reference code and Hugging Face's `WatermarkingConfig` build their lists with torch's
generator (seeded by key * previous token), whose stream we cannot reproduce, so their green lists differ
from ours: text watermarked by either is detected only by the same implementation.

Not cryptographic in any proof sense; the key is what keeps the lists secret, as in the paper.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry_2x32

SCHEMES = ("none", "kgw")
MAX_CONTEXT = 8
PAD = 0xFFFFFFFF  # the context "token" before the start of a sequence (no real id)


@dataclasses.dataclass(frozen=True)
class Watermark:
    """A KGW watermark: secret `key` (0 <= key < 2**64), green fraction `gamma`, logit bias `delta`,
    `context` previous tokens seeding each list."""

    key: int
    gamma: float = 0.25
    delta: float = 2.0
    context: int = 1

    def __post_init__(self):
        check(self.key, self.gamma, self.context, self.delta)

    def key_words(self):
        return key_words(self.key)

    def settings(self) -> dict:
        """What a sample records (not the key: a secret does not travel with the text it marks)."""
        return {"scheme": "kgw", "gamma": self.gamma, "delta": self.delta, "context": self.context}


def check(key, gamma, context, delta=0.0) -> None:
    """ValueError naming the setting out of range."""
    if not isinstance(key, (int, np.integer)) or not 0 <= int(key) < 2**64:
        raise ValueError(f"watermark key must be an integer in [0, 2**64), got {key!r}")
    if not 0.0 < float(gamma) < 1.0:
        raise ValueError(f"watermark gamma must be in (0, 1), got {gamma}")
    if not 1 <= int(context) <= MAX_CONTEXT:
        raise ValueError(f"watermark context must be in [1, {MAX_CONTEXT}], got {context}")
    if not (math.isfinite(float(delta)) and float(delta) >= 0.0):
        raise ValueError(f"watermark delta must be >= 0, got {delta}")


def key_words(key: int) -> jax.Array:
    """The secret as the two uint32 words Threefry is keyed with."""
    key = int(key)
    return jnp.asarray([key & 0xFFFFFFFF, key >> 32], jnp.uint32)


def green_size(vocab_size: int, gamma: float) -> int:
    return int(vocab_size * gamma)


def green_fraction(vocab_size: int, gamma: float) -> float:
    """gamma': the exact fraction of the vocabulary that is green (what the z-test's null uses)."""
    return green_size(vocab_size, gamma) / vocab_size


def _row_key(key2, ctx_H):
    """The PRF key of one position: the secret chained through Threefry over its context tokens."""
    k0, k1 = key2[0], key2[1]
    for j in range(ctx_H.shape[0]):
        out = threefry_2x32((k0, k1), jnp.stack([ctx_H[j].astype(jnp.uint32), jnp.uint32(j)]))
        k0, k1 = out[0], out[1]
    return k0, k1


def _row_values(key2, ctx_H, vocab_size: int):
    k0, k1 = _row_key(key2, ctx_H)
    return threefry_2x32((k0, k1), jnp.arange(vocab_size, dtype=jnp.uint32))


def green_mask(key2, ctx_BH, vocab_size: int, gamma: float) -> jax.Array:
    """bool [B, vocab_size]: each row's green list. key2: key_words(key); ctx_BH: the `context` tokens
    before the position (oldest first; PAD where the sequence has not started)."""
    n = green_size(vocab_size, gamma)

    def row(ctx_H):
        order = jnp.argsort(_row_values(key2, ctx_H, vocab_size), stable=True)
        return jnp.zeros(vocab_size, bool).at[order[:n]].set(True)

    return jax.vmap(row)(jnp.asarray(ctx_BH).astype(jnp.uint32))


def is_green(key2, ctx_NH, tokens_N, vocab_size: int, gamma: float) -> jax.Array:
    """bool [N]: whether tokens_N[i] is in the green list of context ctx_NH[i] (the same lists as green_mask,
    by the token's rank among the PRF values, without sorting)."""
    n = green_size(vocab_size, gamma)
    ids = jnp.arange(vocab_size, dtype=jnp.uint32)

    def one(ctx_H, tok):
        u = _row_values(key2, ctx_H, vocab_size)
        ut = u[tok]
        rank = jnp.sum(u < ut) + jnp.sum((u == ut) & (ids < tok.astype(jnp.uint32)))
        return rank < n

    return jax.vmap(one)(jnp.asarray(ctx_NH).astype(jnp.uint32), jnp.asarray(tokens_N).astype(jnp.int32))


def bias_logits(logits_BV, key2, ctx_BH, delta, *, vocab_size: int, gamma: float):
    """logits + delta on each row's green ids (the padded vocabulary columns, if any, untouched)."""
    mask = green_mask(key2, ctx_BH, vocab_size, gamma)
    pad = logits_BV.shape[-1] - vocab_size
    if pad:
        mask = jnp.pad(mask, ((0, 0), (0, pad)))
    return logits_BV + jnp.where(mask, jnp.asarray(delta, logits_BV.dtype), 0.0)


def left_context(tokens_BT, context: int):
    """The last `context` tokens of each row (PAD-filled on the left when a row is shorter)."""
    tokens_BT = jnp.asarray(tokens_BT).astype(jnp.uint32)
    if tokens_BT.shape[1] < context:
        fill = jnp.full((tokens_BT.shape[0], context - tokens_BT.shape[1]), PAD, jnp.uint32)
        tokens_BT = jnp.concatenate([fill, tokens_BT], axis=1)
    return tokens_BT[:, -context:]


# ----------------------------------------------------------------------------------- detection
_is_green = jax.jit(is_green, static_argnames=("vocab_size", "gamma"))


def _bucket(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def green_flags(ids, key: int, *, vocab_size: int, gamma: float, context: int) -> np.ndarray:
    """bool [T - context]: whether each token from position `context` on (0-based) is green."""
    ids = np.asarray(ids, np.int64)
    n = len(ids) - context
    if n <= 0:
        return np.zeros(0, bool)
    ctx = np.stack([ids[j:j + n] for j in range(context)], axis=1)
    tok = ids[context:]
    size = _bucket(n)  # pad to a few shapes so texts of many lengths share compilations
    ctx = np.pad(ctx, ((0, size - n), (0, 0)))
    tok = np.pad(tok, (0, size - n))
    out = _is_green(key_words(key), ctx.astype(np.uint32), tok.astype(np.int32), vocab_size=int(vocab_size),
                    gamma=float(gamma))
    return np.asarray(out)[:n]


def z_score(green: int, scored: int, gamma: float) -> float:
    return (green - gamma * scored) / math.sqrt(scored * gamma * (1.0 - gamma))


def p_value(z: float) -> float:
    """One-sided: P(N(0, 1) > z)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def score(ids, key: int, *, vocab_size: int, gamma: float = 0.25, context: int = 1,
          ignore_repeated: bool = False) -> dict:
    """The watermark test on one text's token ids: tokens scored, green, green fraction, z and p. With
    ignore_repeated, each (context, token) tuple counts once (its first occurrence)."""
    check(key, gamma, context)
    ids = [int(i) for i in ids]
    flags = green_flags(ids, key, vocab_size=vocab_size, gamma=gamma, context=context)
    if ignore_repeated:
        seen, keep = set(), []
        for t in range(context, len(ids)):
            tup = tuple(ids[t - context:t + 1])
            keep.append(tup not in seen)
            seen.add(tup)
        flags = flags[np.asarray(keep, bool)] if keep else flags
    scored, green = int(flags.size), int(flags.sum())
    g = green_fraction(vocab_size, gamma)
    out = {"watermark_scored": scored, "watermark_green": green,
           "watermark_green_fraction": green / scored if scored else None,
           "watermark_z": None, "watermark_p": None}
    if scored:
        z = z_score(green, scored, g)
        out["watermark_z"], out["watermark_p"] = z, p_value(z)
    return out
