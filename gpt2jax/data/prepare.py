"""Tokenize a document source into ``train.bin`` / ``val.bin`` / ``meta.json``.

The .bin files are flat little-endian uint16 token ids (GPT-2's BPE by default; `tokenizer='bytes'` or
'bpe:N' for the small vocabularies of gpt2jax/tokenizer.py); every document is followed by the
tokenizer's end-of-text id (50256 for GPT-2's). Documents are streamed: read in order, tokenized in
chunks by ``num_workers`` threads (tiktoken releases the GIL) with a bounded
number of chunks in flight, and appended to the split files.

Split rule (deterministic, streaming): empty documents are skipped; the i-th
non-empty document (0-based) goes to val iff floor((i+1)*f) > floor(i*f), i.e.
every (1/f)-th document (f = val_fraction, exact decimal arithmetic). Document
0 always goes to train. If no document lands in val (fewer than ~1/f documents)
and f > 0, the last max(1, round(f * train_tokens)) tokens of train are moved
to val instead (``meta["split_rule"] == "tail_tokens"``). f == 0 gives an empty
val.bin.

``split="tail"`` skips the document rule and always holds out the last val_fraction of the tokens (the
nanoGPT convention, used by the quickstart: with a few dozen long documents a whole-document split
holds out whole works, whose unseen character names make val much harder -- see README).

Output is written under temporary names and renamed at the very end (meta.json
last), so a failed or interrupted run leaves no train.bin/val.bin/meta.json.
meta.json records each split's token count and the sha256 of its file (training
records them with every checkpoint and refuses to resume on other data).

A dataset never changes underfoot: preparing into a directory that already holds
one is a no-op when the source and options are the same (``meta["options"]``),
and is otherwise refused unless ``overwrite=True``, which writes the new dataset
into a sibling directory and then swaps the two by renaming (a reader sees the
old dataset, none, or the new one -- never a mixture) and removes the old one.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from gpt2jax.data.sources import DEFAULT_SOURCE, DataError, iter_documents
from gpt2jax.fileio import check_output_dir, sha256_file, write_json_atomic
from gpt2jax import tokenizer as tok_lib
from gpt2jax.tokenizer import get_tokenizer

FORMAT_VERSION = 1
DTYPE = np.uint16
SPLITS = ("train", "val")
FILES = ("train.bin", "val.bin", "meta.json", tok_lib.BPE_FILE)  # tokenizer.json: a bpe:N dataset's BPE
# A trained BPE never sees val text: with a tail split it trains on the first (1 - BPE_TAIL_MARGIN * f)
# of the corpus's UTF-8 bytes (val is the last f of the tokens, checked after encoding)
BPE_TAIL_MARGIN = 1.5


@functools.lru_cache(maxsize=8)
def _exact(val_fraction: float) -> tuple[int, int]:
    f = Fraction(str(val_fraction))  # 0.05 -> 1/20 exactly
    return f.numerator, f.denominator


def is_val_document(i: int, val_fraction: float) -> bool:
    """Whether the i-th (0-based) document goes to val: floor((i+1)f) > floor(if)."""
    num, den = _exact(val_fraction)
    return ((i + 1) * num) // den > (i * num) // den


def _chunks(docs: Iterable[str], chunk_chars: int, stats: dict) -> Iterator[list[str]]:
    """Group non-empty documents into lists of about ``chunk_chars`` characters."""
    chunk, size = [], 0
    for doc in docs:
        if not doc:
            stats["skipped_empty_documents"] += 1
            continue
        chunk.append(doc)
        size += len(doc)
        if size >= chunk_chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _first_documents(docs: Iterable[str], n: int) -> Iterator[str]:
    """The documents up to and including the n-th non-empty one (empty ones pass, to be counted)."""
    seen = 0
    for doc in docs:
        yield doc
        seen += bool(doc)
        if seen >= n:
            return


def _encode_chunk(tok, docs: list[str]) -> list[np.ndarray]:
    out = []
    for doc in docs:
        ids = tok.encode_np(doc)
        arr = np.empty(len(ids) + 1, DTYPE)
        arr[:-1] = ids  # every tokenizer's ids are < 65536 (parse_tokenizer_name checks bpe:N)
        arr[-1] = tok.eot_token
        out.append(arr)
    return out


def _tokenized(docs: Iterable[str], num_workers: int, chunk_chars: int, stats: dict, tok=None
               ) -> Iterator[np.ndarray]:
    """Token arrays (EOT appended) of the non-empty documents, in order."""
    tok = tok or get_tokenizer()  # built once, before the threads need it
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        pending = deque()
        for chunk in _chunks(docs, chunk_chars, stats):
            pending.append(pool.submit(_encode_chunk, tok, chunk))
            if len(pending) > 2 * num_workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _move_tail_to_val(files: dict, counts: dict, val_fraction: float) -> None:
    """Fallback when no document went to val: move the last tokens of train."""
    n_train = counts["train"]["tokens"]
    n_val = min(max(1, round(val_fraction * n_train)), n_train - 1)
    train = files["train"]
    train.flush()
    tail = np.fromfile(train.name, DTYPE, count=n_val, offset=(n_train - n_val) * 2)
    train.truncate((n_train - n_val) * 2)
    files["val"].write(tail.tobytes())
    head = np.memmap(train.name, DTYPE, mode="r", shape=(n_train - n_val,))
    counts["train"].update(tokens=n_train - n_val, max_token_id=int(head.max()))
    counts["val"].update(tokens=n_val, max_token_id=int(tail.max()))
    del head


def split_bytes(path: str, lengths: np.ndarray, chunk: int = 1 << 24) -> int:
    """UTF-8 bytes the tokens of a .bin file stand for (`lengths[id]` each; the end-of-text id counts 0)."""
    tokens = np.memmap(path, DTYPE, mode="r") if os.path.getsize(path) else np.zeros(0, DTYPE)
    total = 0
    for i in range(0, len(tokens), chunk):
        total += int(lengths[np.asarray(tokens[i:i + chunk])].sum())
    return total


def _bpe_training_texts(documents, split: str, val_fraction: float):
    """(texts, bytes): the train split's text for training a BPE, and its size in UTF-8 bytes. By documents:
    the documents that will go to train (when at least one goes to val); otherwise (a tail split, or too
    few documents for one in val) the corpus's first (1 - BPE_TAIL_MARGIN * val_fraction) of the bytes."""
    sizes = [len(d.encode("utf-8", errors="surrogatepass")) for d in documents() if d]
    by_doc = split == "documents" and any(is_val_document(i, val_fraction) for i in range(len(sizes)))
    if by_doc:
        keep = [not is_val_document(i, val_fraction) for i in range(len(sizes))]
        texts = (d for i, d in enumerate(x for x in documents() if x) if keep[i])
        return texts, sum(n for n, k in zip(sizes, keep) if k)
    cut = int(sum(sizes) * (1 - BPE_TAIL_MARGIN * val_fraction))

    def head():
        left = cut
        for d in (x for x in documents() if x):
            b = d.encode("utf-8", errors="surrogatepass")
            if len(b) >= left:
                yield b[:left].decode("utf-8", errors="ignore")
                return
            left -= len(b)
            yield d

    return head(), cut


