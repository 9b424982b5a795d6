"""Batches of token windows from a directory written by ``gpt2jax.prepare``.

A split of N tokens holds ``num_windows = (N - 1) // seq_len`` windows of
``seq_len + 1`` tokens; window k starts at token ``k * seq_len``, so with
``x = w[:-1], y = w[1:]`` every token (but the first) is a target exactly once
per epoch.

``train_batch`` is a pure function of ``(seed, step)``: global example
``j = step * global_batch + b`` is window ``perm_e[j % num_windows]`` of epoch
``e = j // num_windows``, where ``perm_e`` is a permutation seeded by
``SeedSequence([seed, e])``. Any step can be produced without replay, and an
epoch visits every window exactly once. Each process reads only its contiguous
rows ``[p * local, (p + 1) * local)`` of the global batch.

Where the files live: a local directory is memory-mapped. A URL (``gs://bucket/data``, ``s3://``,
``memory://`` ...) is read through fsspec by byte ranges -- one range per window, fetched together
with ``cat_ranges`` -- so a host only ever downloads the windows of its own rows, never whole files
(``gs://`` needs the ``gcsfs`` package).
"""

from __future__ import annotations

import json
import os

import numpy as np

from gpt2jax.data.sources import DataError, DataNotFoundError
from gpt2jax.fileio import sha256_file


