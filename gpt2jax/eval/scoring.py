"""The batched log-likelihood engine behind every zero-shot task.

Two kinds of request, the two that lm-evaluation-harness's tasks are built from:

  * `Scorer.loglikelihood([(context_tokens, continuation_tokens), ...])` -> [(ll, is_greedy), ...]:
    ll is the summed log-probability of the continuation given the context; is_greedy is True when
    every continuation token is the argmax of the model's distribution at its position.
  * `Scorer.loglikelihood_rolling([tokens, ...])` -> [ll, ...]: the log-probability of each whole
    sequence, scored in windows of the model's block_size with the end-of-text id as the first context
    token (lm-eval's `loglikelihood_rolling`, see `rolling_windows`): GPT-2's 50256 unless the Scorer is
    given its tokenizer's (`prefix_token`, e.g. 256 for a bytes run).

Conventions (lm-evaluation-harness's, `HFLM._loglikelihood_tokens`):
  * Left truncation: the model sees `(context + continuation)[-(block_size + 1):][:-1]` and the
    continuation's log-probabilities are read at the last len(continuation) positions. A continuation
    longer than block_size (lm-eval leaves this undefined) keeps only its last block_size tokens,
    the ones that fit in the window; the rest are not scored.
  * Log-softmax in fp32 over the real vocabulary (padded vocabulary logits are -1e9, so they never
    carry probability mass or win the argmax); argmax ties go to the lowest token id, as in torch.

Speed: requests are sorted by length, padded on the right to one of a few bucket lengths (powers of
two up to block_size, and block_size itself) and grouped into batches of a fixed size. The LM head
runs only at the positions whose next token is scored (C per row: the batch's longest continuation
rounded up to a power of two, `scored_width`), so a multiple-choice task with short answers pays for
the transformer over the context but for the [D, vocab] head on a few positions; rolling
log-likelihoods score every position (C = T). A task compiles once per (bucket, C) pair it meets; the
compiled function is cached per model config and reused across Scorers (e.g. evaluation every K
training steps). Only two numbers per row (the summed
log-likelihood and the greedy flag) come back to the host. With `batch_sharding` (a
jax.sharding.Sharding for [batch, length] arrays, e.g. NamedSharding(mesh, P(('data', 'fsdp'))))
batches are placed with it and the parameters are used where they already live.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gpt2jax.tokenizer import EOT  # GPT-2's <|endoftext|>, lm-eval's prefix token for GPT-2

log = logging.getLogger(__name__)

# Times each cached score function was traced (= compiled for a new shape), keyed like the cache.
_TRACES: dict[str, int] = {}


def _config_key(model_cfg):
    """The model config as a frozen, hashable value (later edits to the caller's config can't leak in)."""
    from gpt2jax.model import ModelConfig

    return ModelConfig.of(model_cfg)


def _make_score_fn(key: str, model_cfg):
    """jit(params, tokens[B,T], positions[B,C], targets[B,C], mask[B,C]) -> (ll[B] f32, greedy[B] bool).
    The transformer runs over all T positions; the LM head (most of the FLOPs at GPT-2's vocabulary)
    only at the C positions whose next token is scored."""
    from gpt2jax.model import GPT2, head_logits

    model = GPT2(key)

    def score(params, tokens_BT, positions_BC, targets_BC, mask_BC):
        _TRACES[key] = _TRACES.get(key, 0) + 1  # runs only while tracing
        hidden_BTD = model.apply({"params": params}, tokens_BT, return_hidden=True)
        hidden_BCD = jnp.take_along_axis(hidden_BTD, positions_BC[..., None], axis=1)
        logits_BCV = head_logits(params, hidden_BCD, key)
        lse_BC = jax.nn.logsumexp(logits_BCV, axis=-1)
        target_logit_BC = jnp.take_along_axis(logits_BCV, targets_BC[..., None], axis=-1)[..., 0]
        ll_BC = target_logit_BC - lse_BC  # log_softmax gathered at the targets only
        greedy_BC = jnp.argmax(logits_BCV, axis=-1) == targets_BC
        ll_B = jnp.sum(jnp.where(mask_BC, ll_BC, 0.0), axis=-1)
        greedy_B = jnp.all(jnp.where(mask_BC, greedy_BC, True), axis=-1)
        return ll_B, greedy_B

    return jax.jit(score)


def scored_width(n: int, T: int) -> int:
    """The scored positions per row for a batch whose longest continuation is n tokens: the smallest
    power of two >= n, at most T (so a task compiles for a few (T, C) pairs, not one per length)."""
    c = 1
    while c < n:
        c *= 2
    return min(c, T)


def default_buckets(block_size: int, smallest: int = 32) -> tuple[int, ...]:
    """Powers of two from `smallest` below block_size, then block_size itself."""
    out, n = [], smallest
    while n < block_size:
        out.append(n)
        n *= 2
    out.append(block_size)
    return tuple(out)


def rolling_windows(tokens: Sequence[int], block_size: int, prefix_token: int = EOT):
    """lm-eval's rolling windows (`get_rolling_token_windows` with context_len=1, made disjoint), as
    (context, continuation) pairs whose continuations partition `tokens`:

      * the first window predicts tokens[:L] from [EOT] + tokens[:L-1];
      * each further full window predicts the next L tokens given the one token before them (the
        windows do not overlap: a window's only context is the last token of the previous one);
      * the final, shorter window of r tokens is given the L-r+1 tokens before it as context, so the
        model input is a full L tokens (as lm-eval does).
    """
    tokens, L = list(tokens), int(block_size)
    n = len(tokens)
    if n == 0:
        return []
    first = min(L, n)
    out = [([prefix_token], tokens[:first])]
    predicted = first
    while predicted < n:
        m = min(n - predicted, L)
        end = predicted + m
        out.append((tokens[end - L - 1 : end - m], tokens[end - m : end]))
        predicted = end
    return out


@dataclasses.dataclass
class ScoreStats:
    requests: int = 0
    batches: int = 0
    tokens: int = 0  # real (unpadded) input tokens run through the model
    padded_tokens: int = 0  # batch * bucket length summed over batches
    seconds: float = 0.0
    compiles: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class Interrupted(Exception):
    """Scoring stopped early because `should_stop()` said so (e.g. Ctrl-C during training)."""


class Scorer:
    """Scores token requests with a GPT-2 (model config + parameters)."""

    def __init__(
        self,
        model_cfg,
        params,
        *,
        batch_size: int = 16,
        buckets: Iterable[int] | None = None,
        batch_sharding: Any = None,
        progress: bool = True,
        should_stop=None,
        prefix_token: int = EOT,
    ):
        self.model_cfg = model_cfg
        self.prefix_token = int(prefix_token)  # the tokenizer's end-of-text id: rolling windows' first context
        self.should_stop = should_stop  # () -> bool, checked between batches (Interrupted when true)
        # host (numpy) parameters, e.g. from convert.from_hf, go to the device once, not every batch
        self.params = jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), params)
        self.block_size = int(model_cfg.block_size)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        b = sorted({min(int(x), self.block_size) for x in (buckets or default_buckets(self.block_size))})
        if b[-1] != self.block_size:
            b.append(self.block_size)
        self.buckets = tuple(b)
        self.batch_sharding = batch_sharding
        self.progress = progress
        self._key = _config_key(model_cfg)
        self._fn = _cached_fn(self._key, model_cfg)
        self._traces_at_start = _TRACES.get(self._key, 0)
        self.last_stats = ScoreStats()

    @property
    def num_compiles(self) -> int:
        """Traces of the score function since this Scorer was made (0 when shapes were cached)."""
        return _TRACES.get(self._key, 0) - self._traces_at_start

    def _bucket(self, n: int) -> int:
        for b in self.buckets:
            if n <= b:
                return b
        return self.buckets[-1]

    def loglikelihood(self, requests, desc: str = "loglikelihood") -> list[tuple[float, bool]]:
        """[(context_tokens, continuation_tokens)] -> [(sum log p(continuation | context), is_greedy)].
        The context must hold at least one token (lm-eval uses [end-of-text] for an empty context)."""
        L = self.block_size
        rows = []  # (input tokens, target tokens, n scored)
        for i, (ctx, cont) in enumerate(requests):
            ctx, cont = list(ctx), list(cont)
            if not ctx:
                raise ValueError(f"request {i}: empty context (use [EOT] as lm-eval does)")
            if not cont:
                raise ValueError(f"request {i}: empty continuation")
            window = (ctx + cont)[-(L + 1) :]
            inp, tgt = window[:-1], window[1:]
            rows.append((inp, tgt, min(len(cont), len(inp))))
        return self._run(rows, desc)

    def loglikelihood_rolling(self, sequences, desc: str = "rolling", prefix_token: int | None = None) -> list[float]:
        """[tokens] -> [log p(tokens)] with lm-eval's rolling windows (see `rolling_windows`), whose first
        context is `prefix_token` (default: the Scorer's). An empty sequence scores 0."""
        prefix = self.prefix_token if prefix_token is None else int(prefix_token)
        pairs, owner = [], []
        for i, toks in enumerate(sequences):
            for pair in rolling_windows(toks, self.block_size, prefix):
                pairs.append(pair)
                owner.append(i)
        out = np.zeros(len(sequences), np.float64)
        for (ll, _), i in zip(self.loglikelihood(pairs, desc=desc), owner):
            out[i] += ll
        return [float(x) for x in out]

    def _run(self, rows, desc) -> list[tuple[float, bool]]:
        from tqdm.auto import tqdm

        B = self.batch_size
        stats = ScoreStats(requests=len(rows))
        ll_out = np.zeros(len(rows), np.float64)
        greedy_out = np.zeros(len(rows), bool)
        # Longest first (lm-eval's order; also surfaces out-of-memory at once), grouped by bucket.
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        by_bucket: dict[int, list[int]] = {}
        for i in order:
            by_bucket.setdefault(self._bucket(len(rows[i][0])), []).append(i)
        batches = [
            (T, by_bucket[T][s : s + B]) for T in sorted(by_bucket, reverse=True) for s in range(0, len(by_bucket[T]), B)
        ]
        traces0 = _TRACES.get(self._key, 0)
        bar = tqdm(total=len(rows), desc=desc, unit="req", disable=not self.progress, leave=False)
        t0 = time.perf_counter()
        pending = None

        def collect(p):
            (ll_B, greedy_B), idx = p
            ll_B, greedy_B = np.asarray(ll_B), np.asarray(greedy_B)
            ll_out[idx] = ll_B[: len(idx)]
            greedy_out[idx] = greedy_B[: len(idx)]
            bar.update(len(idx))
            el = time.perf_counter() - t0
            if el > 0:
                bar.set_postfix(tok_s=f"{stats.tokens / el:,.0f}", refresh=False)

        for T, idx in batches:
            if self.should_stop is not None and self.should_stop():
                bar.close()
                raise Interrupted(f"{desc}: stopped after {stats.batches} of {len(batches)} batches")
            C = scored_width(max(rows[i][2] for i in idx), T)
            tokens = np.zeros((B, T), np.int32)
            positions = np.zeros((B, C), np.int32)
            targets = np.zeros((B, C), np.int32)
            mask = np.zeros((B, C), bool)
            for r, i in enumerate(idx):
                inp, tgt, n = rows[i]
                tokens[r, : len(inp)] = inp
                start = len(inp) - n  # the scored positions: the last n of the input
                positions[r, :n] = np.arange(start, len(inp))
                targets[r, :n] = tgt[start:]
                mask[r, :n] = True
                stats.tokens += len(inp)
            stats.padded_tokens += B * T
            arrays = (tokens, positions, targets, mask)
            if self.batch_sharding is not None:
                arrays = tuple(jax.device_put(a, self.batch_sharding) for a in arrays)
            out = self._fn(self.params, *arrays)  # dispatched asynchronously
            if pending is not None:
                collect(pending)
            pending = (out, np.asarray(idx))
            stats.batches += 1
        if pending is not None:
            collect(pending)
        bar.close()
        stats.seconds = time.perf_counter() - t0
        stats.compiles = _TRACES.get(self._key, 0) - traces0
        self.last_stats = stats
        if rows:
            log.info(
                "%s: %d requests, %d batches, %.0f tokens/s (%.0f%% padding), %d compiles",
                desc, stats.requests, stats.batches, stats.tokens_per_s,
                100.0 * (1 - stats.tokens / max(stats.padded_tokens, 1)), stats.compiles,
            )
        return [(float(a), bool(b)) for a, b in zip(ll_out, greedy_out)]


_FN_CACHE: dict[str, Any] = {}


def _cached_fn(key: str, model_cfg):
    """One jitted score function per model config (by value), shared by all Scorers."""
    fn = _FN_CACHE.get(key)
    if fn is None:
        fn = _FN_CACHE[key] = _make_score_fn(key, model_cfg)
    return fn
