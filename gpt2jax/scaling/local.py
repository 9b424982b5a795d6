"""The local launcher: each run as its own `gpt2jax.train` subprocess, one after another, output teed to
ROOT/<name>/train.log, each attempt recorded in ROOT/<name>/sweep_attempt.json (host, pid, times, exit
code, whether a Ctrl-C stopped it: what --status tells a failure from an interruption by). A run whose
latest checkpoint is at its num_steps (or its train.stop_after, when that comes first: a cooldown sweep's
stable parent) is skipped; an interrupted one resumes (train resumes by itself from its workdir). A run
that fails does not stop the others; the sweep ends with status 1, a table of the failures and the
command that retries only those (--only). Cooldown branches run after the run they branch from; a branch
whose parent failed, or that has not started yet and whose parent has no checkpoint at its
train.branch_step, is skipped with a message (status 1) instead of being started.

Ctrl-C (SIGINT or SIGTERM) is passed to the current run as SIGINT, which saves and stops, or, while it
still starts (imports, compilation), stops cleanly before its first step (gpt2jax.train.StartupStop:
the child starts with SIGINT ignored and the signal is repeated until it holds its workdir lock); the
same command continues. A second Ctrl-C SIGKILLs the run's process group (its own session) and says
which step it was at and which checkpoint it left. Status 130.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

from gpt2jax.lock import live_holder
from gpt2jax.scaling.launch import (is_done, latest_step, ordered, parent_dir, parent_steps, sweep_parent,
                                    target_step, train_args)
from gpt2jax.scaling.status import ATTEMPT_MARK, error_line, last_attempt_lines, short, write_attempt
from gpt2jax.scaling.overrides import resolve_config_path


_PROGRESS_RE = re.compile(r"train:\s*\d+%\|.*?\|\s*(\d+)/(\d+)")


class _Interrupted(Exception):
    pass


def _stream_child(proc, log, on_line, on_step) -> None:
    """Copy the child's output to the log file, turn its progress bar into step updates and pass
    its other lines to on_line."""
    buf = b""
    while True:
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        log.write(chunk)
        log.flush()
        buf += chunk
        parts = re.split(rb"[\r\n]", buf)
        buf = parts.pop()
        for raw in parts:
            line = raw.decode("utf-8", "replace").rstrip()
            m = _PROGRESS_RE.search(line)
            if m:
                on_step(int(m.group(1)))
            elif line.strip():
                on_line(line)
    if buf.strip():
        on_line(buf.decode("utf-8", "replace").rstrip())


def _done_note(p, done: int) -> str:
    n, target = p.num_steps, target_step(p)
    if target < n:
        return f"done to train.stop_after={target} (checkpoint at step {done}; num_steps {n})"
    return f"finished (checkpoint at step {done} of {n})"


def branch_blocker(p, workdir: str, done: int | None) -> str | None:
    """Why a cooldown branch cannot start now (its parent has no checkpoint at train.branch_step), or
    None: it can, or it is no branch, or it has checkpoints of its own (it resumes from those)."""
    t = p.config.train
    if not t.branch_from or done is not None:
        return None
    where = parent_dir(p, workdir)
    steps = parent_steps(where)
    if steps is not None and int(t.branch_step) in steps:
        return None
    has = "no checkpoints" if not steps else f"checkpoints at steps {sorted(steps)}"
    return (f"its parent {where} has no checkpoint at train.branch_step={t.branch_step} ({has}); "
            "run the parent to that step first")


def _kill_group(proc) -> None:
    """SIGKILL the child's process group (it runs in its own session: the group is its pid)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _ask_to_stop(proc, workdir: str) -> None:
    """SIGINT to the child, again every 0.5 s until one has gone after it took its workdir lock, or it
    exits. The child starts with SIGINT ignored (a KeyboardInterrupt in its imports would end it with a
    traceback) until train installs its own handler, before it takes the lock: a SIGINT sent earlier may
    be lost; repeated ones before the lock only set train's start-up flag (gpt2jax.train.StartupStop)."""
    while proc.poll() is None:
        holder = live_holder(workdir)
        locked = holder is not None and holder.get("pid") == proc.pid
        try:
            proc.send_signal(signal.SIGINT)
        except OSError:
            return
        if locked:
            return
        time.sleep(0.5)


