"""PNG plots of a sweep and its fits (matplotlib, Agg backend): loss against parameters, loss against
compute with every run's curve and the frontier, IsoFLOP profiles, residuals."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from gpt2jax.scaling import fits as fits_lib

MAX_GROUPS = 8


def save_png(fig, path: str) -> str:
    """Write a figure as PNG atomically (temp name, then rename) and close it."""
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _save(fig, out_dir: str, name: str) -> str:
    save_png(fig, os.path.join(out_dir, name))
    return name


def _ci_text(fit: dict, key: str, fmt: str = ".3f") -> str:
    lo, hi = (fit.get("ci95") or {}).get(key, [None, None])
    v = format(fit[key], fmt)
    return f"{v} [{lo:{fmt}}, {hi:{fmt}}]" if lo is not None and hi is not None else v


def _token_groups(done):
    tok = np.array([r["tokens"] for r in done])
    keys = fits_lib.group_keys(tok)
    groups = []
    for k in sorted(set(keys)):
        sel = np.flatnonzero(keys == k)
        groups.append((float(np.median(tok[sel])), sel))
    return groups


def _unit(runs, fits=None) -> str:
    """The loss's unit: bits per byte for the bpb metric; nats per byte when every run read bytes (the byte
    tokenizer), else nats per token."""
    if ((fits or {}).get("convention") or {}).get("metric") == "bpb":
        return "bits/byte"
    names = {r.get("tokenizer") for r in runs}
    return "nats/byte" if names == {"bytes"} else "nats/token"


def _fmt_e(x: float) -> str:
    m, e = f"{x:.2e}".split("e")
    return f"{m}e{int(e)}"


def _loss_vs_params(done, fits, out_dir):
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), layout="constrained")
    groups = _token_groups(done)
    many = len(groups) > MAX_GROUPS
    cmap = plt.get_cmap("viridis")
    tok = np.array([r["tokens"] for r in done])
    norm = matplotlib.colors.LogNorm(vmin=tok.min(), vmax=max(tok.max(), tok.min() * 1.01))

    def color_of(t):
        return cmap(norm(t)) if len(groups) > 1 else "C0"

    pl = fits.get("power_law_n") or {}
    ne_col = "params_non_embedding" if all(r.get("params_non_embedding") for r in done) else "params"
    used = set(pl.get("runs") or [])
    for ax, col, title in ((axes[0], ne_col, "Kaplan form: L(N) at a fixed token budget"),
                           (axes[1], "params", "Chinchilla form: L(N, D)")):
        x = np.array([r[col] for r in done])
        y = np.array([r["loss"] for r in done])
        colors = [color_of(t) for t in tok]
        inside = np.array([col == "params" or not used or r["name"] in used for r in done])
        ax.scatter(x[inside], y[inside], c=[colors[i] for i in np.flatnonzero(inside)], s=30, zorder=3,
                   label="runs" if len(groups) > 1 else f"runs (D = {_fmt_e(groups[0][0])} tokens)")
        if (~inside).any():
            ax.scatter(x[~inside], y[~inside], c=[colors[i] for i in np.flatnonzero(~inside)], s=30,
                       alpha=0.3, zorder=3, label="faded: other token budgets, not in the fit")
        if len(groups) > 1:
            fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="tokens D")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("non-embedding parameters N" if col == "params_non_embedding" else "parameters N (all)")
        ax.set_ylabel(f"final validation loss ({_unit(done, fits)})")
        ax.set_title(title, fontsize=11)
        ax.grid(True, which="both", alpha=0.25)
    # Kaplan panel: the power law
    ax = axes[0]
    x = np.array([r[ne_col] for r in done])
    xs = np.geomspace(x.min() / 1.5, x.max() * 1.5, 200)
    if "alpha" in pl:
        ax.plot(xs, fits_lib.power_law_predict({"E": pl["E"], "alpha": pl["alpha"],
                                                "log_x_c": pl["log_N_c"]}, xs),
                "k--", lw=1.5, label=f"{pl['law']}: alpha_N = {_ci_text(pl, 'alpha')}"
                + ("" if pl.get("E_fixed_zero") else f", E = {pl['E']:.3g}"))
    else:
        ax.text(0.02, 0.98, "power_law_n skipped:\n" + _wrap(pl.get("skipped", "")), transform=ax.transAxes,
                fontsize=8, va="top", ha="left", bbox=dict(facecolor="white", alpha=0.85, edgecolor="0.8"))
    # Chinchilla panel: L(N, D) along each token budget (or along D = k N for a ladder)
    ax = axes[1]
    ch = fits.get("chinchilla") or {}
    n = np.array([r["params"] for r in done])
    ns = np.geomspace(n.min() / 1.5, n.max() * 1.5, 200)
    if "alpha" in ch:
        label = f"fit: alpha = {_ci_text(ch, 'alpha')}, beta = {_ci_text(ch, 'beta')}"
        budgets = sorted({r["budget_flops"] for r in done if r.get("budget_flops")})
        if budgets and len(budgets) <= MAX_GROUPS:  # an IsoFLOP sweep: L along D = C / (6N)
            bcmap = plt.get_cmap("plasma")
            for bi, c in enumerate(budgets):
                nb = np.array([r["params"] for r in done if r.get("budget_flops") == c])
                nsb = np.geomspace(nb.min() / 1.5, nb.max() * 1.5, 100)
                ax.plot(nsb, fits_lib.chinchilla_predict(ch, nsb, c / (6 * nsb)), "--",
                        color=bcmap(0.85 * bi / max(len(budgets) - 1, 1)), lw=1.2,
                        label=f"fit at C = {_fmt_e(c)} FLOPs (D = C / 6N)")
            ax.plot([], [], " ", label=label)
        elif not many:
            for gi, (t, _) in enumerate(groups):
                ax.plot(ns, fits_lib.chinchilla_predict(ch, ns, t), "--", color=color_of(t), lw=1.2,
                        label=(label + "\n(one line per token budget)") if gi == 0 else None)
        else:
            k = float(np.median(tok / n))
            ax.plot(ns, fits_lib.chinchilla_predict(ch, ns, k * ns), "k--", lw=1.5,
                    label=label + f"\nalong D = {k:.3g} N")
    else:
        ax.text(0.02, 0.98, "chinchilla skipped:\n" + _wrap(ch.get("skipped", "")), transform=ax.transAxes,
                fontsize=8, va="top", ha="left", bbox=dict(facecolor="white", alpha=0.85, edgecolor="0.8"))
    for ax in axes:
        lo, hi = ax.get_ylim()  # head room above the data for the legend
        ax.set_ylim(lo, hi * (hi / lo) ** 0.4)
        _loss_ticks(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7.5, loc="upper right", framealpha=0.85)
    return _save(fig, out_dir, "loss_vs_params.png")


def _loss_ticks(ax):
    """Plain-number ticks on a log loss axis (its range is usually well under a decade)."""
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _wrap(text: str, width: int = 60) -> str:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return "\n".join(lines + [cur])


def _loss_vs_compute(runs, done, fits, out_dir):
    fig, ax = plt.subplots(figsize=(8.5, 5.5), layout="constrained")
    n = np.array([r["params"] for r in done])
    cmap = plt.get_cmap("viridis")
    norm = matplotlib.colors.LogNorm(vmin=n.min(), vmax=max(n.max(), n.min() * 1.01))
    any_curve = False
    for r in done:
        color = cmap(norm(r["params"]))
        if r.get("curve") is not None:
            c, l, _ = r["curve"]
            ok = (c > 0) & np.isfinite(l)
            ax.plot(c[ok], l[ok], color=color, lw=1.0, alpha=0.8)
            any_curve = True
        fc = r.get("flops") or r.get("flops_6nd")
        ax.scatter([fc], [r["loss"]], color=color, edgecolors="k", linewidths=0.5, s=30, zorder=3)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="parameters N (all)")
    ax.scatter([], [], color="gray", edgecolors="k", s=30, label="final validation loss")
    if any_curve:
        ax.plot([], [], color="gray", lw=1.0, label="training loss curve of each run")
    fr = fits.get("frontier") or {}
    if "alpha" in fr:
        env = fr["envelope"]
        ax.scatter(env["flops"], env["loss"], color="k", marker="x", s=14, linewidths=0.8, zorder=4,
                   label="lower envelope")
        cs = np.geomspace(min(env["flops"]) / 1.5, max(env["flops"]) * 1.5, 200)
        pred = fr["E"] + np.exp(fr["alpha"] * (fr["log_C_c"] - np.log(cs)))
        ax.plot(cs, pred, "r--", lw=1.5, zorder=5,
                label=f"frontier {fr['law']}: alpha_C = {_ci_text(fr, 'alpha', '.4f')}")
    else:
        ax.text(0.02, 0.02, "frontier skipped: " + _wrap(fr.get("skipped", "")), transform=ax.transAxes,
                fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    basis = "tokens x FLOPs per token" if all(r.get("flops") for r in done) else "6 N D"
    ax.set_xlabel(f"training compute C (FLOPs, {basis})")
    ax.set_ylabel(f"loss ({_unit(done, fits)})")
    ax.set_title("Loss against compute", fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    _loss_ticks(ax)
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, out_dir, "loss_vs_compute.png")


def _isoflop(fits, out_dir, done=()):
    iso = fits.get("isoflop") or {}
    per = [p for p in iso.get("per_budget", [])]
    if not per:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), layout="constrained")
    ax = axes[0]
    cmap = plt.get_cmap("plasma")
    for i, p in enumerate(per):
        color = cmap(0.85 * i / max(len(per) - 1, 1))
        x, y = np.array(p["params"]), np.array(p["loss"])
        ax.scatter(x, y, color=color, s=25, zorder=3, label=f"C = {_fmt_e(p['budget_flops'])} FLOPs")
        xs = np.geomspace(x.min() / 1.2, x.max() * 1.2, 100)
        ax.plot(xs, np.polyval(p["parabola_log_n"], np.log(xs)), color=color, lw=1)
        if "N_opt" in p and p.get("inside_range", True):
            ax.scatter([p["N_opt"]], [p["loss_opt"]], marker="*", s=160, color=color, edgecolors="k",
                       zorder=4)
        elif "N_opt" in p:  # not bracketed: the best size tried, ringed; the extrapolated vertex is not drawn
            best = int(np.argmin(y))
            ax.scatter([x[best]], [y[best]], marker="o", s=140, facecolors="none", edgecolors=color, zorder=4)
    ax.scatter([], [], marker="*", s=120, color="gray", edgecolors="k", label="parabola minimum")
    if any("left_out" in p for p in per):
        ax.scatter([], [], marker="o", s=100, facecolors="none", edgecolors="gray",
                   label="minimum not bracketed (best size ringed)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N (all)")
    ax.set_ylabel(f"final validation loss ({_unit(done, fits)})")
    ax.set_title("IsoFLOP profiles (parabola in log N)", fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    ax = axes[1]
    mins = [p for p in per if "N_opt" in p and p.get("inside_range", True)]
    if mins:
        c = np.array([p["budget_flops"] for p in mins])
        ax.scatter(c, [p["N_opt"] for p in mins], color="C0", s=40, zorder=3, label="N_opt (parameters)")
        ax.scatter(c, [p["D_opt"] for p in mins], color="C1", marker="s", s=40, zorder=3,
                   label="D_opt = C / (6 N_opt) (tokens)")
        if "a" in iso:
            cs = np.geomspace(c.min() / 2, c.max() * 2, 100)
            nopt = fits_lib.isoflop_n_opt(iso, cs)
            ax.plot(cs, nopt, "C0--", label=f"N_opt ~ C^a, a = {_ci_text(iso, 'a')}")
            ax.plot(cs, cs / (6 * nopt), "C1--", label=f"D_opt ~ C^b, b = {_ci_text(iso, 'b')}")
    if "a" not in iso:
        ax.text(0.02, 0.02, _wrap("power law skipped: " + iso.get("skipped", "")), transform=ax.transAxes,
                fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute budget C (FLOPs)")
    ax.set_ylabel("compute-optimal N or D")
    ax.set_title("Compute-optimal allocation from the IsoFLOP minima", fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, out_dir, "isoflop.png")


def _residuals(done, fits, out_dir):
    panels = []
    ch = fits.get("chinchilla") or {}
    if "alpha" in ch:
        n = np.array([r["params"] for r in done])
        d = np.array([r["tokens"] for r in done])
        y = np.array([r["loss"] for r in done])
        panels.append(("chinchilla L(N, D)", n, np.log(y) - np.log(fits_lib.chinchilla_predict(ch, n, d)),
                       d, "parameters N (all)"))
    pl = fits.get("power_law_n") or {}
    if "alpha" in pl:
        used = set(pl.get("runs") or [])
        sub = [r for r in done if r["name"] in used]
        col = "params_non_embedding" if pl["N"].startswith("params_non_embedding") else "params"
        x = np.array([r[col] for r in sub])
        y = np.array([r["loss"] for r in sub])
        pred = fits_lib.power_law_predict({"E": pl["E"], "alpha": pl["alpha"], "log_x_c": pl["log_N_c"]}, x)
        panels.append(("power_law_n L(N)", x, np.log(y) - np.log(pred), np.array([r["tokens"] for r in sub]),
                       "non-embedding parameters N" if col == "params_non_embedding" else "parameters N"))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False,
                             layout="constrained")
    for ax, (title, x, res, tok, xlabel) in zip(axes[0], panels):
        if tok.max() / tok.min() > 1.02:
            sc = ax.scatter(x, res, c=tok, cmap="viridis", norm=matplotlib.colors.LogNorm(
                vmin=tok.min(), vmax=tok.max()), s=25, zorder=3, label="runs")
            fig.colorbar(sc, ax=ax, label="tokens D")
        else:
            ax.scatter(x, res, color="C0", s=25, zorder=3, label=f"runs (D = {_fmt_e(float(tok[0]))} tokens)")
        ax.axhline(0.0, color="k", lw=1, label="perfect fit")
        rmse = float(np.sqrt(np.mean(res ** 2)))
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("log L - log L_fit")
        ax.set_title(f"Residuals of {title} (rms {rmse:.4f})", fontsize=11)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8)
    return _save(fig, out_dir, "residuals.png")


def draw_all(runs, fits, out_dir) -> list[str]:
    """Every plot the data supports; returns the file names written in out_dir."""
    done = [r for r in runs if r["status"] == "finished"]
    if not done:
        return []
    out = [_loss_vs_params(done, fits, out_dir), _loss_vs_compute(runs, done, fits, out_dir)]
    for f in (_isoflop(fits, out_dir, done), _residuals(done, fits, out_dir)):
        if f:
            out.append(f)
    return out


def plot_lr(fit: dict, out_dir: str) -> str:
    """lr_opt against N: each size's seed-averaged curve's optimum and the fitted power law."""
    pts = [p for p in fit["per_size"] if "lr_opt" in p]
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for p in pts:
        ax.scatter(p["size"], p["lr_opt"], marker="x" if p["edge"] else "o", color="C1" if p["edge"] else "C0")
    xs = np.geomspace(min(p["size"] for p in pts), max(p["size"] for p in pts), 50)
    ax.plot(xs, [fits_lib.lr_at(fit, x) for x in xs], "k--",
            label=f"lr_opt = {fit['k']:.3g} N^-{fit['x']:.3f} [{fit['ci95']['x'][0]:.3f}, {fit['ci95']['x'][1]:.3f}]")
    ax.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="optimal learning rate",
           title="learning-rate fit\n(x: optimum at a grid edge, left out of the fit)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out_dir, "lr_opt_vs_params.png")
    fig.savefig(path + ".tmp.png")
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    return "lr_opt_vs_params.png"