def options_of(source: str, val_fraction: float, split: str, hf_config=None, max_docs: int = 0,
               max_tokens: int = 0, tokenizer: str = "gpt2") -> dict:
    """What decides a dataset's content (besides the source's own data); the sampling options only
    when set. A trained BPE's hash follows from the data, so its options name it by `bpe:N` alone."""
    kind, _ = tok_lib.parse_tokenizer_name(tokenizer)
    out = {"source": source, "val_fraction": val_fraction, "split": split,
           "tokenizer_hash": {"gpt2": lambda: get_tokenizer().vocab_hash, "bytes": lambda: tok_lib.ByteTokenizer.vocab_hash,
                              "bpe": lambda: None}[kind](),
           "format_version": FORMAT_VERSION}
    if kind != "gpt2":  # GPT-2's options stay as before, so datasets prepared earlier are the same
        out["tokenizer"] = tokenizer
        if kind == "bpe":
            del out["tokenizer_hash"]
    out.update({k: v for k, v in (("hf_config", hf_config), ("max_docs", max_docs), ("max_tokens", max_tokens)) if v})
    return out


def _options_before_they_were_recorded(meta: dict) -> dict:
    """The options of a dataset written before meta.json had an "options" entry (same format version,
    from its source / val_fraction / split_rule / tokenizer_hash fields). KeyError if one is missing."""
    split = {"tail_tokens": "tail", "every_kth_document": "documents", "none": "documents"}[meta["split_rule"]]
    return {"source": meta["source"], "val_fraction": meta["val_fraction"], "split": split,
            "tokenizer_hash": meta["tokenizer_hash"], "format_version": meta["format_version"]}


