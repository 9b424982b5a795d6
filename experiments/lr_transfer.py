"""Learning-rate transfer: the final val loss against the learning rate, per width and parametrization, from
the runs of a sweep such as experiments/specs/mup_transfer.py.

    python -m experiments.lr_transfer --root=runs/mup_transfer --out=experiments/results/mup

Reads each run's sweep_run.json (tags `width`, `parametrization`; override `optim.lr`) and metrics.jsonl (last
val_loss), from one or more roots (`--root` repeated) and committed lr_transfer.csv files (`--csv`), keeping the runs whose name matches `--match` (a regular
expression). Runs at muP's base width belong to both parametrizations (there muP is SP), unless
`--nobase_is_sp` (a muP base model with tuned multipliers is not SP); runs that differ only in `train.seed` are
averaged. Writes lr_transfer.csv and lr_transfer.png and prints, per curve, the grid's best
learning rate and the optimum of a parabola (in log2 lr) through that point and its two neighbours, and how
far (in grid steps, factors of 2) the wide model's optimum moved from the narrow one's by each measure.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re


def collect(root: str, match: str = "") -> list[dict]:
    rows = []
    for name in sorted(os.listdir(root)):
        if match and not re.search(match, name):
            continue
        rec, met = os.path.join(root, name, "sweep_run.json"), os.path.join(root, name, "metrics.jsonl")
        if not (os.path.exists(rec) and os.path.exists(met)):
            continue
        with open(rec) as f:
            r = json.load(f)
        with open(met) as f:
            vals = [json.loads(x) for x in f if x.strip()]
        losses = [v["val_loss"] for v in vals if "val_loss" in v]
        if not losses:
            continue
        tags = r.get("tags", {})
        rows.append({"name": name, "width": int(tags["width"]), "parametrization": tags["parametrization"],
                     "lr": float(r["overrides"]["optim.lr"]), "seed": int(r["overrides"].get("train.seed", 0)),
                     "loss": float(losses[-1])})
    return rows


def read_csv(path: str, match: str = "") -> list[dict]:
    """The rows of an lr_transfer.csv this tool wrote (a committed study whose run directories are gone)."""
    need = {"name", "parametrization", "width", "lr", "seed", "loss"}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: needs the columns {sorted(need)}, has {reader.fieldnames}")
        rows = []
        for r in reader:
            if match and not re.search(match, r["name"]):
                continue
            rows.append({"name": r["name"], "width": int(r["width"]), "parametrization": r["parametrization"],
                         "lr": float(r["lr"]), "seed": int(r["seed"]), "loss": float(r["loss"])})
    return rows


def curves(rows: list[dict], base_is_sp: bool = True) -> dict:
    """(parametrization, width) -> sorted [(lr, loss)]; base-width runs appear under every parametrization
    (only under their own with base_is_sp=False)."""
    widths = sorted({r["width"] for r in rows})
    params = sorted({r["parametrization"] for r in rows} | {"sp", "mup"})
    out = {}
    for p in params:
        for w in widths:
            by_lr: dict[float, list[float]] = {}
            for r in rows:
                if r["width"] == w and (r["parametrization"] == p or (base_is_sp and w == widths[0])):
                    by_lr.setdefault(r["lr"], []).append(r["loss"])
            if by_lr:  # seeds averaged
                out[(p, w)] = sorted((lr, sum(v) / len(v)) for lr, v in by_lr.items())
    return out


def best(pts) -> tuple[float, float]:
    finite = [(lr, v) for lr, v in pts if math.isfinite(v)]
    return min(finite, key=lambda t: t[1])


def fitted_best(pts) -> tuple[float, bool]:
    """The vertex of the parabola in log2(lr) through the grid's best point and its two neighbours, and
    whether it is interior (False: the best point is at the grid's edge, and it is returned as is)."""
    finite = [(lr, v) for lr, v in pts if math.isfinite(v)]
    i = min(range(len(finite)), key=lambda k: finite[k][1])
    if i == 0 or i == len(finite) - 1:
        return finite[i][0], False
    (l0, y0), (l1, y1), (l2, y2) = finite[i - 1 : i + 2]
    x0, x1, x2 = math.log2(l0), math.log2(l1), math.log2(l2)
    # vertex of the interpolating parabola (Lagrange form), exact for unequal spacing too
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    if den == 0:
        return l1, True
    return 2.0 ** (x1 - 0.5 * num / den), True


def plot(cs: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpt2jax.scaling.plots import save_png

    params = [p for p in ("sp", "mup") if any(k[0] == p for k in cs)]
    fig, axes = plt.subplots(1, len(params), figsize=(5.6 * len(params), 4.2), sharey=True, squeeze=False)
    for ax, p in zip(axes[0], params):
        for (pp, w), pts in sorted(cs.items()):
            if pp != p:
                continue
            lr, loss = zip(*pts)
            line, = ax.plot(lr, loss, marker="o", label=f"width {w}")
            b = best(pts)
            ax.plot([b[0]], [b[1]], marker="*", markersize=14, color=line.get_color())
            ax.axvline(fitted_best(pts)[0], color=line.get_color(), linestyle=":", alpha=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("learning rate (Adam; muP: the base width's)")
        ax.set_title(p.upper() + (" (base width = narrowest)" if p == "mup" else "")
                     + "\n* grid optimum, dotted: parabola optimum", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0][0].set_ylabel("final val loss (nats per token; per byte on bytes)")
    lo = min(v for pts in cs.values() for _, v in pts if math.isfinite(v))
    axes[0][0].set_ylim(lo - 0.1, lo + 1.5)
    fig.tight_layout()
    save_png(fig, path)


def main(argv, F):
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    roots, csvs = F.root or [], F.csv or []
    if not roots and not csvs:
        raise app.UsageError("give --root (a sweep root) or --csv (an lr_transfer.csv), or both")
    for root in roots:
        if not os.path.isdir(root):
            raise app.UsageError(f"--root={root} is not a directory")
    try:
        re.compile(F.match)
    except re.error as e:
        raise app.UsageError(f"--match={F.match!r} is not a regular expression: {e}") from None
    rows = [r for root in roots for r in collect(root, F.match)]
    for path in csvs:
        try:
            rows += read_csv(path, F.match)
        except (OSError, ValueError, KeyError) as e:
            raise app.UsageError(f"--csv={path}: {e}") from None
    names = [r["name"] for r in rows]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise app.UsageError(f"runs named twice across the sources: {', '.join(dup[:5])}")
    if not rows:
        raise app.UsageError(f"no finished runs (sweep_run.json + a val_loss) matching {F.match!r} under "
                             f"{', '.join(roots + csvs)}")
    os.makedirs(F.out, exist_ok=True)
    with open(os.path.join(F.out, "lr_transfer.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "parametrization", "width", "lr", "seed", "loss"])
        w.writeheader()
        w.writerows(rows)
    cs = curves(rows, F.base_is_sp)
    plot(cs, os.path.join(F.out, "lr_transfer.png"))
    widths = sorted({w for _, w in cs})
    for p in ("sp", "mup"):
        if (p, widths[0]) not in cs or (p, widths[-1]) not in cs:
            continue
        b0, b1 = best(cs[(p, widths[0])]), best(cs[(p, widths[-1])])
        shift = round(math.log2(b1[0] / b0[0]))
        (f0, in0), (f1, in1) = fitted_best(cs[(p, widths[0])]), fitted_best(cs[(p, widths[-1])])
        edge = "" if in0 and in1 else " (a best point at the grid's edge: the true optimum may lie beyond)"
        print(f"{p}: best lr at width {widths[0]} = {b0[0]:g} (loss {b0[1]:.4f}); at width {widths[-1]} = "
              f"{b1[0]:g} (loss {b1[1]:.4f}): {shift:+d} grid step(s); parabola optima {f0:.3g} and "
              f"{f1:.3g}: {math.log2(f1 / f0):+.2f} grid steps{edge}")
    for (p, w), pts in sorted(cs.items()):  # every width against the base width's parabola optimum
        b, (f, inside) = best(pts), fitted_best(pts)
        rel = ""
        if (p, widths[0]) in cs:
            rel = f"; {math.log2(f / fitted_best(cs[(p, widths[0])])[0]):+.2f} grid steps from width {widths[0]}'s"
        print(f"  {p} width {w}: grid best lr {b[0]:g} (loss {b[1]:.4f}), parabola optimum 2^{math.log2(f):.2f}"
              f"{'' if inside else ' (grid edge)'}{rel}")
    print(f"wrote {F.out}/lr_transfer.csv and lr_transfer.png")


def define_flags(fv):
    from absl import flags

    flags.DEFINE_multi_string("root", None, "Sweep root (gpt2jax-sweep ... --root); repeat for several.",
                              flag_values=fv)
    flags.DEFINE_multi_string("csv", None, "An lr_transfer.csv this tool wrote (a committed study whose runs "
                              "are gone); repeat for several; combined with --root.", flag_values=fv)
    flags.DEFINE_string("match", "", "Keep only the runs whose name matches this regular expression.",
                        flag_values=fv)
    flags.DEFINE_boolean("base_is_sp", True, "The base width's runs belong to both parametrizations (muP is SP "
                         "there); --nobase_is_sp where muP's base model has multipliers of its own.", flag_values=fv)
    flags.DEFINE_string("out", "experiments/results/mup", "Output directory.", flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
