"""Collect a sweep's runs, fit scaling laws, draw the plots, and plan a compute budget.

    python -m experiments.analyze --root=DIR --out=OUT     # every run under DIR (one workdir each)
    python -m experiments.analyze --csv=FILE --out=OUT     # a table: params, tokens, loss [, flops, ...]
    python -m experiments.analyze --fits=OUT/fits.json --budget_flops=1e21   # the planner

--root reads DIR/<run>/run.json (gpt2jax.train), metrics.jsonl and sweep_run.json (experiments.sweep)
and writes OUT/runs.csv; both modes write OUT/fits.json (see experiments/fits.py for the fits) and
PNG plots. docs/scaling_laws.md describes the fits and the files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys

import numpy as np

from experiments import fits as fits_lib

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


class AnalysisError(Exception):
    """Something the user can fix (a path, a file's contents). The message names the file."""


# ---------------------------------------------------------------------------------------------
# Reading runs
def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise AnalysisError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError:
        raise AnalysisError(f"{path}: not a text (UTF-8) file") from None
    except OSError as e:
        raise AnalysisError(f"{path}: cannot read ({e.strerror})") from None


def _read_jsonl(path: str) -> list[dict]:
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
    sweep = _read_json(sweep_path) if os.path.exists(sweep_path) else None
    info = _read_json(run_path) if os.path.exists(run_path) else None
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
    rows = _read_jsonl(metrics_path)
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
    _atomic_write(path, buf.getvalue())


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


# ---------------------------------------------------------------------------------------------
# Fitting
def _count_basis(runs: list[dict]) -> dict | None:
    """The vocabulary and context the runs' parameter counts assume, when all runs agree."""
    seen = {(r["fields"].get("model.vocab_size"), r["fields"].get("model.block_size")) for r in runs}
    if len(seen) == 1:
        v, b = seen.pop()
        if isinstance(v, int) and isinstance(b, int):
            return {"vocab_size": v, "block_size": b}
    return None


def convention_view(runs: list[dict], params: str = "total", flops: str = "6nd", metric: str = "loss") -> list[dict]:
    """The finished runs as the fits see them under a counting convention: `params` (N), `loss` (the metric)
    and `budget_flops` (an IsoFLOP group's C: the spec's budget under (total, 6nd); otherwise the geometric
    mean, over the group's runs, of 6 N D with this N or of the FLOPs with attention). Runs without the
    metric or the FLOP count are left out."""
    if params not in PARAMS or flops not in FLOPS or metric not in METRICS:
        raise AnalysisError(f"unknown convention params={params!r} flops={flops!r} metric={metric!r} "
                            f"(params: {PARAMS}, flops: {FLOPS}, metric: {METRICS})")
    out = []
    for r in runs:
        if r["status"] != "finished":
            continue
        n = r.get("params_non_embedding") if params == "non_embedding" else r.get("params")
        value = r.get(metric)
        c = 6.0 * n * r["tokens"] if (n and flops == "6nd") else r.get("flops")
        if not n or value is None or c is None:
            continue
        out.append({**r, "params": float(n), "loss": float(value), "_c": float(c)})
    if (params, flops) != ("total", "6nd"):
        groups: dict = {}
        for r in out:
            if r.get("budget_flops") is not None:
                groups.setdefault(r["budget_flops"], []).append(r)
        for members in groups.values():
            label = float(np.exp(np.mean(np.log([m["_c"] for m in members]))))
            for m in members:
                m["budget_flops"] = label
    return out


def run_fits(runs: list[dict], n_boot: int = 200, seed: int = 0, power_law_tokens: str = "fixed",
             power_law_e0: bool = False, frontier_e0: bool = True, frontier_skip: float = 0.1,
             progress=None, params: str = "total", flops: str = "6nd", metric: str = "loss") -> dict:
    from threadpoolctl import threadpool_limits

    convention = {"params": params, "flops": flops, "metric": metric}
    if convention != {"params": "total", "flops": "6nd", "metric": "loss"}:
        kept = {id(r) for r in runs if r["status"] != "finished"}
        view = convention_view(runs, params, flops, metric)
        left = [r["name"] for r in runs if r["status"] == "finished" and r["name"] not in {v["name"] for v in view}]
        runs = [r for r in runs if id(r) in kept] + view
        for r in runs:
            if r["status"] == "finished" and r.get("params_non_embedding") and params == "non_embedding":
                r["params_non_embedding"] = r["params"]
    else:
        left = []
    done = [r for r in runs if r["status"] == "finished"]
    out = {
        "n_runs": len(runs),
        "n_finished": len(done),
        "unfinished": {r["name"]: r["status"] for r in runs if r["status"] != "finished"},
        "count_basis": _count_basis(done) if done else None,
    }
    if convention != {"params": "total", "flops": "6nd", "metric": "loss"}:
        out["convention"] = convention
        if left:
            out["left_out_by_convention"] = left
    if not done:
        reason = "no finished runs (a run counts once it has a val_loss at its num_steps)"
        for k in ("chinchilla", "power_law_n", "frontier", "isoflop"):
            out[k] = {"skipped": reason}
        return out
    n = np.array([r["params"] for r in done])
    d = np.array([r["tokens"] for r in done])
    loss = np.array([r["loss"] for r in done])
    budgets = np.array([np.nan if r.get("budget_flops") is None else r["budget_flops"] for r in done])

    def prog(desc):
        return None if progress is None else (lambda it: progress(it, desc))

    # The many tiny L-BFGS solves are dominated by BLAS thread start-up unless BLAS runs single-threaded.
    with threadpool_limits(limits=1, user_api="blas"):
        out["chinchilla"] = fits_lib.fit_chinchilla(
            n, d, loss, n_boot=n_boot, seed=seed,
            budgets=sorted({float(b) for b in budgets[np.isfinite(budgets)]}),
            progress=prog("chinchilla L-BFGS"))
        out["power_law_n"] = _fit_power_law_n(done, power_law_tokens, power_law_e0, n_boot, seed,
                                              prog("bootstrap power_law_n"))
        out["frontier"] = _fit_frontier(done, frontier_e0, frontier_skip, n_boot, seed,
                                        prog("bootstrap frontier"))
        out["isoflop"] = fits_lib.fit_isoflop(budgets, n, loss, n_boot=n_boot, seed=seed,
                                              progress=prog("bootstrap isoflop"))
        out["lr"] = _fit_lr(done, n, loss, n_boot, seed, prog("bootstrap lr"))
    return out


def _fit_lr(done, n, loss, n_boot, seed, progress):
    """The optimal learning rate per size and lr_opt = k N^-x, when the runs sweep optim.lr (>= 3 rates at
    2 sizes or more, as `grid` over lr x shape builds)."""
    lrs = np.array([float(r.get("fields", {}).get("optim.lr", math.nan)) for r in done])
    if not np.isfinite(lrs).all() or len(set(lrs.tolist())) < 3:
        return {"skipped": "the runs do not sweep optim.lr (3 or more learning rates per size)"}
    return fits_lib.fit_lr(n, lrs, loss, n_boot=n_boot, seed=seed, progress=progress)


def _fit_power_law_n(done, tokens_mode, e0, n_boot, seed, progress):
    have_ne = all(r.get("params_non_embedding") for r in done)
    col = "params_non_embedding" if have_ne else "params"
    x = np.array([r[col] for r in done])
    loss = np.array([r["loss"] for r in done])
    tok = np.array([r["tokens"] for r in done])
    need = 3 if e0 else 4
    if tokens_mode == "all":
        sel = np.ones(len(done), bool)
        budget_desc = "all token budgets"
    else:
        keys = fits_lib.group_keys(tok)
        best, best_key = None, None
        for k in sorted(set(keys)):
            s = keys == k
            score = (fits_lib.distinct(x[s]), float(np.median(tok[s])))
            if best is None or score > best:
                best, best_key = score, k
        if best[0] < need:
            return {"skipped": f"no token budget is shared by {need} or more model sizes (the most: "
                               f"{best[0]}); with tokens varying per run use "
                               "--power_law_tokens=all to fit L(N) across budgets"}
        sel = keys == best_key
        budget_desc = float(np.median(tok[sel]))
    res = fits_lib.fit_power_law(x[sel], loss[sel], fixed_e0=e0, n_boot=n_boot, seed=seed,
                                 progress=progress)
    if "skipped" in res:
        return res
    res["law"] = res["law"].replace("x", "N")
    res["N"] = col + ("" if have_ne else " (params_non_embedding missing in the input)")
    res["tokens"] = budget_desc
    res["N_c"] = res.pop("x_c")
    res["log_N_c"] = res.pop("log_x_c")
    res["ci95"]["N_c"] = res["ci95"].pop("x_c")
    res["ci95"]["log_N_c"] = res["ci95"].pop("log_x_c")
    res["runs"] = [r["name"] for r, s in zip(done, sel) if s]
    return res


def run_curves(done, skip: float = 0.1):
    """Per run (compute, loss): the training-loss curve past the first `skip` of its steps, or the
    final (flops, loss) point where no curve was logged (a --csv table)."""
    curves = []
    for r in done:
        if r.get("curve") is not None:
            c, l, frac = r["curve"]
            keep = (frac >= skip) & np.isfinite(l) & (c > 0)
            if keep.sum() >= 2:
                curves.append((c[keep], l[keep]))
                continue
        c = r.get("flops") or r.get("flops_6nd")
        curves.append((np.array([c]), np.array([r["loss"]])))
    return curves


def _fit_frontier(done, e0, skip, n_boot, seed, progress):
    curves = run_curves(done, skip)
    res = fits_lib.fit_frontier(curves, fixed_e0=e0, n_boot=n_boot, seed=seed, progress=progress)
    if "skipped" not in res:
        kinds = {len(c[0]) > 1 for c in curves}
        res["C"] = ("tokens x flops_per_token (run.json)" if all(r.get("flops") for r in done)
                    else "6 x params x tokens")
        res["curves"] = ("training loss (metrics.jsonl), first "
                         f"{skip:.0%} of each run's steps left out" if kinds == {True}
                         else "final loss of each run" if kinds == {False}
                         else "training loss where logged, else the final loss")
    return res


# ---------------------------------------------------------------------------------------------
# The planner
def nearest_shape(n_target: float, basis: dict | None = None, head_dim: int = 64,
                  aspect: tuple[float, float] = (32.0, 128.0)) -> dict:
    """The GPT-2 style shape (n_embd a multiple of head_dim, n_head = n_embd / head_dim) whose
    parameter count (gpt2jax.model.num_params) is nearest n_target; among shapes within 10% of it,
    the one with n_embd / n_layer nearest 64 (GPT-2 124M's) inside `aspect`."""
    from gpt2jax import config as config_lib
    from gpt2jax import model as model_lib

    cfg = config_lib.get_config()
    if basis:
        cfg.model.vocab_size = int(basis["vocab_size"])
        cfg.model.block_size = int(basis["block_size"])

    def count(n_layer, n_embd, non_embedding=False):
        cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head = n_layer, n_embd, n_embd // head_dim
        return model_lib.num_params(cfg.model, non_embedding=non_embedding)

    widths = [head_dim * k for k in range(1, 257)]
    cands = []
    for n_layer in range(1, 129):
        lo, hi = 0, len(widths) - 1  # params grow with width: binary search the crossing
        while lo < hi:
            mid = (lo + hi) // 2
            if count(n_layer, widths[mid]) < n_target:
                lo = mid + 1
            else:
                hi = mid
        for j in {max(lo - 1, 0), lo}:
            w = widths[j]
            cands.append((abs(math.log(count(n_layer, w) / n_target)), n_layer, w))
    close = [c for c in cands if c[0] <= math.log(1.1) and aspect[0] <= c[2] / c[1] <= aspect[1]]
    if close:
        _, n_layer, w = min(close, key=lambda c: (abs(math.log(c[2] / c[1] / 64.0)), c[0]))
    else:
        _, n_layer, w = min(cands)
    return {"n_layer": n_layer, "n_embd": w, "n_head": w // head_dim,
            "params": count(n_layer, w), "params_non_embedding": count(n_layer, w, True),
            "vocab_size": cfg.model.vocab_size, "block_size": cfg.model.block_size}


def plan(fits: dict, c: float) -> dict:
    """The allocation the fitted law gives for C FLOPs (C = 6 N D), the nearest config shape, and
    its predicted loss."""
    chin = fits.get("chinchilla") or {}
    iso = fits.get("isoflop") or {}
    out = {"budget_flops": c}
    if "alpha" in chin and "compute_optimal" in chin:
        alloc = fits_lib.optimal_allocation(chin, c)
        out.update(law="chinchilla", N_opt=alloc["N_opt"], D_opt=alloc["D_opt"])
    elif "a" in iso and "log_k" in iso:
        n_opt = float(fits_lib.isoflop_n_opt(iso, c))
        out.update(law="isoflop", N_opt=n_opt, D_opt=c / (6 * n_opt))
    else:
        reasons = "; ".join(f"{k}: {(fits.get(k) or {}).get('skipped', 'absent')}"
                            for k in ("chinchilla", "isoflop"))
        raise AnalysisError(f"the fits have no law for the compute-optimal size ({reasons})")
    shape = nearest_shape(out["N_opt"], fits.get("count_basis"))
    d_shape = c / (6.0 * shape["params"])
    out.update(shape=shape, D_shape=d_shape, tokens_per_param=d_shape / shape["params"])
    lr_fit = fits.get("lr") or {}
    if "x" in lr_fit:
        out["lr"] = fits_lib.lr_at(lr_fit, shape["params"])
    if "alpha" in chin:
        out["loss"] = float(fits_lib.chinchilla_predict(chin, shape["params"], d_shape))
        out["loss_from"] = "chinchilla L(N, D) at the shape's N and D = C / (6N)"
    elif "alpha" in (fits.get("frontier") or {}):
        fr = fits["frontier"]
        out["loss"] = float(fr["E"] + math.exp(fr["alpha"] * (fr["log_C_c"] - math.log(c))))
        out["loss_from"] = "frontier L(C) (no chinchilla fit)"
    return out


def format_plan(p: dict) -> str:
    s = p["shape"]
    lines = [
        f"compute budget C = {p['budget_flops']:.3e} FLOPs (C = 6 N D)",
        f"{p['law']} law: N_opt = {p['N_opt']:.4g} parameters, D_opt = {p['D_opt']:.4g} tokens "
        f"({p['D_opt'] / p['N_opt']:.1f} tokens per parameter)",
        f"nearest shape: n_layer={s['n_layer']}, n_embd={s['n_embd']}, n_head={s['n_head']} "
        f"({s['params']:,} parameters, {s['params_non_embedding']:,} non-embedding; "
        f"vocab {s['vocab_size']}, context {s['block_size']})",
        f"  at that size C buys D = {p['D_shape']:.4g} tokens ({p['tokens_per_param']:.1f} per parameter)",
    ]
    if "lr" in p:
        lines.append(f"predicted learning rate: {p['lr']:.3g} (the lr fit lr_opt = k N^-x at the shape's N)")
    if "loss" in p:
        lines.append(f"predicted loss: {p['loss']:.4f} ({p['loss_from']})")
    else:
        lines.append("predicted loss: not available (no chinchilla or frontier fit)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
def _plot_lr(fit: dict, out_dir: str) -> str:
    """lr_opt against N: each size's seed-averaged curve's optimum and the fitted power law."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in fit["per_size"] if "lr_opt" in p]
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for p in pts:
        ax.scatter(p["size"], p["lr_opt"], marker="x" if p["edge"] else "o", color="C1" if p["edge"] else "C0")
    xs = np.geomspace(min(p["size"] for p in pts), max(p["size"] for p in pts), 50)
    ax.plot(xs, [fits_lib.lr_at(fit, x) for x in xs], "k--",
            label=f"lr_opt = {fit['k']:.3g} N^-{fit['x']:.3f} [{fit['ci95']['x'][0]:.3f}, {fit['ci95']['x'][1]:.3f}]")
    ax.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="optimal learning rate",
           title="learning-rate fit (x: optimum at a grid edge, left out)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "lr_opt_vs_params.png")
    fig.savefig(path + ".tmp.png")
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    return "lr_opt_vs_params.png"


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def summarize(fits: dict) -> str:
    lines = [f"runs: {fits['n_finished']} finished of {fits['n_runs']}"]
    for name, why in fits["unfinished"].items():
        lines.append(f"  left out of the fits: {name} ({why})")

    def ci(f, k):
        lo, hi = f["ci95"].get(k, [None, None])
        return f"[{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else "[n/a]"

    def boot(f):
        used, n = f.get("n_boot_used"), f.get("n_boot")
        return "" if used is None or used == n else f" (95% intervals from {used} of {n} resamples; the rest could not determine the fit)"

    c = fits["chinchilla"]
    if "skipped" in c:
        lines.append(f"chinchilla: skipped: {c['skipped']}")
    else:
        lines.append("chinchilla: L = E + A/N^alpha + B/D^beta: " + ", ".join(
            f"{k} = {c[k]:.4g} {ci(c, k)}" for k in ("E", "A", "B", "alpha", "beta")) + boot(c))
        co = c.get("compute_optimal")
        if co:
            lines.append(f"  compute-optimal: N_opt ~ C^{co['a']:.3f}, D_opt ~ C^{co['b']:.3f}; "
                         + "; ".join(f"C={x['flops']:.0e}: N={x['N_opt']:.3g}, D={x['D_opt']:.3g} "
                                     f"({x['tokens_per_param']:.0f} tok/param)" for x in co["at"][:4]))
    p = fits["power_law_n"]
    if "skipped" in p:
        lines.append(f"power_law_n: skipped: {p['skipped']}")
    else:
        lines.append(f"power_law_n: {p['law']} on {p['N']}: alpha_N = {p['alpha']:.4g} "
                     f"{ci(p, 'alpha')}, N_c = {p['N_c']:.4g}, E = {p['E']:.4g}" + boot(p))
    f = fits["frontier"]
    if "skipped" in f:
        lines.append(f"frontier: skipped: {f['skipped']}")
    else:
        lines.append(f"frontier: {f['law']}: alpha_C = {f['alpha']:.4g} {ci(f, 'alpha')}, "
                     f"C_c = {f['C_c']:.4g}, E = {f['E']:.4g}" + boot(f))
    i = fits["isoflop"]
    if "a" in i:
        lines.append(f"isoflop: N_opt ~ C^{i['a']:.3f} {ci(i, 'a')}, D_opt ~ C^{i['b']:.3f} over "
                     f"{i['n_budgets']} budgets" + boot(i))
    else:
        lines.append(f"isoflop: skipped: {i.get('skipped')}")
    return "\n".join(lines)


def analyze(runs: list[dict], out_dir: str, source: dict, n_boot: int = 200, seed: int = 0,
            plots: bool = True, **fit_kw) -> dict:
    """Fit, write fits.json (with the convention of `fit_kw`'s params / flops / metric when not the
    default total / 6nd / loss) and draw the plots."""
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    fits = run_fits(runs, n_boot=n_boot, seed=seed,
                    progress=lambda it, desc: tqdm(it, desc=desc, leave=False, disable=None), **fit_kw)
    fits = {"source": source, "n_boot": n_boot, "seed": seed, **fits}
    _atomic_write(os.path.join(out_dir, "fits.json"), json.dumps(_jsonable(fits), indent=2) + "\n")
    if plots:
        from experiments import plots as plots_lib

        fits["plots"] = plots_lib.draw_all(runs, fits, out_dir)
        if "x" in (fits.get("lr") or {}):
            fits["plots"].append(_plot_lr(fits["lr"], out_dir))
    return fits


def _define_flags():
    from absl import flags

    flags.DEFINE_string("root", None, "Sweep root: one run workdir per subdirectory.")
    flags.DEFINE_string("csv", None, "A table with columns params, tokens, loss (flops optional).")
    flags.DEFINE_string("out", None, "Output directory for runs.csv, fits.json and the plots.")
    flags.DEFINE_string("fits", None, "Planner: a fits.json written by this tool.")
    flags.DEFINE_float("budget_flops", None, "Planner: the compute budget C in FLOPs (C = 6 N D).")
    flags.DEFINE_integer("n_boot", 200, "Bootstrap resamples per fit (95% intervals).")
    flags.DEFINE_integer("seed", 0, "Seed of the bootstrap.")
    flags.DEFINE_enum("power_law_tokens", "fixed", ["fixed", "all"],
                      "power_law_n over the token budget shared by most sizes (fixed) or all runs.")
    flags.DEFINE_boolean("power_law_e0", False, "power_law_n with E = 0 (Kaplan's L = (N_c/N)^alpha).")
    flags.DEFINE_boolean("frontier_e0", True, "frontier with E = 0 (Kaplan's L = (C_c/C)^alpha).")
    flags.DEFINE_float("frontier_skip", 0.1, "Fraction of each run's steps left out of the frontier.")
    flags.DEFINE_boolean("plots", True, "Draw the PNG plots.")
    flags.DEFINE_enum("params", "total", list(PARAMS), "N in the fits: all parameters (Hoffmann et al.) or the "
                      "non-embedding ones (Kaplan et al.).")
    flags.DEFINE_enum("flops", "6nd", list(FLOPS), "C in the IsoFLOP and frontier fits: 6 N D, or the FLOPs "
                      "with attention (flops_per_token x tokens).")
    flags.DEFINE_enum("metric", "loss", list(METRICS), "What the fits fit: val loss (nats/token) or bits per "
                      "byte (val_bpb; compares vocabularies).")


def main(argv):
    from absl import flags

    F = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit(f"error: unexpected arguments {' '.join(argv[1:])} (see --help)")
    try:
        if F.fits or F.budget_flops is not None:
            if not F.fits or F.budget_flops is None:
                raise AnalysisError("the planner needs both --fits=FILE and --budget_flops=C")
            if not F.budget_flops > 0:
                raise AnalysisError(f"--budget_flops must be > 0, got {F.budget_flops}")
            fits = _read_json(F.fits)
            if not isinstance(fits, dict) or "chinchilla" not in fits:
                raise AnalysisError(f"{F.fits}: not a fits.json written by experiments.analyze")
            try:
                print(format_plan(plan(fits, F.budget_flops)), flush=True)
            except (KeyError, TypeError) as e:
                raise AnalysisError(f"{F.fits}: malformed fit ({e!r})") from None
            return
        if bool(F.root) == bool(F.csv):
            raise AnalysisError("give one of --root=DIR or --csv=FILE (and --out=DIR), or the "
                                "planner's --fits=FILE --budget_flops=C")
        if not F.out:
            raise AnalysisError("--out=DIR is required")
        if F.n_boot < 0:
            raise AnalysisError(f"--n_boot must be >= 0, got {F.n_boot}")
        if F.root:
            runs = collect(F.root)
            columns, rows = table_rows(runs)
            os.makedirs(F.out, exist_ok=True)
            write_csv(os.path.join(F.out, "runs.csv"), columns, rows)
            source = {"root": os.path.abspath(F.root)}
        else:
            runs = read_csv(F.csv)
            source = {"csv": os.path.abspath(F.csv)}
        fits = analyze(runs, F.out, source, n_boot=F.n_boot, seed=F.seed, plots=F.plots,
                       power_law_tokens=F.power_law_tokens, power_law_e0=F.power_law_e0,
                       frontier_e0=F.frontier_e0, frontier_skip=F.frontier_skip, params=F.params,
                       flops=F.flops, metric=F.metric)
    except AnalysisError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except OSError as e:  # e.g. --out is a file, or not writable
        print(f"error: {e.filename or F.out}: {e.strerror}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    print(summarize(fits), flush=True)
    written = (["runs.csv"] if F.root else []) + ["fits.json"] + fits.get("plots", [])
    print(f"wrote {', '.join(os.path.join(F.out, w) for w in written)}", flush=True)


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main)
