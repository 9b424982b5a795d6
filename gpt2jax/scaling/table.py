"""A sweep's runs as a table: each run directory (run.json and metrics.jsonl from gpt2jax-train,
sweep_run.json from gpt2jax-sweep) read into a record, the records written as runs.csv (the base
columns, then the config fields that vary), and a CSV table (published numbers) read back as records.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

import numpy as np

from gpt2jax.errors import AnalysisError
from gpt2jax.fileio import write_text_atomic

BASE_COLUMNS = ["name", "params", "params_non_embedding", "tokens", "flops_6nd", "flops",
                "budget_flops", "loss", "best_loss", "bpb", "branch_of", "branch_step", "status"]
# The conventions a fit can count by (fits.json records the one used; docs/scaling_laws.md compares them):
# N = all parameters (Hoffmann et al.) or the non-embedding ones (Kaplan et al.); C = 6 N D or the FLOPs
# with attention (run.json's flops_per_token x tokens); the loss in nats per token or bits per byte.
PARAMS = ("total", "non_embedding")
FLOPS = ("6nd", "attention")
METRICS = ("loss", "bpb")
# Config fields that differ between runs without changing the experiment.
IGNORED_FIELDS = {"checkpoint.dir", "train.compile_cache", "train.init_from", "data.dir",
                  "eval.tasks_dir", "train.profile_start", "train.profile_steps"}


def read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise AnalysisError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise AnalysisError(f"{path}: not a text (UTF-8) file") from None
    except OSError as e:
        raise AnalysisError(f"{path}: cannot read ({e.strerror})") from None


def read_jsonl(path: str) -> list[dict]:
    rows = []
    try:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise AnalysisError(f"{path}:{i}: not valid JSON ({e})") from None
                if not isinstance(row, dict):
                    raise AnalysisError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
    except UnicodeDecodeError:
        raise AnalysisError(f"{path}: not a text (UTF-8) file") from None
    except OSError as e:
        raise AnalysisError(f"{path}: cannot read ({e.strerror})") from None
    return rows


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    return out


def _num(x, path: str, key: str, required: bool = True):
    if x is None and not required:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise AnalysisError(f"{path}: '{key}' must be a finite number, got {x!r}")
    return float(x)


def read_run(run_dir: str) -> dict:
    """One run directory -> a record: the table row, its loss curves and why it is unfinished."""
    name = os.path.basename(os.path.normpath(run_dir))
    rec = {"name": name, "dir": run_dir, "status": "finished", "curve": None, "val_curve": None}
    sweep_path = os.path.join(run_dir, "sweep_run.json")
    run_path = os.path.join(run_dir, "run.json")
    sweep = read_json(sweep_path) if os.path.exists(sweep_path) else None
    info = read_json(run_path) if os.path.exists(run_path) else None
    for path, obj in ((sweep_path, sweep), (run_path, info)):
        if obj is not None and not isinstance(obj, dict):
            raise AnalysisError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    if sweep is not None:
        rec["name"] = str(sweep.get("name") or name)
        rec["budget_flops"] = _num(sweep.get("budget_flops"), sweep_path, "budget_flops", required=False)
        rec["tags"] = sweep.get("tags")
    src, src_path = (info, run_path) if info is not None else (sweep, sweep_path)
    for key in ("params", "params_non_embedding"):
        if key not in src:
            raise AnalysisError(f"{src_path}: missing '{key}'")
        rec[key] = _num(src[key], src_path, key)
    if info is None:  # not started: what the sweep planned
        cfg = sweep.get("config")
        rec["fields"] = (_flatten(cfg) if isinstance(cfg, dict)
                         else dict(sweep.get("overrides") or {}) if isinstance(sweep.get("overrides"), dict)
                         else {})
        rec["status"] = "unfinished: not started (no run.json)"
        rec["tokens"] = _num(sweep.get("tokens"), sweep_path, "tokens", required=False)
        return rec
    config = info.get("config")
    if not isinstance(config, dict):
        raise AnalysisError(f"{run_path}: missing 'config' (the run's full config)")
    rec["fields"] = _flatten(config)
    tok = info.get("tokenizer")
    rec["tokenizer"] = tok.get("name") if isinstance(tok, dict) else None  # 'bytes': a token is a byte
    rec["flops_per_token"] = _num(info.get("flops_per_token"), run_path, "flops_per_token")
    try:
        batch = int(config["train"]["batch_size"])
        seq = int(config["train"].get("seq_len") or config["model"]["block_size"])
        num_steps = int(config["train"]["num_steps"])
    except (KeyError, TypeError, ValueError):
        raise AnalysisError(f"{run_path}: config lacks train.batch_size, train.num_steps or "
                            "model.block_size") from None
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(metrics_path):
        rec["status"] = "unfinished: no metrics.jsonl yet"
        return rec
    rows = read_jsonl(metrics_path)
    train = [(r["step"], r["tokens"], r["loss"]) for r in rows
             if isinstance(r.get("loss"), (int, float)) and isinstance(r.get("tokens"), (int, float))
             and isinstance(r.get("step"), (int, float))]
    val = [(r["step"], r["val_loss"]) for r in rows
           if isinstance(r.get("val_loss"), (int, float)) and isinstance(r.get("step"), (int, float))]
    bpb = [(r["step"], r["val_bpb"]) for r in rows
           if isinstance(r.get("val_bpb"), (int, float)) and isinstance(r.get("step"), (int, float))]
    branch = info.get("branch")
    if isinstance(branch, dict):  # a cooldown branch (train.branch_from): its parent and start step
        rec["branch_of"] = os.path.basename(str(branch.get("parent", "")).rstrip("/")) or None
        rec["branch_step"] = branch.get("step")
    fpt = rec["flops_per_token"]
    if train:
        t = np.array(train, np.float64)
        rec["curve"] = (t[:, 1] * fpt, t[:, 2], t[:, 0] / num_steps)
    if val:
        v = np.array(sorted(val), np.float64)
        rec["val_curve"] = (v[:, 0] * batch * seq * fpt, v[:, 1])
    if not val:
        rec["status"] = "unfinished: no val_loss yet"
        return rec
    last_step, last_loss = max(val, key=lambda sv: sv[0])  # the latest evaluation
    if not math.isfinite(last_loss):
        rec["status"] = f"left out: val_loss is {last_loss} at step {int(last_step)}"
        return rec
    val = [(s, l) for s, l in val if math.isfinite(l)]
    rec["tokens"] = float(last_step * batch * seq)
    rec["loss"] = float(last_loss)
    if bpb and max(bpb)[0] == last_step:
        rec["bpb"] = float(max(bpb)[1])
    rec["best_loss"] = float(min(l for _, l in val))
    if last_step < num_steps:
        rec["status"] = f"unfinished: last val_loss at step {int(last_step)} of {num_steps}"
    return rec


def collect(root: str) -> list[dict]:
    if not os.path.exists(root):
        raise AnalysisError(f"{root}: no such directory")
    if not os.path.isdir(root):
        raise AnalysisError(f"{root}: not a directory")
    runs = []
    for entry in sorted(os.listdir(root)):
        d = os.path.join(root, entry)
        if os.path.isdir(d) and any(os.path.exists(os.path.join(d, f))
                                    for f in ("run.json", "sweep_run.json")):
            runs.append(read_run(d))
    if not runs:
        raise AnalysisError(f"{root}: no runs (a run is a directory {root}/<name>/ with run.json "
                            "or sweep_run.json)")
    return runs


def _derive(rec: dict) -> dict:
    tok = rec.get("tokens")
    if tok is not None:
        rec["flops_6nd"] = 6.0 * rec["params"] * tok
        if rec.get("flops_per_token") is not None:
            rec["flops"] = tok * rec["flops_per_token"]
    return rec


def table_rows(runs: list[dict]) -> tuple[list[str], list[dict]]:
    """runs.csv's columns (the base ones, then the config fields that vary) and rows."""
    for r in runs:
        _derive(r)
    keys = sorted(set().union(*(r.get("fields", {}).keys() for r in runs)))
    varying = []
    for k in keys:
        if k in IGNORED_FIELDS:
            continue
        vals = {json.dumps(r["fields"][k], sort_keys=True) for r in runs if k in r.get("fields", {})}
        if len(vals) > 1:
            varying.append(k)
    rows = []
    for r in runs:
        row = {c: r.get(c) for c in BASE_COLUMNS}
        row.update({k: r.get("fields", {}).get(k) for k in varying})
        rows.append(row)
    return BASE_COLUMNS + varying, rows


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    return str(v)


