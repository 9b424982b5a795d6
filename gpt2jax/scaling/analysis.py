"""From run records to fits.json: the finished runs under a counting convention, every scaling-law fit
(gpt2jax/scaling/fits.py) with its inputs, a one-screen summary, and the plots.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from gpt2jax.errors import AnalysisError
from gpt2jax.fileio import write_text_atomic
from gpt2jax.scaling import fits as fits_lib
from gpt2jax.scaling.table import FLOPS, METRICS, PARAMS


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
             progress=None, params: str | None = None, flops: str | None = None, metric: str = "loss") -> dict:
    """The fits. `params` / `flops` None (recorded as 'per_law'): each law counted as its paper did --
    chinchilla and isoflop on all parameters with C = 6 N D (Hoffmann et al.), power_law_n on the
    non-embedding parameters and the frontier on the FLOPs with attention (Kaplan et al.). A value
    ('total' | 'non_embedding', '6nd' | 'attention') counts every fit that way."""
    from threadpoolctl import threadpool_limits

    convention = {"params": params or "per_law", "flops": flops or "per_law", "metric": metric}
    if (params, flops) != (None, None) and (params not in (None, *PARAMS) or flops not in (None, *FLOPS)):
        raise AnalysisError(f"unknown convention params={params!r} flops={flops!r} "
                            f"(params: {PARAMS}, flops: {FLOPS}, or None: each law's own)")
    if (params or "total", flops or "6nd", metric) != ("total", "6nd", "loss"):
        kept = {id(r) for r in runs if r["status"] != "finished"}
        view = convention_view(runs, params or "total", flops or "6nd", metric)
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
    out["convention"] = convention  # always: a fits.json says what N, C and the metric were
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
                                              prog("bootstrap power_law_n"), all_params=(params == "total"))
        out["frontier"] = _fit_frontier(done, frontier_e0, frontier_skip, n_boot, seed,
                                        prog("bootstrap frontier"), six_nd=(flops == "6nd"))
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


def _fit_power_law_n(done, tokens_mode, e0, n_boot, seed, progress, all_params: bool = False):
    """Kaplan's L(N) at one token budget, on the non-embedding parameters (Kaplan et al.'s N), or on all
    of them with `all_params` (--params=total)."""
    have_ne = all_params or all(r.get("params_non_embedding") for r in done)
    col = "params" if all_params else "params_non_embedding" if have_ne else "params"
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


def run_curves(done, skip: float = 0.1, six_nd: bool = False):
    """Per run (compute, loss): the training-loss curve past the first `skip` of its steps, or the
    final (flops, loss) point where no curve was logged (a --csv table). Compute is the FLOPs with
    attention where run.json has them, or with `six_nd` 6 N D (N: the run's `params`)."""
    curves = []
    for r in done:
        if six_nd:
            c6 = 6.0 * r["params"] * r["tokens"]
            scale = c6 / r["flops"] if r.get("flops") else 1.0
            if r.get("curve") is not None:
                c, l, frac = r["curve"]
                keep = (frac >= skip) & np.isfinite(l) & (c > 0)
                if keep.sum() >= 2 and r.get("flops"):
                    curves.append((c[keep] * scale, l[keep]))
                    continue
            curves.append((np.array([c6]), np.array([r["loss"]])))
            continue
        if r.get("curve") is not None:
            c, l, frac = r["curve"]
            keep = (frac >= skip) & np.isfinite(l) & (c > 0)
            if keep.sum() >= 2:
                curves.append((c[keep], l[keep]))
                continue
        c = r.get("flops") or r.get("flops_6nd")
        curves.append((np.array([c]), np.array([r["loss"]])))
    return curves


def _fit_frontier(done, e0, skip, n_boot, seed, progress, six_nd: bool = False):
    curves = run_curves(done, skip, six_nd)
    res = fits_lib.fit_frontier(curves, fixed_e0=e0, n_boot=n_boot, seed=seed, progress=progress)
    if "skipped" not in res:
        kinds = {len(c[0]) > 1 for c in curves}
        res["C"] = ("6 x params x tokens" if six_nd or not all(r.get("flops") for r in done)
                    else "tokens x flops_per_token (run.json)")
        res["curves"] = ("training loss (metrics.jsonl), first "
                         f"{skip:.0%} of each run's steps left out" if kinds == {True}
                         else "final loss of each run" if kinds == {False}
                         else "training loss where logged, else the final loss")
    return res


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
        lines.append(f"frontier: {f['law']} on C = {f['C']}: alpha_C = {f['alpha']:.4g} {ci(f, 'alpha')}, "
                     f"C_c = {f['C_c']:.4g}, E = {f['E']:.4g}" + boot(f))
    i = fits["isoflop"]
    if "a" in i:
        lines.append(f"isoflop: N_opt ~ C^{i['a']:.3f} {ci(i, 'a')}, D_opt ~ C^{i['b']:.3f} over "
                     f"{i['n_budgets']} budgets" + boot(i))
    else:
        lines.append(f"isoflop: skipped: {i.get('skipped')}")
    for e in i.get("per_budget", []):
        if "N_opt" not in e:
            lines.append(f"  C={e['budget_flops']:.3g}: {e.get('skipped', 'no minimum')}")
            continue
        best = min(range(len(e["loss"])), key=e["loss"].__getitem__)
        where = ("bracketed" if e.get("inside_range", True) else "NOT bracketed: " + e["left_out"].split(" (")[0])
        lines.append(f"  C={e['budget_flops']:.3g}: best size tried N={e['params'][best]:.4g} (loss {e['loss'][best]:.4f}); "
                     f"parabola vertex N={e['N_opt']:.4g}, {e['D_opt'] / e['N_opt']:.3g} tokens/param, {where}")
    return "\n".join(lines)


def analyze(runs: list[dict], out_dir: str, source: dict, n_boot: int = 200, seed: int = 0,
            plots: bool = True, **fit_kw) -> dict:
    """Fit, write fits.json (with the convention of `fit_kw`'s params / flops / metric under "convention",
    'per_law' where params / flops are unset) and draw the plots."""
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    fits = run_fits(runs, n_boot=n_boot, seed=seed,
                    progress=lambda it, desc: tqdm(it, desc=desc, leave=False, disable=None), **fit_kw)
    fits = {"source": source, "n_boot": n_boot, "seed": seed, **fits}
    write_text_atomic(os.path.join(out_dir, "fits.json"), json.dumps(_jsonable(fits), indent=2) + "\n")
    if plots:
        from gpt2jax.scaling import plots as plots_lib

        fits["plots"] = plots_lib.draw_all(runs, fits, out_dir)
        if "x" in (fits.get("lr") or {}):
            fits["plots"].append(plots_lib.plot_lr(fits["lr"], out_dir))
    return fits
