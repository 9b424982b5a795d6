"""The local launcher: each run as its own `gpt2jax.train` subprocess, one after another, output teed to
ROOT/<name>/train.log. A run whose latest checkpoint is at its num_steps (or its train.stop_after, when
that comes first: a cooldown sweep's stable parent) is skipped; an interrupted one resumes (train resumes
by itself from its workdir). Cooldown branches run after the run they branch from; a branch that has not
started yet whose parent has no checkpoint at its train.branch_step is skipped with a message (and the
sweep ends with status 1) instead of being started. Ctrl-C is passed to the current run, which saves; the
same command continues.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time

from gpt2jax.scaling.launch import is_done, latest_step, ordered, parent_dir, parent_steps, target_step, train_args
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


def launch_local(planned: list, root: str, dry_run: bool, progress: bool = True) -> int:
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
    stop = {"sig": None, "child": None}

    def on_signal(signum, _frame):
        stop["sig"] = signum
        child = stop["child"]
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)  # the run finishes its step, saves and exits

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    unfinished, blocked = [], []
    try:
        for p, wd, done in todo:
            if is_done(p, done):
                continue
            if stop["sig"] is not None:
                break
            why = branch_blocker(p, wd, done)
            if why is not None:
                blocked.append(p.name)
                runs_bar.write(f"{p.name}: skipped, not started: {why}", file=sys.stderr)
                continue
            cmd = [sys.executable] + train_args(p, wd, os.path.abspath(resolve_config_path(p.run.config)))
            log_path = os.path.join(wd, "train.log")
            runs_bar.set_postfix_str(p.name)
            runs_bar.write("$ " + shlex.join(cmd) + f"  (log: {log_path})")
            step_bar = tqdm(total=target_step(p), initial=done or 0, desc=p.name, unit="step", position=1,
                            leave=False, dynamic_ncols=True, mininterval=1.0, disable=not progress)
            with open(log_path, "ab") as log:
                log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n".encode())
                # Own session: a terminal's Ctrl-C reaches only this process, which passes it on once.
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=os.getcwd())
                stop["child"] = proc
                if stop["sig"] is not None:
                    proc.send_signal(signal.SIGINT)

                def on_step(s, bar=step_bar):
                    bar.update(s - bar.n)  # tqdm's mininterval keeps redraws rare

                def on_line(line, bar=runs_bar, name=p.name):
                    if "val_loss" in line or "resuming" in line or "stop" in line:
                        bar.write(f"  {name}: {line}")

                _stream_child(proc, log, on_line, on_step)
                rc = proc.wait()
                stop["child"] = None
            step_bar.close()
            if stop["sig"] is not None:
                raise _Interrupted()
            if rc != 0:
                runs_bar.close()
                print(f"error: run {p.name} failed (exit code {rc}); its log: {log_path}", file=sys.stderr)
                tail = _tail(log_path, 15)
                if tail:
                    print(tail, file=sys.stderr)
                return 1
            now = latest_step(p, wd)
            if is_done(p, now):
                runs_bar.update(1)
            else:
                unfinished.append(f"{p.name} (step {now} of {target_step(p)})")
                runs_bar.write(f"  {p.name}: stopped at step {now} of {target_step(p)}")
        if stop["sig"] is not None:
            raise _Interrupted()
    except _Interrupted:
        runs_bar.close()
        print("interrupted: run the same command to continue", file=sys.stderr, flush=True)
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    runs_bar.close()
    if unfinished or blocked:
        print(f"{len(planned) - len(unfinished) - len(blocked)}/{len(planned)} runs finished; not yet: "
              + ", ".join(unfinished + [f"{b} (its parent's checkpoint is missing)" for b in blocked])
              + " (run the same command to continue)", flush=True)
    else:
        print(f"all {len(planned)} runs finished in {root}", flush=True)
    return 1 if blocked else 0


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
