"""WSD against cosine: the final val loss of each run of experiments/specs/wsd_vs_cosine.py, per schedule and
seed, with the mean and the seed spread, as a CSV and a markdown table.

    python -m experiments.wsd_vs_cosine --root=runs/wsd_vs_cosine --out=experiments/results/wsd_vs_cosine

Reads the runs as gpt2jax-analyze does (gpt2jax.scaling.table): tags `schedule`, `seed`, the final val loss and
bits per byte.
"""

from __future__ import annotations

import csv
import os
import statistics


def collect(root: str) -> list[dict]:
    """The finished runs under `root` that carry a schedule tag, as read by gpt2jax-analyze's run table."""
    from gpt2jax.errors import AnalysisError
    from gpt2jax.scaling import table

    rows = [{"name": r["name"], "schedule": r["tags"]["schedule"], "seed": int(r["tags"]["seed"]),
             "val_loss": r["loss"], "val_bpb": r.get("bpb")}
            for r in table.collect(root) if r["status"] == "finished" and "schedule" in (r.get("tags") or {})]
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
