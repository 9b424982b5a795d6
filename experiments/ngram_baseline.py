"""Count-based baselines for a prepared dataset: the val loss (nats/token) of a unigram and of a
smoothed bigram model fitted on train.bin, the floor a trained network should beat.

    python experiments/ngram_baseline.py data/shakespeare

Unigram: add-0.1 smoothing. Bigram: interpolated absolute discounting,
p(b | a) = max(c(a, b) - d, 0) / c(a) + d * types(a) / c(a) * p_unigram(b), for a few discounts d.
Scored on every val token after the first, as the network is.
"""

import sys

import numpy as np

from gpt2jax.tokenizer import N_VOCAB


def baselines(data_dir: str, discounts=(0.5, 0.75, 0.9)) -> dict:
    train = np.fromfile(f"{data_dir}/train.bin", np.uint16).astype(np.int64)
    val = np.fromfile(f"{data_dir}/val.bin", np.uint16).astype(np.int64)
    uni = np.bincount(train, minlength=N_VOCAB).astype(np.float64)
    p_uni = (uni + 0.1) / (uni.sum() + 0.1 * N_VOCAB)
    a, b = val[:-1], val[1:]
    out = {"unigram": float(-np.log(p_uni[b]).mean())}
    pairs, counts = np.unique(train[:-1] * N_VOCAB + train[1:], return_counts=True)
    ctx = np.bincount(train[:-1], minlength=N_VOCAB).astype(np.float64)
    types = np.bincount(pairs // N_VOCAB, minlength=N_VOCAB).astype(np.float64)
    query = a * N_VOCAB + b
    idx = np.minimum(np.searchsorted(pairs, query), len(pairs) - 1)
    c_ab = np.where(pairs[idx] == query, counts[idx], 0).astype(np.float64)
    seen = ctx[a] > 0
    n = np.maximum(ctx[a], 1.0)
    for d in discounts:
        p = np.where(seen, np.maximum(c_ab - d, 0) / n + d * types[a] / n * p_uni[b], p_uni[b])
        out[f"bigram_d{d}"] = float(-np.log(p).mean())
    return out


if __name__ == "__main__":
    for name, loss in baselines(sys.argv[1] if len(sys.argv) > 1 else "data/shakespeare").items():
        print(f"{name:12s} {loss:.3f} nats/token")
