"""Where each run of a sweep stands, read from its workdir alone (nothing is trained or written):
`gpt2jax-sweep SPEC --root=DIR --status [--json]`.

  not started  no train.log and no checkpoint, or stopped (Ctrl-C) before its first checkpoint
  running      a live writer holds its workdir lock (gpt2jax/lock.py): its pid is alive on this host, or
               it is on another host with a fresh heartbeat (as the lock says); or the local launcher's
               child has started and not yet taken the lock. Its step: metrics.jsonl's last row, or
               its latest checkpoint
  finished     a checkpoint at its target step (num_steps, or train.stop_after when that comes first)
  failed       its last attempt ended with an error. The local launcher records each attempt in
               ROOT/<name>/sweep_attempt.json (exit code, interrupted or not, host, pid, times): failed
               = a non-zero exit code that no Ctrl-C caused. Without that record (a run started by
               other means), the last attempt in train.log ending in `error: ...` (but `error:
               interrupted`) or a traceback
  preempted    stopped before its target with a checkpoint to resume from: the same command resumes it

`sweep_status` also takes {run name: scheduler state} (e.g. from squeue), shown as a column and a
"scheduler" field; a run whose task the scheduler says is RUNNING counts as running before its trainer
takes the lock, and a PENDING one is marked queued.
"""

from __future__ import annotations

import json
import os
import re
import socket

from gpt2jax.lock import live_holder
from gpt2jax.scaling.launch import is_done, latest_step, target_step

ATTEMPT = "sweep_attempt.json"
ATTEMPT_MARK = "\n=== "  # the local launcher's line before each attempt in train.log
_EXC_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b")


def write_attempt(workdir: str, record: dict) -> None:
    from gpt2jax.fileio import write_json_atomic

    write_json_atomic(os.path.join(workdir, ATTEMPT), record)


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            out = json.load(f)
        return out if isinstance(out, dict) else None
    except (OSError, ValueError):
        return None


def _tail(path: str, size: int = 65536) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def last_attempt_lines(log_path: str) -> list:
    """The non-blank lines of train.log's last attempt (after the launcher's last `=== ...` line)."""
    text = _tail(log_path) or ""
    text = text.rsplit(ATTEMPT_MARK, 1)[-1]
    return [ln.strip() for ln in re.split(r"[\r\n]", text) if ln.strip()]


def error_line(lines: list) -> str | None:
    """The last `error: ...` line, or a traceback's exception line; else the last line."""
    for ln in reversed(lines):
        if ln.startswith("error:") or _EXC_RE.match(ln):
            return ln
    return lines[-1] if lines else None


def short(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _log_says_failed(lines: list) -> bool:
    if not lines:
        return False
    last = lines[-1]
    if last.startswith("error:"):
        return last != "error: interrupted"
    return bool(_EXC_RE.match(last)) and not last.startswith("KeyboardInterrupt") and any(
        ln.startswith("Traceback (most recent call last)") for ln in lines)


def metrics_step(path: str) -> int | None:
    for line in reversed((_tail(path, 8192) or "").splitlines()):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(p, root: str) -> dict:
    """One run's state (see the module's docstring) as a dict: name, state, step (the latest known),
    target, checkpoint (latest checkpoint step), host, pid, exit_code, error, log, detail."""
    wd = os.path.abspath(os.path.join(root, p.name))
    log = os.path.join(wd, "train.log")
    ckpt = latest_step(p, wd)
    row = {"name": p.name, "state": "not started", "step": ckpt, "target": target_step(p), "checkpoint": ckpt,
           "host": None, "pid": None, "exit_code": None, "error": None,
           "log": log if os.path.exists(log) else None, "detail": ""}
    attempt = read_json(os.path.join(wd, ATTEMPT)) or {}
    holder = live_holder(wd) if os.path.isdir(wd) else None
    starting = (attempt.get("exit_code") is None and attempt.get("host") == socket.gethostname()
                and _pid_alive(attempt.get("pid")))
    if holder is not None or starting:
        steps = [s for s in (ckpt, metrics_step(os.path.join(wd, "metrics.jsonl"))) if s is not None]
        host, pid = (holder or attempt).get("host"), (holder or attempt).get("pid")
        where = f"host {host}, pid {pid}"
        if holder is None:
            where += " (starting: no lock yet)"
        elif not holder["here"]:
            where += " (another host: as its lock says, heartbeat fresh)"
        return {**row, "state": "running", "step": max(steps) if steps else None, "host": host, "pid": pid,
                "detail": where}
    if is_done(p, ckpt):
        return {**row, "state": "finished", "detail": f"checkpoint at step {ckpt}"}
    lines = last_attempt_lines(log) if row["log"] else []
    rc = attempt.get("exit_code")
    failed = (rc not in (0, None) and not attempt.get("interrupted")) if attempt else _log_says_failed(lines)
    if failed:
        err = error_line(lines)
        code = f"exit code {rc}: " if rc is not None else ""
        return {**row, "state": "failed", "exit_code": rc, "error": err, "host": attempt.get("host"),
                "pid": attempt.get("pid"), "detail": f"{code}{short(err or '(no output)')}; log {log}"}
    if ckpt is not None:
        return {**row, "state": "preempted", "detail": f"resumable from its checkpoint at step {ckpt}"}
    if row["log"]:
        row["detail"] = "stopped before its first checkpoint"
    return row


def sweep_status(planned: list, root: str, scheduler: dict | None = None) -> list:
    """Every run's row (run_status), in the sweep's order; with `scheduler` ({run name: state}), each
    row also gets "scheduler" (None for a run it does not name)."""
    rows = [run_status(p, root) for p in planned]
    if scheduler is not None:
        for r in rows:
            said = r["scheduler"] = scheduler.get(r["name"])
            if not said or r["state"] in ("running", "finished"):
                continue
            if said.startswith("RUNNING"):  # its task started; the trainer has not taken the lock yet
                r["state"], r["detail"] = "running", "starting: the task runs, no lock yet"
            elif said.startswith("PENDING"):
                r["detail"] = "queued" + (f"; {r['detail']}" if r["detail"] else "")
    return rows


def format_status(rows: list) -> str:
    """The rows as a table: run, state, step/target, [scheduler,] detail."""
    cols = ["run", "state", "step"] + (["scheduler"] if rows and "scheduler" in rows[0] else []) + ["detail"]
    table = [cols] + [[r["name"], r["state"], f"{'-' if r['step'] is None else r['step']}/{r['target']}"]
                      + ([r["scheduler"] or "-"] if "scheduler" in cols else []) + [r["detail"]] for r in rows]
    widths = [max(len(str(t[i])) for t in table) for i in range(len(cols) - 1)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(t, widths)) + "  " + str(t[-1]) for t in table]
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    return "\n".join(line.rstrip() for line in lines) + f"\n{len(rows)} runs: {summary}"