def existing_dataset(out_dir: str, options: dict) -> str | None:
    """None if `out_dir` holds no dataset; "same" if it holds one prepared with `options`; otherwise a
    sentence saying what is there."""
    present = [n for n in FILES if os.path.exists(os.path.join(out_dir, n))]
    if not present:
        return None
    meta_path = os.path.join(out_dir, "meta.json")
    if "meta.json" not in present:
        return f"{out_dir} holds {', '.join(present)} but no meta.json"
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        old = meta["options"] if "options" in meta else _options_before_they_were_recorded(meta)
    except (OSError, ValueError, KeyError, TypeError):
        return f"{meta_path} is from an older version or unreadable"
    if old != options:
        diff = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in options.items() if old.get(k) != v]
        return f"{out_dir} holds a dataset prepared with other options ({'; '.join(diff)})"
    for s in SPLITS:
        path = os.path.join(out_dir, f"{s}.bin")
        want = meta.get("splits", {}).get(s, {}).get("tokens")
        if not os.path.exists(path) or os.path.getsize(path) != 2 * (want or 0):
            return f"{path} does not match {meta_path} (missing, truncated or replaced)"
    return "same"


def prepare(source: str = DEFAULT_SOURCE, out_dir: str = "data/shakespeare",
            val_fraction: float = 0.05, num_workers: int = 2, *,
            tfds_data_dir: str | None = None, chunk_chars: int = 1 << 18,
            progress: bool = True, split: str = "documents", hf_config: str | None = None,
            max_docs: int = 0, max_tokens: int = 0, overwrite: bool = False, tokenizer: str = "gpt2") -> dict:
    """Tokenize ``source`` into ``out_dir``; returns the meta dict (also in meta.json), with
    ``"unchanged": True`` added when ``out_dir`` already held this dataset and nothing was done.
    max_docs / max_tokens (0 = no limit): stop after that many non-empty documents, or after the
    document that brings the total (EOTs included) to max_tokens -- a sample of the source's start.
    tokenizer: 'gpt2' (GPT-2's BPE), 'bytes' (UTF-8 bytes, eot 256) or 'bpe:N' (a byte-level BPE of N
    tokens trained on the train split only, saved as tokenizer.json beside the token files)."""
    try:
        kind, _ = tok_lib.parse_tokenizer_name(tokenizer)
    except ValueError as e:
        raise DataError(str(e)) from None
    if kind == "bpe" and max_tokens:
        raise DataError("max_tokens counts tokens of the tokenizer being trained: with tokenizer bpe:N "
                        "limit the sample with max_docs instead")
    if max_docs < 0 or max_tokens < 0:
        raise DataError(f"max_docs and max_tokens must be >= 0, got {max_docs}, {max_tokens}")
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if split not in ("documents", "tail"):
        raise DataError(f"split must be 'documents' or 'tail', got {split!r}")
    out_dir = str(out_dir)
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise DataError(f"--out_dir={out_dir} is a file, not a directory")
    options = options_of(source, val_fraction, split, hf_config, max_docs, max_tokens, tokenizer)
    state = existing_dataset(out_dir, options)
    if state == "same":
        with open(os.path.join(out_dir, "meta.json")) as f:
            return {**json.load(f), "unchanged": True}
    if state is not None and not overwrite:
        raise DataError(f"{state}: refusing to replace it (a run may be training on it). Pass "
                        "--overwrite to replace it, or choose another --out_dir")
    # Before the source is read: the directory (or, with --overwrite, the one beside it) can be written.
    check_output_dir(out_dir if state is None else os.path.dirname(os.path.abspath(out_dir)),
                     f"--out_dir={out_dir}")
    if state is None:
        existed = os.path.isdir(out_dir)
        try:
            meta = _write(source, out_dir, val_fraction, num_workers, tfds_data_dir, chunk_chars, progress,
                          split, options)
        except BaseException:
            if not existed and os.path.isdir(out_dir) and not os.listdir(out_dir):
                os.rmdir(out_dir)  # a failed first prepare leaves nothing behind
            raise
        warn_if_small(out_dir, meta)
        return meta
    # Overwrite: build beside, then swap by renames, then drop the old one.
    parent, name = os.path.split(os.path.abspath(out_dir))
    stamp = f"{os.getpid()}.{int(time.time())}"
    new_dir, old_dir = os.path.join(parent, f".{name}.new.{stamp}"), os.path.join(parent, f".{name}.old.{stamp}")
    try:
        meta = _write(source, new_dir, val_fraction, num_workers, tfds_data_dir, chunk_chars, progress, split,
                      options)
        for entry in os.listdir(out_dir):  # anything else kept in the directory stays with it
            if entry not in FILES:
                os.rename(os.path.join(out_dir, entry), os.path.join(new_dir, entry))
        os.replace(out_dir, old_dir)
        os.replace(new_dir, out_dir)
    finally:
        shutil.rmtree(new_dir, ignore_errors=True)
    shutil.rmtree(old_dir, ignore_errors=True)
    warn_if_small(out_dir, meta)
    return meta