class TokenDataset:
    """One split (``train`` or ``val``) of a prepared dir, memory-mapped read-only."""

    def __init__(self, data_dir: str, split: str, seq_len: int, vocab_size: int = 50257, *, min_batch: int = 0):
        """`min_batch` > 0: refuse a split with fewer windows than that (a training batch would repeat
        windows within itself)."""
        self.data_dir, self.split, self.seq_len = data_dir, split, int(seq_len)
        data_dir = str(data_dir)
        self._fs = None if _is_local(data_dir) else _url_to_fs(data_dir)
        if self._fs is None:
            data_dir = data_dir.removeprefix("file://")
            meta_path = os.path.join(data_dir, "meta.json")
            bin_path = os.path.join(data_dir, f"{split}.bin")
            isfile, getsize, open_ = os.path.isfile, os.path.getsize, open
        else:
            fs = self._fs[0]
            meta_path = data_dir.rstrip("/") + "/meta.json"
            bin_path = data_dir.rstrip("/") + f"/{split}.bin"
            isfile, getsize, open_ = fs.isfile, fs.size, fs.open
        if self._fs is None and os.path.isfile(data_dir):
            raise DataNotFoundError(f"{data_dir} is a file, not a directory of prepared data (train.bin, "
                                    f"val.bin, meta.json, as gpt2jax.prepare writes); give its directory")
        missing = [p for p in (meta_path, bin_path) if not isfile(p)]
        if missing:
            raise DataNotFoundError(
                f"prepared data not found: missing {', '.join(missing)}. Create it with "
                f"`python -m gpt2jax.prepare --source=SOURCE --out_dir={data_dir}`")
        self.meta_path, self.vocab_size = meta_path, int(vocab_size)
        with open_(meta_path, "rb") as f:
            raw = f.read()
        try:
            self.meta = json.loads(raw)
            info = self.meta["splits"][split]
            ok = self.meta.get("dtype") == "uint16" and isinstance(info["tokens"], int)
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            raise DataError(f"{meta_path}: not a meta.json written by gpt2jax.prepare (unreadable, or no dtype "
                            f"uint16 and split {split!r} with its token count); prepare the data again")
        size = getsize(bin_path)
        if size == 0:
            raise DataError(f"{bin_path}: the file is empty")
        if size % 2:
            raise DataError(f"{bin_path}: {size} bytes is not a whole number of uint16 "
                            "tokens (truncated or corrupt file?)")
        self.num_tokens = size // 2
        if self.num_tokens != info["tokens"]:
            raise DataError(f"{bin_path}: {self.num_tokens} tokens but meta.json says "
                            f"{info['tokens']} (truncated or stale file?)")
        if info.get("max_token_id", -1) >= vocab_size:
            raise DataError(f"{bin_path}: max token id {info['max_token_id']} does not fit "
                            f"vocab_size {vocab_size}")
        if self.num_tokens < self.seq_len + 1:
            raise DataError(f"{bin_path}: split {split!r} has {self.num_tokens} tokens, fewer than "
                            f"seq_len + 1 = {self.seq_len + 1} (one sequence)")
        self.bin_path = bin_path
        self.sha256 = info.get("sha256")
        self.bytes = info.get("bytes")  # UTF-8 bytes the split stands for (None: prepared before it was kept)
        # Local: the whole file memory-mapped. Remote: None; windows() reads byte ranges.
        self.tokens = np.memmap(bin_path, dtype=np.uint16, mode="r") if self._fs is None else None
        self.num_windows = (self.num_tokens - 1) // self.seq_len
        if self.num_windows < min_batch:
            raise DataError(f"{bin_path}: {self.num_tokens} tokens make {self.num_windows} sequences of "
                            f"{self.seq_len + 1}, fewer than one batch of {min_batch}")
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def __repr__(self):
        return (f"TokenDataset({self.data_dir!r}, {self.split!r}, seq_len={self.seq_len}: "
                f"{self.num_tokens} tokens, {self.num_windows} windows)")

    def permutation(self, seed: int, epoch: int) -> np.ndarray:
        """The window order of ``epoch``; the two most recent ones are cached."""
        key = (int(seed), int(epoch))
        if key not in self._perms:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))
            perm = rng.permutation(self.num_windows)
            if len(self._perms) >= 2:
                self._perms.pop(next(iter(self._perms)))
            self._perms[key] = perm.astype(np.int32) if self.num_windows < 2**31 else perm
        return self._perms[key]

    def windows(self, idx: np.ndarray) -> np.ndarray:
        """int32 ``[len(idx), seq_len + 1]``: the windows with indices ``idx``."""
        starts = np.asarray(idx, np.int64) * self.seq_len
        if self.tokens is None:
            out = self._read_ranges(starts)
        else:
            out = self.tokens[starts[:, None] + np.arange(self.seq_len + 1)].astype(np.int32)
        if out.size and out.max() >= self.vocab_size:  # meta.json's max_token_id is only a claim
            r, c = np.argwhere(out >= self.vocab_size)[0]
            off = int(starts[r]) + int(c)
            raise DataError(f"{self.bin_path}: token id {out[r, c]} at token offset {off} (byte {2 * off}) "
                            f"is >= vocab_size {self.vocab_size}: the file does not hold the tokens "
                            "its meta.json says; prepare the data again")
        return out

    def identity(self, hash_missing: bool = True) -> dict:
        """What a checkpoint records of this split: its file, token count and sha256 (from meta.json;
        computed from the file for data prepared before meta.json recorded it)."""
        sha = self.sha256
        if sha is None and hash_missing:
            open_ = open if self._fs is None else self._fs[0].open
            sha = sha256_file(self.bin_path, open_=open_)
        return {"file": str(self.bin_path), "tokens": int(self.num_tokens), "sha256": sha,
                "sha256_in_meta": self.sha256 is not None}

    def _read_ranges(self, starts: np.ndarray) -> np.ndarray:
        """The non-mmap reader: one byte range per window, fetched in one ``cat_ranges`` call."""
        n = self.seq_len + 1
        out = np.empty((len(starts), n), np.int32)
        if not len(starts):
            return out
        byte_starts = [int(s) * 2 for s in starts]
        chunks = self._fs[0].cat_ranges(
            [self.bin_path] * len(starts), byte_starts, [b + 2 * n for b in byte_starts]
        )
        for i, chunk in enumerate(chunks):
            if isinstance(chunk, Exception):
                raise chunk
            if len(chunk) != 2 * n:
                raise DataError(f"{self.bin_path}: short read of window at token {starts[i]} "
                                f"({len(chunk)} of {2 * n} bytes)")
            out[i] = np.frombuffer(chunk, dtype="<u2")
        return out


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _url_to_fs(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:  # e.g. gs:// without gcsfs
        raise DataError(f"{url}: reading this filesystem needs an extra package ({e}; for gs:// "
                        "`pip install -e '.[gcs]'`)") from e


def _rows(global_batch: int, process_index: int, process_count: int) -> np.ndarray:
    if global_batch % process_count or not 0 <= process_index < process_count:
        raise ValueError(f"global_batch {global_batch} must split evenly over "
                         f"{process_count} processes (process_index {process_index})")
    local = global_batch // process_count
    return np.arange(process_index * local, (process_index + 1) * local, dtype=np.int64)


def train_batch(ds: TokenDataset, step: int, global_batch: int, seed: int,
                process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """This process's rows of the global training batch of ``step``: int32 [local, T+1]."""
    j = step * global_batch + _rows(global_batch, process_index, process_count)
    epoch, pos = np.divmod(j, ds.num_windows)
    idx = np.empty_like(j)
    for e in np.unique(epoch):  # one epoch, or two at an epoch boundary
        m = epoch == e
        idx[m] = ds.permutation(seed, int(e))[pos[m]]
    return ds.windows(idx)


def eval_batch(ds: TokenDataset, index: int, global_batch: int,
               process_index: int = 0, process_count: int = 1) -> np.ndarray:
    """Windows ``index * global_batch + b`` in order (mod num_windows): int32 [local, T+1]."""
    j = index * global_batch + _rows(global_batch, process_index, process_count)
    return ds.windows(j % ds.num_windows)


def num_eval_batches(ds: TokenDataset, global_batch: int) -> int:
    """Batches needed for ``eval_batch`` to cover every window once (the last one wraps)."""
    return -(-ds.num_windows // global_batch)


# -- what a run records of its data ------------------------------------------------------------
def dataset_vocab(data_dir: str) -> tuple[int | None, dict | None]:
    """(vocab_size, tokenizer record) a prepared dataset's meta.json states; (None, None) for data written
    without a tokenizer record (before the small vocabularies, or by hand), whose vocabulary is not checked."""
    try:
        with open(os.path.join(str(data_dir), "meta.json")) as f:
            meta = json.load(f)
        if not isinstance(meta, dict):
            return None, None  # not a meta.json of ours: TokenDataset says so, naming the file
        rec = meta.get("tokenizer_record")
        return (int(meta["vocab_size"]), rec) if isinstance(rec, dict) else (None, None)
    except (OSError, ValueError, KeyError, TypeError):
        return None, None  # TokenDataset reports unreadable data with its own message


def data_identity(*datasets: TokenDataset) -> dict:
    """{"dir": ..., split: {file, tokens, sha256}} for run.json and every checkpoint's meta. For data
    prepared before meta.json held hashes they are computed from the files, with one warning."""
    out = {"dir": str(datasets[0].data_dir)}
    legacy = [ds.bin_path for ds in datasets if ds.sha256 is None]
    if legacy:
        print(f"WARNING: {datasets[0].meta_path} records no sha256 of {', '.join(map(str, legacy))} "
              "(prepared by an older version): hashing the files now and recording the hashes with the "
              "run; prepare the data again to store them in meta.json", flush=True)
    for ds in datasets:
        ident = ds.identity()
        ident.pop("sha256_in_meta")
        out[ds.split] = ident
    return out


def data_changes(saved: dict | None, now: dict) -> list[str]:
    """What differs between the data a checkpoint recorded and the data now ('' entries: none).
    A checkpoint without a record (written before they were kept) gives no changes."""
    if not saved:
        return []
    changes = []
    for split, cur in now.items():
        if split == "dir" or not isinstance(cur, dict):
            continue
        old = saved.get(split)
        if not isinstance(old, dict):
            continue
        for key in ("tokens", "sha256"):
            if old.get(key) is not None and old.get(key) != cur.get(key):
                changes.append(f"{split} {key} {old.get(key)} -> {cur.get(key)}")
    if changes:
        where = now.get("dir")
        if saved.get("dir") != where:
            changes.insert(0, f"data.dir {saved.get('dir')} -> {where}")
    return changes
