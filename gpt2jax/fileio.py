"""Small file helpers shared by every writer: atomic JSON and text, file digests.

A reader never sees a half-written JSON file: `write_json_atomic` writes a temporary file beside the
target, flushes it to disk and renames it over the target (a rename within one directory is atomic on
POSIX filesystems). A failure (disk full, interrupted) leaves the old file as it was and no temporary.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile


def write_json_atomic(path, obj, *, indent: int = 2, default=None) -> None:
    """Write `obj` as JSON (plus a final newline) to `path`, atomically (`default`: as json.dump's)."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=indent, default=default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    """Write `text` to `path` through a temporary name beside it, then rename it over the target."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def sha256_file(path, open_=open, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (`open_`: e.g. an fsspec filesystem's open)."""
    h = hashlib.sha256()
    with open_(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