def _ask_in_background(proc, workdir: str) -> None:
    threading.Thread(target=_ask_to_stop, args=(proc, workdir), name="gpt2jax-sweep-stop", daemon=True).start()


def launch_local(planned: list, root: str, dry_run: bool, progress: bool = True, command: list | None = None) -> int:
    """Run the sweep (see the module's docstring). `command`: the gpt2jax-sweep command line that
    started it, to which the retry hint adds --only=NAME for each run that failed."""
    from tqdm.auto import tqdm

    todo = []
    for p in ordered(planned):
        wd = os.path.abspath(os.path.join(root, p.name))
        done = latest_step(p, wd)
        todo.append((p, wd, done))
        if is_done(p, done):
            print(f"{p.name}: {_done_note(p, done)}, skipped", flush=True)
    if dry_run:
        for p, wd, done in todo:
            if not is_done(p, done):
                cmd = [sys.executable] + train_args(p, wd, os.path.abspath(resolve_config_path(p.run.config)))
                print(f"$ {shlex.join(cmd)}  (log: {wd}/train.log)", flush=True)
        return 0

    finished = sum(1 for p, _, done in todo if is_done(p, done))
    runs_bar = tqdm(total=len(planned), initial=finished, desc="sweep", unit="run", position=0,
                    dynamic_ncols=True, disable=not progress)
    stop = {"sig": None, "child": None, "killed": False, "step": None, "wd": None}

    def on_signal(signum, _frame):
        child = stop["child"]
        alive = child is not None and child.poll() is None
        if stop["sig"] is not None:  # the second Ctrl-C / SIGTERM: end now
            stop["killed"] = alive
            if alive:
                _kill_group(child)
            return
        stop["sig"] = signum
        if alive:
            _ask_in_background(child, stop["wd"])  # the run finishes its step, saves and exits

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    names = {p.name for p in planned}
    unfinished, blocked, failed = [], [], []  # failed: (name, exit code, last error line, log)
    lost = set()  # the runs that failed, and the branches skipped because of them
    try:
        for p, wd, done in todo:
            if is_done(p, done):
                continue
            if stop["sig"] is not None:
                break
            parent = sweep_parent(p, names)
            why, reason = branch_blocker(p, wd, done), "its parent's checkpoint is missing"
            if parent in lost:
                what = "failed" if parent in {f[0] for f in failed} else "was skipped"
                why = reason = f"its parent {parent} {what}"
                lost.add(p.name)
            if why is not None:
                blocked.append((p.name, reason))
                runs_bar.write(f"{p.name}: skipped, not started: {why}", file=sys.stderr)
                continue
            cmd = [sys.executable] + train_args(p, wd, os.path.abspath(resolve_config_path(p.run.config)))
            log_path = os.path.join(wd, "train.log")
            runs_bar.set_postfix_str(p.name)
            runs_bar.write("$ " + shlex.join(cmd) + f"  (log: {log_path})")
            step_bar = tqdm(total=target_step(p), initial=done or 0, desc=p.name, unit="step", position=1,
                            leave=False, dynamic_ncols=True, mininterval=1.0, disable=not progress)
            with open(log_path, "ab") as log:
                log.write(f"{ATTEMPT_MARK}{time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n".encode())
                log.flush()
                # Own session: a terminal's Ctrl-C reaches only this process, which passes it on. SIGINT
                # ignored while the child starts (inherited; train's own handler replaces it).
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                try:
                    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=os.getcwd())
                finally:
                    signal.signal(signal.SIGINT, on_signal)
                stop["child"], stop["step"], stop["wd"] = proc, None, wd
                attempt = {"host": socket.gethostname(), "pid": proc.pid, "sweep_pid": os.getpid(),
                           "started": time.time(), "exit_code": None, "command": cmd}
                write_attempt(wd, attempt)
                if stop["sig"] is not None:
                    _ask_in_background(proc, wd)

                def on_step(s, bar=step_bar):
                    stop["step"] = s
                    bar.update(s - bar.n)  # tqdm's mininterval keeps redraws rare

                def on_line(line, bar=runs_bar, name=p.name):
                    if "val_loss" in line or "resuming" in line or "stop" in line:
                        bar.write(f"  {name}: {line}")

                _stream_child(proc, log, on_line, on_step)
                rc = proc.wait()
                stop["child"] = None
            write_attempt(wd, {**attempt, "exit_code": rc, "interrupted": stop["sig"] is not None,
                               "killed": stop["killed"], "ended": time.time()})
            step_bar.close()
            if stop["sig"] is not None:
                raise _Interrupted(_interrupted_note(p, wd, stop))
            if rc != 0:
                err = error_line(last_attempt_lines(log_path))
                failed.append((p.name, rc, err or "(no output)", log_path))
                lost.add(p.name)
                runs_bar.write(f"error: run {p.name} failed (exit code {rc}); its log: {log_path}", file=sys.stderr)
                tail = _tail(log_path, 15)
                if tail:
                    runs_bar.write(tail, file=sys.stderr)
                continue
            now = latest_step(p, wd)
            if is_done(p, now):
                runs_bar.update(1)
            else:
                unfinished.append(f"{p.name} (step {now} of {target_step(p)})")
                runs_bar.write(f"  {p.name}: stopped at step {now} of {target_step(p)}")
        if stop["sig"] is not None:
            raise _Interrupted("")
    except _Interrupted as e:
        runs_bar.close()
        if str(e):
            print(str(e), file=sys.stderr, flush=True)
        print("interrupted: run the same command to continue", file=sys.stderr, flush=True)
        return 130
    finally:
        child = stop["child"]
        if child is not None and child.poll() is None:  # the sweep itself failed: never leave a run behind
            _kill_group(child)
            child.wait()
            print(f"the sweep stopped: its run (pid {child.pid}) was killed", file=sys.stderr, flush=True)
        for s, h in old.items():
            signal.signal(s, h)
    runs_bar.close()
    not_yet = unfinished + [f"{n} ({why})" for n, why in blocked] + [f"{f[0]} (failed)" for f in failed]
    if not_yet:
        print(f"{len(planned) - len(not_yet)}/{len(planned)} runs finished; not yet: " + ", ".join(not_yet)
              + ("" if failed else " (run the same command to continue)"), flush=True)
    else:
        print(f"all {len(planned)} runs finished in {root}", flush=True)
    if failed:
        _report_failures(failed, [n for n, _ in blocked if n in lost], command, root)
    return 1 if blocked or failed else 0


