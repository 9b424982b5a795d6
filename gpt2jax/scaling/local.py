"""The local launcher: each run as its own `gpt2jax.train` subprocess, one after another, output teed to
ROOT/<name>/train.log. A run whose latest checkpoint is at its num_steps is skipped; an interrupted one
resumes (train resumes by itself from its workdir). Ctrl-C is passed to the current run, which saves; the
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

from gpt2jax.scaling.launch import latest_step, train_args
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


def launch_local(planned: list, root: str, dry_run: bool, progress: bool = True) -> int:
    from tqdm.auto import tqdm

    todo = []
    for p in planned:
        wd = os.path.abspath(os.path.join(root, p.name))
        done = latest_step(p, wd)
        todo.append((p, wd, done))
        if done is not None and done >= p.num_steps:
            print(f"{p.name}: finished (checkpoint at step {done} of {p.num_steps}), skipped", flush=True)
    if dry_run:
        for p, wd, done in todo:
            if done is None or done < p.num_steps:
                cmd = [sys.executable] + train_args(p, wd, os.path.abspath(resolve_config_path(p.run.config)))
                print(f"$ {shlex.join(cmd)}  (log: {wd}/train.log)", flush=True)
        return 0

    finished = sum(1 for p, _, done in todo if done is not None and done >= p.num_steps)
    runs_bar = tqdm(total=len(planned), initial=finished, desc="sweep", unit="run", position=0,
                    dynamic_ncols=True, disable=not progress)
    stop = {"sig": None, "child": None}

    def on_signal(signum, _frame):
        stop["sig"] = signum
        child = stop["child"]
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)  # the run finishes its step, saves and exits

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    unfinished = []
    try:
        for p, wd, done in todo:
            if done is not None and done >= p.num_steps:
                continue
            if stop["sig"] is not None:
                break
            cmd = [sys.executable] + train_args(p, wd, os.path.abspath(resolve_config_path(p.run.config)))
            log_path = os.path.join(wd, "train.log")
            runs_bar.set_postfix_str(p.name)
            runs_bar.write("$ " + shlex.join(cmd) + f"  (log: {log_path})")
            step_bar = tqdm(total=p.num_steps, initial=done or 0, desc=p.name, unit="step", position=1,
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
            if now is not None and now >= p.num_steps:
                runs_bar.update(1)
            else:
                unfinished.append(f"{p.name} (step {now} of {p.num_steps})")
                runs_bar.write(f"  {p.name}: stopped at step {now} of {p.num_steps}")
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
    if unfinished:
        print(f"{len(planned) - len(unfinished)}/{len(planned)} runs finished; not yet: "
              + ", ".join(unfinished) + " (run the same command to continue)", flush=True)
    else:
        print(f"all {len(planned)} runs finished in {root}", flush=True)
    return 0


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
