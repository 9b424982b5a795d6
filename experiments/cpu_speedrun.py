"""The quickstart as a CPU speedrun: today's recipe (configs/shakespeare.py) against the NanoGPT speedrun's switches,
each alone and combined, at equal training wall time.

Equal wall time, measured without letting the training runs' timing depend on what else the machine does:
  1. `measure`: the train step of each variant is timed alone (gpt2jax.bench: median of --steps steps after
     compiling, --repeats times, interleaved across the variants so drift hits them alike);
  2. `train`: each variant trains for round(BASE_STEPS x t_base / t_variant) steps (the recipe's 1300 steps of
     8 x 64 tokens at its own step time is the budget), its schedule fitted to its own length; the final val
     loss over the whole held-out split is read from the run's metrics.jsonl;
  3. `table`: a markdown table and a csv.
A run's loss does not depend on the machine's load (runs repeat to the bit on one CPU model), so `train` may run
beside other work; only `measure` must have the machine to itself.

    python experiments/cpu_speedrun.py measure --out=experiments/results/cpu_speedrun
    python experiments/cpu_speedrun.py train --out=experiments/results/cpu_speedrun --variants=base,relu2
    python experiments/cpu_speedrun.py table --out=experiments/results/cpu_speedrun
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASE_STEPS = 1300  # configs/shakespeare.py's steps: the budget is their wall time

# name -> (overrides of configs/shakespeare.py, the step-time variant it shares: Muon's lr does not change its speed)
VARIANTS = {
    "base": ({}, "base"),
    "relu2": ({"model.mlp": "relu2"}, "relu2"),
    "softcap15": ({"model.logit_softcap": 15.0}, "softcap"),
    "softcap30": ({"model.logit_softcap": 30.0}, "softcap"),
    "zero_init_proj": ({"model.zero_init_proj": True}, "base"),
    "muon_lr0.02": ({"optim.name": "muon", "optim.muon_lr": 0.02}, "muon"),
    "muon_lr0.05": ({"optim.name": "muon", "optim.muon_lr": 0.05}, "muon"),
    "muon_lr0.01": ({"optim.name": "muon", "optim.muon_lr": 0.01}, "muon"),
}
TIMED = {"base": {}, "relu2": {"model.mlp": "relu2"}, "softcap": {"model.logit_softcap": 15.0},
         "muon": {"optim.name": "muon"}}


def _combo(spec: str):
    """'a+b+c': the union of the named variants' overrides; its step time is measured as its own variant."""
    over = {}
    for part in spec.split("+"):
        over.update(VARIANTS[part][0])
    return over


def _config(overrides: dict):
    sys.path.insert(0, str(ROOT))
    from configs.shakespeare import get_config

    c = get_config()
    for key, value in overrides.items():
        section, field = key.split(".")
        c[section][field] = value
    return c


def measure(out: pathlib.Path, names, steps: int, repeats: int) -> None:
    from gpt2jax.bench import run

    path = out / "step_times.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    times = record.get("times", {})
    for r in range(repeats):
        for name in names:
            over = TIMED.get(name) or _combo(name)
            res = run(_config(over), steps=steps, warmup=3, matmul_runs=1, progress=False)
            times.setdefault(name, []).append(res["step_time"]["median"])
            print(f"repeat {r}: {name:30s} {res['step_time']['median'] * 1e3:7.1f} ms/step  {res['cpu']['model']}",
                  flush=True)
            cpu = res["cpu"]
    record.update({"cpu": cpu, "steps": steps, "repeats": repeats, "times": times})
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def _step_time(times: dict, name: str) -> float:
    return statistics.median(times[name])


def steps_for(out: pathlib.Path, name: str) -> tuple[int, dict]:
    times = json.loads((out / "step_times.json").read_text())["times"]
    if name in VARIANTS:
        over, timed = VARIANTS[name]
    else:
        over, timed = _combo(name), name
    return round(BASE_STEPS * _step_time(times, "base") / _step_time(times, timed)), over


def train(out: pathlib.Path, names, seed: int, runs: pathlib.Path) -> None:
    for name in names:
        steps, over = steps_for(out, name)
        tag = name if seed == 0 else f"{name}_seed{seed}"
        wd = runs / tag
        flags = [f"--config.{k}={v}" for k, v in over.items()]
        cmd = [sys.executable, "-m", "gpt2jax.train", f"--config={ROOT / 'configs/shakespeare.py'}", f"--workdir={wd}",
               f"--config.train.num_steps={steps}", f"--config.train.seed={seed}", *flags]
        print(" ".join(cmd), flush=True)
        t0 = time.time()
        subprocess.run(cmd, check=True, cwd=ROOT)
        rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
        val = [r["val_loss"] for r in rows if "val_loss" in r][-1]
        row = {"name": name, "seed": seed, "steps": steps, "tokens": steps * 8 * 64, "val_loss": round(val, 4),
               "overrides": json.dumps(over), "wall_s": round(time.time() - t0, 1),
               "command": " ".join(["python", "-m", "gpt2jax.train", "--config=configs/shakespeare.py",
                                    f"--config.train.num_steps={steps}", f"--config.train.seed={seed}", *flags])}
        path = out / "runs.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        print(f"{tag}: {steps} steps, val_loss {val:.4f}", flush=True)


def table(out: pathlib.Path) -> None:
    times = json.loads((out / "step_times.json").read_text())
    rows = list(csv.DictReader((out / "runs.csv").open()))
    base_t = _step_time(times["times"], "base")
    lines = [f"CPU: {times['cpu']['model']}, {times['cpu']['cores']} cores; step times: median of "
             f"{times['repeats']} x {times['steps']} steps (ms, all repeats listed)", "",
             "| variant | step time (ms) | steps in the budget | seed | val loss |", "|---|---|---|---|---|"]
    for r in rows:
        name = r["name"]
        timed = VARIANTS[name][1] if name in VARIANTS else name
        ts = times["times"][timed]
        lines.append(f"| {name} | {_step_time(times['times'], timed) * 1e3:.1f} "
                     f"({', '.join(f'{t * 1e3:.1f}' for t in ts)}) | {r['steps']} | {r['seed']} | {r['val_loss']} |")
    lines.append("")
    lines.append(f"Budget: {BASE_STEPS} steps x {base_t:.4f} s = {BASE_STEPS * base_t / 60:.2f} min of training.")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["measure", "train", "table"])
    p.add_argument("--out", default="experiments/results/cpu_speedrun")
    p.add_argument("--runs", default="runs/cpu_speedrun")
    p.add_argument("--variants", default=",".join(TIMED))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    out = pathlib.Path(a.out)
    names = [n for n in a.variants.split(",") if n]
    if a.what == "measure":
        measure(out, names, a.steps, a.repeats)
    elif a.what == "train":
        train(out, names, a.seed, pathlib.Path(a.runs))
    else:
        table(out)


if __name__ == "__main__":
    main()