def _interrupted_note(p, wd: str, stop: dict) -> str:
    """What an interrupted run left, for the message before 'run the same command to continue'."""
    ckpt = latest_step(p, wd)
    has = f"its last checkpoint is step {ckpt}" if ckpt is not None else "it has no checkpoint yet"
    if stop["killed"]:
        at = f" at step {stop['step']}" if stop["step"] is not None else " while it started"
        then = "the same command resumes from there" if ckpt is not None else "the same command starts it again"
        return f"run {p.name} killed{at}; {has}; {then}"
    if is_done(p, ckpt):
        return f"run {p.name} finished (checkpoint at step {ckpt})"
    if ckpt is None:
        return f"run {p.name} stopped before its first checkpoint (nothing to resume: it starts again)"
    return f"run {p.name} stopped and saved: {has}"


def _report_failures(failed: list, skipped: list, command: list | None, root: str) -> None:
    rows = [("run", "exit code", "last error line", "log")]
    rows += [(n, str(rc), short(err), log) for n, rc, err, log in failed]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{len(failed)} run(s) failed:", file=sys.stderr)
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3], file=sys.stderr)
    base = command or ["gpt2jax-sweep", "SPEC", f"--root={root}"]
    retry = base + [f"--only={n}" for n in [f[0] for f in failed] + skipped]
    also = f" (and the branches skipped with them: {', '.join(skipped)})" if skipped else ""
    print(f"to retry only these{also}: {shlex.join(retry)}", file=sys.stderr, flush=True)


def _tail(path: str, n: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8000))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln for ln in re.split(r"[\r\n]", text) if ln.strip()]
    return "\n".join(lines[-n:])
