"""WSD against cosine: the final val loss of each run of experiments/specs/wsd_vs_cosine.py, per schedule and
seed, with the mean and the seed spread, as a CSV and a markdown table.

    python -m experiments.wsd_vs_cosine --root=runs/wsd_vs_cosine --out=experiments/results/wsd_vs_cosine

Reads each run's sweep_run.json (tags `schedule`, `seed`) and metrics.jsonl (the last val_loss and val_bpb).
"""

from __future__ import annotations

import csv
import json
import os
import statistics


def collect(root: str) -> list[dict]:
    from gpt2jax.errors import AnalysisError

    if not os.path.isdir(root):
        raise AnalysisError(f"--root={root}: no such directory")
    rows = []
    for name in sorted(os.listdir(root)):
        rec, met = os.path.join(root, name, "sweep_run.json"), os.path.join(root, name, "metrics.jsonl")
        if not (os.path.exists(rec) and os.path.exists(met)):
            continue
        with open(rec) as f:
            tags = json.load(f).get("tags", {})
        with open(met) as f:
            vals = [json.loads(x) for x in f if x.strip()]
        last = [v for v in vals if "val_loss" in v]
        if "schedule" not in tags or not last:
            continue
        rows.append({"name": name, "schedule": tags["schedule"], "seed": int(tags["seed"]), "step": last[-1]["step"],
                     "val_loss": last[-1]["val_loss"], "val_bpb": last[-1].get("val_bpb")})
    if not rows:
        raise AnalysisError(f"--root={root}: no finished runs with a schedule tag")
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| schedule | seeds | val loss per seed (nats/byte) | mean | spread (max - min) | mean bits/byte |",
             "|---|---|---|---|---|---|"]
    for sched in sorted({r["schedule"] for r in rows}):
        rs = sorted((r for r in rows if r["schedule"] == sched), key=lambda r: r["seed"])
        losses = [r["val_loss"] for r in rs]
        bpb = [r["val_bpb"] for r in rs if r["val_bpb"] is not None]
        bpb_text = f"{statistics.mean(bpb):.4f}" if bpb else "-"
        lines.append(f"| {sched} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{', '.join(f'{x:.4f}' for x in losses)} | {statistics.mean(losses):.4f} | "
                     f"{max(losses) - min(losses):.4f} | {bpb_text} |")
    return "\n".join(lines)


def main(argv, fv):
    rows = collect(fv.root)
    os.makedirs(fv.out, exist_ok=True)
    with open(os.path.join(fv.out, "runs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    text = table(rows)
    with open(os.path.join(fv.out, "table.md"), "w") as f:
        f.write(text + "\n")
    print(text)


def define_flags(fv):
    from absl import flags

    flags.DEFINE_string("root", None, "The sweep root (one workdir per run).", flag_values=fv)
    flags.DEFINE_string("out", None, "Where runs.csv and table.md go.", flag_values=fv)
    flags.mark_flags_as_required(["root", "out"], flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
