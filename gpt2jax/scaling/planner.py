"""The budget planner: for a compute budget C, the allocation a fitted law gives (N_opt, D_opt), the
GPT-2 style shape nearest N_opt, and what the fits predict for it (loss, learning rate).
"""

from __future__ import annotations

import math

from gpt2jax.errors import AnalysisError
from gpt2jax.scaling import fits as fits_lib


def nearest_shape(n_target: float, basis: dict | None = None, head_dim: int = 64,
                  aspect: tuple[float, float] = (32.0, 128.0), params: str = "total") -> dict:
    """The GPT-2 style shape (n_embd a multiple of head_dim, n_head = n_embd / head_dim) whose
    parameter count (gpt2jax.model.num_params; all parameters, or with params='non_embedding' the
    non-embedding ones) is nearest n_target; among shapes within 10% of it, the one with
    n_embd / n_layer nearest 64 (GPT-2 124M's) inside `aspect`."""
    non_emb = params == "non_embedding"
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
            if count(n_layer, widths[mid], non_emb) < n_target:
                lo = mid + 1
            else:
                hi = mid
        for j in {max(lo - 1, 0), lo}:
            w = widths[j]
            cands.append((abs(math.log(max(count(n_layer, w, non_emb), 1) / n_target)), n_layer, w))
    close = [c for c in cands if c[0] <= math.log(1.1) and aspect[0] <= c[2] / c[1] <= aspect[1]]
    if close:
        _, n_layer, w = min(close, key=lambda c: (abs(math.log(c[2] / c[1] / 64.0)), c[0]))
    else:
        _, n_layer, w = min(cands)
    return {"n_layer": n_layer, "n_embd": w, "n_head": w // head_dim,
            "params": count(n_layer, w), "params_non_embedding": count(n_layer, w, True),
            "vocab_size": cfg.model.vocab_size, "block_size": cfg.model.block_size}


def fit_params(fits: dict) -> str:
    """The N the chinchilla fit was made with: 'total' or 'non_embedding' (fits.json's convention; 'total'
    for 'per_law', Hoffmann et al.'s count, and for a fits.json written before it was recorded)."""
    v = (fits.get("convention") or {}).get("params")
    return "non_embedding" if v == "non_embedding" else "total"


# What the planner reads of each fit, once the fit's first key is there (a skipped fit has none of them).
FIT_KEYS = {"chinchilla": ("alpha", "beta", "E", "A", "B"), "isoflop": ("a", "log_k"), "lr": ("x", "log_k"),
            "frontier": ("alpha", "E", "log_C_c")}


def check_fits(fits: dict, where: str) -> None:
    """AnalysisError naming the first field of a fits.json the planner cannot use (missing, or not a number)."""
    if not isinstance(fits, dict):
        raise AnalysisError(f"{where}: not a fits.json written by gpt2jax-analyze (not a JSON object)")
    for name, keys in FIT_KEYS.items():
        f = fits.get(name)
        if f is None:
            continue
        if not isinstance(f, dict):
            raise AnalysisError(f"{where}: {name} should be an object (a fit), got {type(f).__name__}")
        if keys[0] not in f:
            continue
        for k in keys:
            v = f.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                got = "missing" if k not in f else f"{v!r}"
                raise AnalysisError(f"{where}: {name}.{k} should be a finite number, got {got}")
    if "alpha" in (fits.get("chinchilla") or {}):
        co = fits["chinchilla"].get("compute_optimal")
        if not isinstance(co, dict) or not all(isinstance(co.get(k), (int, float)) for k in ("a", "b", "G")):
            raise AnalysisError(f"{where}: chinchilla.compute_optimal should hold numbers a, b and G")


def plan(fits: dict, c: float) -> dict:
    """The allocation the fitted law gives for C FLOPs (C = 6 N D), the nearest config shape, and
    its predicted loss and learning rate. N is counted as the fits counted it (fits.json's
    convention.params): the shape is matched, and the laws evaluated, at its non-embedding
    parameters when the fits were made on those."""
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
    count = fit_params(fits)
    shape = nearest_shape(out["N_opt"], fits.get("count_basis"), params=count)
    n_shape = shape["params_non_embedding" if count == "non_embedding" else "params"]
    d_shape = c / (6.0 * n_shape)
    out.update(params=count, N_shape=n_shape, shape=shape, D_shape=d_shape, tokens_per_param=d_shape / n_shape)
    lr_fit = fits.get("lr") or {}
    if "x" in lr_fit:
        out["lr"] = fits_lib.lr_at(lr_fit, n_shape)
    if "alpha" in chin:
        out["loss"] = float(fits_lib.chinchilla_predict(chin, n_shape, d_shape))
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
    if p.get("params") == "non_embedding":
        lines.append("  (N counted as the fits were: non-embedding parameters)")
    if "lr" in p:
        lines.append(f"predicted learning rate: {p['lr']:.3g} (the lr fit lr_opt = k N^-x at the shape's "
                     f"N = {p.get('N_shape', s['params']):,})")
    if "loss" in p:
        lines.append(f"predicted loss: {p['loss']:.4f} ({p['loss_from']})")
    else:
        lines.append("predicted loss: not available (no chinchilla or frontier fit)")
    return "\n".join(lines)