# The contexts of the shipped configs: the smallest (configs/tiny.py) and GPT-2's (every other one).
SMALLEST_CONTEXT, GPT2_CONTEXT = 32, 1024


def small_split_warnings(out_dir: str, meta: dict) -> list[str]:
    """A sentence for each split too small for one training sequence (T + 1 tokens) at GPT-2's context,
    naming the split, its size and the longest context it can serve; train refuses a split shorter than
    one sequence of its seq_len, so this says so when the data is made rather than when a run starts.
    An empty val split (val_fraction=0) is named too: train needs one."""
    out = []
    for split in SPLITS:
        n = int(meta["splits"][split]["tokens"])
        if split == "val" and not meta.get("val_fraction"):
            out.append(f"{out_dir}: the val split is empty (val_fraction 0): train refuses data without a "
                       "val split; give --val_fraction > 0 to train on this corpus")
            continue
        if n >= GPT2_CONTEXT + 1:
            continue
        total = sum(int(meta["splits"][s]["tokens"]) for s in SPLITS)
        sizes = f"{n:,} of the {total:,} token{'s' if total != 1 else ''}"
        if n < SMALLEST_CONTEXT + 1:
            hint = ("a larger --val_fraction or more data" if split == "val" else "more data")
            out.append(f"{out_dir}: the {split} split holds {sizes}, too few for one sequence of any shipped "
                       f"config (the smallest, tiny, needs {SMALLEST_CONTEXT + 1}; GPT-2's context "
                       f"{GPT2_CONTEXT + 1:,}): train will refuse it. Use {hint}")
        else:
            out.append(f"{out_dir}: the {split} split holds {sizes}, fewer than one sequence of GPT-2's "
                       f"context ({GPT2_CONTEXT + 1:,} tokens): only runs with train.seq_len <= {n - 1} can use it")
    return out


def warn_if_small(out_dir: str, meta: dict) -> None:
    for line in small_split_warnings(out_dir, meta):
        print(f"WARNING: {line}", file=sys.stderr, flush=True)


