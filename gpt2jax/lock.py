"""One writer per workdir: a lock file created exclusively by whatever writes checkpoints.

    with WorkdirLock([workdir, checkpoint_dir]):
        ...train...

`WORKDIR/writer.lock` is created with O_CREAT | O_EXCL (atomic on local and NFS filesystems), holding
JSON: host, pid, start time and the command. While the writer runs, a daemon thread refreshes the
file's modification time (the heartbeat) every 30 s. A second writer is refused at once with a
LockError naming the holder. A lock is stale -- and is taken over with a warning -- when its pid is
dead on this host, or, for a holder on another host (or a pid this host cannot judge), when its
heartbeat is older than 10 minutes (kill -9, a preempted VM). Taking over goes through a second
exclusive file (`writer.lock.takeover`), so two starters that both find a stale lock cannot both win.

Readers (sample, evaluate, convert --to_hf) never take the lock and work on a live run. Multi-host
runs take it once, on process 0. A directory given as a URL (gs://...) is not locked: object stores
have no exclusive create; the workdir's lock covers such a run.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time

from gpt2jax.errors import LockError

LOCK_NAME = "writer.lock"
STALE_AFTER_S = 600.0
HEARTBEAT_S = 30.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            holder = json.load(f)
        holder["heartbeat"] = os.stat(path).st_mtime
        return holder if isinstance(holder, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        try:
            return {"heartbeat": os.stat(path).st_mtime}  # torn or foreign content: judge by age
        except FileNotFoundError:
            return None


def _stale_reason(holder: dict, now: float, stale_after: float) -> str | None:
    host, pid = holder.get("host"), holder.get("pid")
    if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return f"its process {pid} is no longer running on this host"
    age = now - float(holder.get("heartbeat", now))
    if age > stale_after:
        return f"its heartbeat is {age / 60:.0f} minutes old"
    return None


def describe_holder(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "an unknown time"
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {when}"


def live_holder(directory: str) -> dict | None:
    """The writer holding `directory`'s lock while it is alive, as its lock file says (host, pid, started,
    command, heartbeat), plus `here`: True when it runs on this host (its pid is alive), False when on
    another host (this host cannot see its pid: alive while its heartbeat is fresh). None when there is
    no lock, or a stale one (its pid dead here, or its heartbeat older than STALE_AFTER_S)."""
    holder = _read(os.path.join(directory, LOCK_NAME))
    if not holder or _stale_reason(holder, time.time(), STALE_AFTER_S) is not None:
        return None
    return {**holder, "here": holder.get("host") == socket.gethostname()}


class WorkdirLock:
    """Exclusive writer lock on one or more directories (all taken, or none)."""

    def __init__(self, dirs, *, enabled: bool = True, stale_after: float = STALE_AFTER_S,
                 heartbeat: float = HEARTBEAT_S):
        seen, self.paths = set(), []
        for d in dirs:
            if not d or "://" in str(d):
                continue
            d = os.path.abspath(os.path.expanduser(str(d)))
            if d not in seen:
                seen.add(d)
                self.paths.append(os.path.join(d, LOCK_NAME))
        self.enabled, self.stale_after, self.heartbeat = enabled, stale_after, heartbeat
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                   "command": sys.argv}
        self._held: list[str] = []
        self._stop = threading.Event()
        self._thread = None

    # -- taking and releasing ------------------------------------------------------------------
    def acquire(self) -> "WorkdirLock":
        if not self.enabled:
            return self
        try:
            for path in self.paths:
                self._take(path)
                self._held.append(path)
        except BaseException:
            self.release()
            raise
        self._thread = threading.Thread(target=self._beat, name="gpt2jax-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _create(self, path: str) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self.me, f)
            f.write("\n")
        return True

    def _take(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for _ in range(3):
            if self._create(path):
                return
            holder = _read(path)
            if holder is None:  # released in between: try again
                continue
            reason = _stale_reason(holder, time.time(), self.stale_after)
            if reason is None:
                raise LockError(
                    f"{os.path.dirname(path)} is in use by another writer ({describe_holder(holder)}; lock "
                    f"file {path}). Wait for it to finish or stop it, or use another --workdir; a lock "
                    f"whose holder died is taken over by itself once it is stale "
                    f"({self.stale_after / 60:.0f} minutes without a heartbeat)"
                )
            self._take_over(path, holder, reason)
        raise LockError(f"{path}: could not take the lock (it keeps changing hands)")

    def _take_over(self, path: str, holder: dict, reason: str) -> None:
        guard = path + ".takeover"
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
        except FileExistsError:
            try:
                if time.time() - os.stat(guard).st_mtime > 60:  # a taker that died mid-way
                    os.remove(guard)
            except FileNotFoundError:
                pass
            time.sleep(0.1)
            return
        try:
            now = _read(path)
            if now is not None and now.get("pid") == holder.get("pid") and now.get("started") == holder.get("started"):
                print(f"WARNING: taking over the stale lock {path} ({describe_holder(holder)}: {reason})",
                      file=sys.stderr, flush=True)
                os.remove(path)
        finally:
            os.remove(guard)

    def _mine(self, path: str) -> bool:
        holder = _read(path)
        return bool(holder) and holder.get("pid") == self.me["pid"] and holder.get("started") == self.me["started"]

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            for path in list(self._held):
                try:
                    if self._mine(path):
                        os.utime(path)
                    else:
                        print(f"WARNING: the lock {path} was taken by another writer", file=sys.stderr, flush=True)
                        self._held.remove(path)
                except OSError:
                    pass

    def release(self) -> None:
        self._stop.set()
        for path in reversed(self._held):
            try:
                if self._mine(path):
                    os.remove(path)
            except OSError:
                pass
        self._held.clear()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
