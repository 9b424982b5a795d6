"""Hugging Face `datasets` as a document source, streamed (optional: pip install -e '.[hf]').

    python -m gpt2jax.prepare --source='hf:HuggingFaceFW/fineweb-edu:train' --hf_config=sample-10BT \
        --out_dir=data/fineweb_edu_10bt
    python -m gpt2jax.prepare --source='hf:/data/my_corpus:train:body' --out_dir=data/mine

Spec: ``hf:NAME[@REVISION]:SPLIT[:FIELD]``. NAME is a hub dataset id or a local directory of data
files (JSON lines, Parquet, CSV, text: whatever `datasets` recognises); REVISION a hub branch, tag or
commit (e.g. ``refs/convert/parquet``, the hub's Parquet export of a dataset that still has only a
loading script, which `datasets` no longer runs); SPLIT defaults to ``train`` and FIELD to ``text``. The dataset is opened with ``streaming=True``: records arrive while the files are still
being fetched (FineWeb's samples are tens of GB), so tokenizing starts at once and ``--max_docs`` /
``--max_tokens`` never download more than they need. Records come in the dataset's own order.
"""

from __future__ import annotations

import os
from typing import Iterator

from gpt2jax.errors import DataError, DataNotFoundError

INSTALL_HINT = "the hf: source needs Hugging Face datasets; install it with  pip install -e '.[hf]'  (or  pip install datasets)"


def parse(rest: str) -> tuple[str, str, str, str | None]:
    """``'NAME[@REVISION]:SPLIT[:FIELD]'`` (the part after ``hf:``) -> (name, split, field, revision)."""
    parts = rest.split(":")
    name, _, revision = parts[0].partition("@")
    if not name or len(parts) > 3 or (_ and not revision):
        raise DataError(f"bad hf source 'hf:{rest}': expected hf:NAME[@REVISION]:SPLIT[:FIELD]")
    split = parts[1] if len(parts) > 1 and parts[1] else "train"
    field = parts[2] if len(parts) > 2 and parts[2] else "text"
    return name, split, field, revision or None


def open_stream(name: str, split: str = "train", config: str | None = None, revision: str | None = None):
    """The split as a `datasets.IterableDataset` (streaming)."""
    try:
        import datasets
    except ImportError as e:
        raise DataError(INSTALL_HINT) from e
    local = os.path.isdir(os.path.expanduser(name))
    path = os.path.abspath(os.path.expanduser(name)) if local else name
    where = (f"hf dataset {name!r}" + (f" revision {revision!r}" if revision else "")
             + (f" (config {config!r})" if config else "") + f" split {split!r}")
    if not local and name.startswith((".", "/", "~")):
        raise DataNotFoundError(f"{where}: {name} is not a directory (cwd: {os.getcwd()})")
    try:
        kw = {"revision": revision} if revision else {}
        return datasets.load_dataset(path, config or None, split=split, streaming=True, **kw)
    except Exception as e:  # datasets raises many types (not found, offline, bad config or split, ...)
        raise DataNotFoundError(f"cannot open {where}: {type(e).__name__}: {e}") from e


def iter_hf(name: str, split: str = "train", field: str = "text", revision: str | None = None,
            config: str | None = None) -> Iterator[str]:
    """Yield the string field FIELD of every record of the (streamed) split, in order."""
    ds = open_stream(name, split, config, revision)
    where = f"hf:{name}:{split}" + (f" (config {config})" if config else "")
    for i, record in enumerate(ds):
        if field not in record:
            raise DataError(f"{where}: record {i} has no field {field!r} (fields: {sorted(record)})")
        value = record[field]
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: record {i} field {field!r}: invalid UTF-8 at byte {e.start}") from None
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: record {i} field {field!r} is of type {type(value).__name__}, not a string")
        yield value or ""