def _write(source, out_dir, val_fraction, num_workers, tfds_data_dir, chunk_chars, progress, split,
           options) -> dict:
    by_document = split == "documents"
    hf_config = options.get("hf_config")
    max_docs, max_tokens = options.get("max_docs", 0), options.get("max_tokens", 0)
    os.makedirs(out_dir, exist_ok=True)
    stats = {"skipped_empty_documents": 0}
    counts = {s: {"documents": 0, "tokens": 0, "max_token_id": -1} for s in SPLITS}
    tmp_paths, files = {}, {}
    kind, n_vocab = tok_lib.parse_tokenizer_name(options.get("tokenizer", "gpt2"))

    def documents():
        docs = iter_documents(source, tfds_data_dir=tfds_data_dir, hf_config=hf_config)
        return _first_documents(docs, max_docs) if max_docs else docs

    try:
        for name in ("train.bin", "val.bin", "meta.json", tok_lib.BPE_FILE):
            tmp_paths[name] = os.path.join(out_dir, f".{name}.{os.getpid()}.tmp")
        bpe_bytes = None
        if kind == "gpt2":
            tok = get_tokenizer()
        elif kind == "bytes":
            tok = tok_lib.ByteTokenizer()
        else:
            texts, bpe_bytes = _bpe_training_texts(documents, split, val_fraction)
            if progress:
                print(f"training a byte-level BPE of {n_vocab} tokens on the train split "
                      f"({bpe_bytes:,} bytes)", flush=True)
            tok = tok_lib.train_bpe(texts, n_vocab, tmp_paths[tok_lib.BPE_FILE])
        files = {s: open(tmp_paths[f"{s}.bin"], "wb", buffering=1 << 20) for s in SPLITS}
        bar = tqdm(unit=" docs", desc=f"prepare {source}", disable=not progress, delay=0.5)
        for i, arr in enumerate(_tokenized(documents(), num_workers, chunk_chars, stats, tok)):
            name = "val" if by_document and is_val_document(i, val_fraction) else "train"
            files[name].write(arr.tobytes())
            c = counts[name]
            c["documents"] += 1
            c["tokens"] += len(arr)
            c["max_token_id"] = max(c["max_token_id"], int(arr.max()))
            bar.set_postfix_str(f"{counts['train']['tokens'] + counts['val']['tokens']:,} tokens",
                                refresh=False)
            bar.update()
            if max_tokens and counts["train"]["tokens"] + counts["val"]["tokens"] >= max_tokens:
                break
        bar.close()

        if counts["train"]["documents"] == 0:
            raise DataError(f"source {source!r} yielded no non-empty documents "
                            f"({stats['skipped_empty_documents']} empty ones skipped)")
        split_rule = "every_kth_document" if val_fraction > 0 else "none"
        if val_fraction > 0 and counts["val"]["documents"] == 0:
            _move_tail_to_val(files, counts, val_fraction)
            split_rule = "tail_tokens"
        for f in files.values():
            f.close()
        lengths = tok.byte_lengths()
        for s in SPLITS:
            counts[s]["sha256"] = sha256_file(tmp_paths[f"{s}.bin"])
            counts[s]["bytes"] = split_bytes(tmp_paths[f"{s}.bin"], lengths)
        if bpe_bytes is not None and split_rule == "tail_tokens" and (
                counts["train"]["bytes"] < bpe_bytes):
            raise DataError(f"the val split starts before byte {bpe_bytes:,}, up to which the BPE was trained: "
                            "use a smaller val_fraction or split='documents'")

        meta = {
            "format_version": FORMAT_VERSION,
            "source": source,
            "dtype": "uint16",
            "vocab_size": int(tok.n_vocab),
            "eot": int(tok.eot_token),
            "tokenizer": tok.name,
            "tokenizer_hash": tok.vocab_hash,
            "tokenizer_record": tok_lib.tokenizer_record(tok),
            "val_fraction": val_fraction,
            "split_rule": split_rule,
            "skipped_empty_documents": stats["skipped_empty_documents"],
            "splits": counts,
            "options": options,
        }
        meta.update({k: v for k, v in (("hf_config", hf_config), ("max_docs", max_docs),
                                        ("max_tokens", max_tokens)) if v})
        write_json_atomic(tmp_paths["meta.json"], meta)
        # Commit: meta.json goes last, so its presence means a complete dataset.
        if os.path.exists(os.path.join(out_dir, "meta.json")):
            os.remove(os.path.join(out_dir, "meta.json"))
        if kind == "bpe":
            meta["bpe_trained_on_bytes"] = bpe_bytes
            write_json_atomic(tmp_paths["meta.json"], meta)
            os.replace(tmp_paths.pop(tok_lib.BPE_FILE), os.path.join(out_dir, tok_lib.BPE_FILE))
        elif os.path.exists(os.path.join(out_dir, tok_lib.BPE_FILE)):
            os.remove(os.path.join(out_dir, tok_lib.BPE_FILE))  # the BPE of a dataset replaced in place
        for name in ("train.bin", "val.bin", "meta.json"):
            os.replace(tmp_paths.pop(name), os.path.join(out_dir, name))
        return meta
    finally:
        for f in files.values():
            f.close()
        for path in tmp_paths.values():
            if os.path.exists(path):
                os.remove(path)