def write_csv(path: str, columns: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_fmt(row.get(c)) for c in columns])
    write_text_atomic(path, buf.getvalue())


def read_csv(path: str) -> list[dict]:
    """A table with at least params, tokens and loss (flops, params_non_embedding, budget_flops,
    name, status optional). Rows whose status is not 'finished' or with no loss are left out."""
    try:
        with open(path, newline="") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise AnalysisError(f"{path}: not a text (UTF-8) file") from None
    except OSError as e:
        raise AnalysisError(f"{path}: cannot read ({e.strerror})") from None
    try:
        table = list(csv.DictReader(io.StringIO(text)))
        cols = list(table[0].keys()) if table else next(csv.reader(io.StringIO(text)), [])
    except csv.Error as e:
        raise AnalysisError(f"{path}: not a CSV table ({e})") from None
    cols = [c for c in cols if c is not None]
    missing = [c for c in ("params", "tokens", "loss") if c not in cols]
    if missing:
        shown = ", ".join(cols[:8]) + (", ..." if len(cols) > 8 else "")
        raise AnalysisError(f"{path}: missing column(s) {', '.join(missing)} (a CSV table needs params, "
                            f"tokens, loss; its header has {shown if cols else 'nothing'})")
    runs = []
    for i, row in enumerate(table, 2):
        rec = {"name": row.get("name") or f"row{i}", "status": row.get("status") or "finished",
               "fields": {}, "curve": None, "val_curve": None}
        for c in ("params", "params_non_embedding", "tokens", "loss", "best_loss", "flops",
                  "flops_6nd", "budget_flops", "bpb"):
            v = (row.get(c) or "").strip()
            if not v:
                rec[c] = None
                continue
            try:
                rec[c] = float(v)
            except ValueError:
                raise AnalysisError(f"{path}:{i}: column '{c}' is not a number: {v!r}") from None
            if not math.isfinite(rec[c]) or (c != "budget_flops" and rec[c] <= 0):
                raise AnalysisError(f"{path}:{i}: column '{c}' must be a positive number, got {v!r}")
        if rec["loss"] is None and rec["status"] == "finished":
            rec["status"] = "unfinished: no loss"
        if rec["status"] == "finished" and (rec["params"] is None or rec["tokens"] is None):
            raise AnalysisError(f"{path}:{i}: params and tokens are required")
        if rec["status"] == "finished":
            rec["flops_6nd"] = rec.get("flops_6nd") or 6.0 * rec["params"] * rec["tokens"]
        runs.append(rec)
    if not runs:
        raise AnalysisError(f"{path}: no rows")
    return runs
