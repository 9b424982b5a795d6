"""Small file helpers shared by every writer: atomic JSON and text, file digests, output checks.

A reader never sees a half-written JSON file: `write_json_atomic` writes a temporary file beside the
target, flushes it to disk and renames it over the target (a rename within one directory is atomic on
POSIX filesystems). A failure (disk full, interrupted) leaves the old file as it was and no temporary.

Files and directories the tools write follow the umask, as `open` and `mkdir` do: a temporary file
(mode 600) or directory (700) that is renamed into place is first given `file_mode()` / `dir_mode()`.

Output locations are checked before any work starts (`check_output_file`, `check_output_dir`,
`make_output_dir`): a path that is a file where a directory is wanted (or the reverse), or a directory
that cannot be written, is one `UserError` naming the flag or field and the path. `make_output_dir`
returns the directories it created, which `remove_empty_dirs` takes away again after a failed start.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

from gpt2jax.errors import UserError


def write_json_atomic(path, obj, *, indent: int = 2, default=None) -> None:
    """Write `obj` as JSON (plus a final newline) to `path`, atomically (`default`: as json.dump's)."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        os.chmod(fd, file_mode())  # mkstemp's file is 600; the target follows the umask
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


# ---------------------------------------------------------------------------------------- modes
def umask() -> int:
    """The process's umask, read without changing it (os.umask would, for a moment, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o22)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode `open` gives a new file: 666 less the umask (644 under umask 022)."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode `mkdir` gives a new directory: 777 less the umask (755 under umask 022)."""
    return 0o777 & ~umask()


def follow_umask(path) -> None:
    """Give `path` (a file, or a directory and everything under it) the modes `open` and `mkdir` would
    have, for what a library wrote with restrictive ones (a temporary directory, safetensors' files)."""
    path = str(path)
    if not os.path.isdir(path):
        os.chmod(path, file_mode())
        return
    os.chmod(path, dir_mode())
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), dir_mode())
        for f in files:
            os.chmod(os.path.join(root, f), file_mode())


# ---------------------------------------------------------------------------------------- output checks
def _is_remote(path) -> bool:
    return "://" in str(path)


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _probe(folder: str, what: str) -> None:
    """Create and remove a file in `folder`: the one reliable test that it can be written (os.access
    says yes to root on a read-only filesystem and to anyone in /proc)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".gpt2jax-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"{what}: cannot write in {folder} ({e.strerror or e})") from None


def _check_parent(path: str, what: str) -> str:
    """The nearest existing ancestor of `path`, after checking that it is a directory one can write in."""
    anc = _nearest_existing(os.path.dirname(path) or ".")
    if not os.path.isdir(anc):
        raise UserError(f"{what}: {anc} is a file, not a directory")
    _probe(anc, what)
    return anc


def check_output_file(path, what: str) -> None:
    """Before any work: `path` can be written as a file (it is not a directory, and the nearest existing
    directory above it can be written in). Creates nothing. `what` names the flag, e.g. "--out=r.json"."""
    if not path or _is_remote(path):
        return
    p = os.path.abspath(os.path.expanduser(str(path)))
    if os.path.isdir(p):
        raise UserError(f"{what} is a directory, not a file")
    _check_parent(p, what)


def check_output_dir(path, what: str, *, empty: bool = False) -> None:
    """Before any work: `path` can be made a directory and written in (it is one, or nothing is there and
    the nearest existing directory above can be written in); with `empty`, it must not hold anything.
    Creates nothing."""
    if not path or _is_remote(path):
        return
    p = os.path.abspath(os.path.expanduser(str(path)))
    if os.path.lexists(p) and not os.path.isdir(p):
        raise UserError(f"{what} is a file, not a directory")
    if os.path.isdir(p):
        if empty and os.listdir(p):
            raise UserError(f"{what} exists and is not empty; remove it or choose another directory")
        _probe(p, what)
    else:
        _check_parent(p, what)


def make_output_dir(path, what: str) -> list[str]:
    """Create directory `path` (and missing parents) and check that it can be written in. Returns the
    directories created, outermost first (for `remove_empty_dirs` after a failed start); a UserError
    naming `what` and the path when it is a file, sits under a file, or cannot be created or written."""
    if not path or _is_remote(path):
        return []
    p = os.path.abspath(os.path.expanduser(str(path)))
    check_output_dir(p, what)
    created, q = [], p
    while not os.path.lexists(q):
        created.append(q)
        q = os.path.dirname(q)
    created.reverse()
    try:
        os.makedirs(p, exist_ok=True)
    except OSError as e:
        remove_empty_dirs(created)
        raise UserError(f"{what}: cannot create it ({e.strerror or e})") from None
    return created


def remove_empty_dirs(created) -> None:
    """Remove the directories `make_output_dir` created, innermost first, each only if it is empty."""
    for d in reversed(list(created)):
        try:
            os.rmdir(d)
        except OSError:
            pass
