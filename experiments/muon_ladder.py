"""Muon against AdamW on the byte ladder (experiments/specs/muon_bytes.py): per width, AdamW's val loss, Muon's at
each of its learning rates, and the ratio of Muon's best to AdamW's at equal tokens; a csv, a markdown table and
a plot (val loss against width, one line for AdamW and one per Muon rate).

    python experiments/muon_ladder.py --root=runs/muon_bytes --out=experiments/results/muon_bytes
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import re

NAME = re.compile(r"^(adamw|muon(?P<mlr>[0-9.]+))-w(?P<w>\d+)-lr")


def collect(root: pathlib.Path) -> list[dict]:
    rows = []
    for run in sorted(root.iterdir()):
        m = NAME.match(run.name)
        metrics = run / "metrics.jsonl"
        if not m or not metrics.exists():
            continue
        vals = [json.loads(x) for x in metrics.read_text().splitlines()]
        val = [r for r in vals if "val_loss" in r]
        if not val:
            continue
        cfg = json.loads((run / "run.json").read_text())["config"] if (run / "run.json").exists() else {}
        tokens = val[-1]["step"] * cfg.get("train", {}).get("batch_size", 16) * cfg.get("train", {}).get("seq_len", 128)
        rows.append({"name": run.name, "optimizer": "adamw" if m.group(1) == "adamw" else "muon",
                     "muon_lr": float(m.group("mlr")) if m.group("mlr") else "", "width": int(m.group("w")),
                     "step": val[-1]["step"], "tokens": tokens, "val_loss": round(val[-1]["val_loss"], 4)})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for w in sorted({r["width"] for r in rows}):
        adam = [r for r in rows if r["width"] == w and r["optimizer"] == "adamw"]
        muon = [r for r in rows if r["width"] == w and r["optimizer"] == "muon"]
        if not adam or not muon:
            continue
        best = min(muon, key=lambda r: r["val_loss"])
        out.append({"width": w, "adamw": adam[0]["val_loss"], "muon_best": best["val_loss"],
                    "muon_best_lr": best["muon_lr"], "ratio": round(best["val_loss"] / adam[0]["val_loss"], 4),
                    "muon": {r["muon_lr"]: r["val_loss"] for r in sorted(muon, key=lambda r: r["muon_lr"])}})
    return out


def plot(rows, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    widths = sorted({r["width"] for r in rows})
    series = {"AdamW": [r for r in rows if r["optimizer"] == "adamw"]}
    for mlr in sorted({r["muon_lr"] for r in rows if r["optimizer"] == "muon"}):
        series[f"Muon, lr {mlr:g}"] = [r for r in rows if r["optimizer"] == "muon" and r["muon_lr"] == mlr]
    for label, rs in series.items():
        rs = sorted(rs, key=lambda r: r["width"])
        ax.plot([r["width"] for r in rs], [r["val_loss"] for r in rs], "o-" if label == "AdamW" else "s--",
                label=label, lw=2 if label == "AdamW" else 1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xlabel("width (2 layers)")
    ax.set_ylabel("val loss (nats/byte)")
    ax.set_title("Muon vs AdamW, byte ladder, 6.1M tokens each")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="runs/muon_bytes")
    p.add_argument("--out", default="experiments/results/muon_bytes")
    a = p.parse_args(argv)
    rows = collect(pathlib.Path(a.root))
    if not rows:
        raise SystemExit(f"{a.root}: no finished runs")
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "runs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = summarise(rows)
    lrs = sorted({r["muon_lr"] for r in rows if r["optimizer"] == "muon"})
    lines = ["| width | AdamW | " + " | ".join(f"Muon {x:g}" for x in lrs) + " | Muon best / AdamW |",
             "|---" * (len(lrs) + 3) + "|"]
    for s in summary:
        lines.append(f"| {s['width']} | {s['adamw']:.4f} | " + " | ".join(
            f"{s['muon'][x]:.4f}" if x in s["muon"] else "-" for x in lrs) + f" | {s['ratio']:.4f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, out / "muon_vs_adamw.png")


if __name__ == "__main__":
    main()
