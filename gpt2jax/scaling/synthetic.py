"""Fake sweeps from a known scaling law, written as real run directories (run.json, metrics.jsonl,
sweep_run.json in the formats gpt2jax-train and gpt2jax-sweep write), to check the analysis end
to end without training anything:

    python -m gpt2jax.scaling.synthetic --root=/tmp/fake_sweep --kind=isoflop
    gpt2jax-analyze --root=/tmp/fake_sweep --out=/tmp/fake_sweep_analysis
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from gpt2jax.scaling import fits as fits_lib

# Hoffmann et al. 2022 approach 3 (N = all parameters, D = tokens).
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
# A ladder of GPT-2 style shapes (head_dim 64), ~7M to ~1.5B parameters with the GPT-2 vocabulary.
SHAPES = [(2, 128), (3, 192), (4, 256), (6, 384), (8, 512), (12, 768), (16, 1024), (24, 1280),
          (36, 1280), (48, 1600)]


def chinchilla_loss(p: dict, n, d):
    return p["E"] + p["A"] / np.power(n, p["alpha"]) + p["B"] / np.power(d, p["beta"])


def _config(n_layer: int, n_embd: int, block_size: int, batch_size: int, num_steps: int) -> dict:
    from gpt2jax import config as config_lib

    c = config_lib.get_config()
    c.model.n_layer, c.model.n_embd, c.model.n_head = n_layer, n_embd, n_embd // 64
    c.model.block_size = block_size
    c.train.batch_size, c.train.num_steps = batch_size, num_steps
    c.train.log_every = max(num_steps // 50, 1)
    c.train.eval_every = max(num_steps // 5, 1)
    return config_lib.to_dict(c)


def write_run(root: str, name: str, n_layer: int, n_embd: int, tokens: float, law: dict, rng,
              noise: float = 0.003, budget_flops=None, block_size: int = 1024, batch_size: int = 64,
              finished: bool = True) -> dict:
    """One run directory whose losses follow the Chinchilla-form law `law` along training (each
    logged point at its tokens so far), with log-normal noise; returns the run's summary."""
    from gpt2jax import config as config_lib
    from gpt2jax import metrics as metrics_lib
    from gpt2jax import model as model_lib

    seq = block_size
    steps = max(int(round(tokens / (batch_size * seq))), 10)
    cfg_d = _config(n_layer, n_embd, block_size, batch_size, steps)
    cfg = config_lib.from_dict(cfg_d)
    params = model_lib.num_params(cfg.model)
    params_ne = model_lib.num_params(cfg.model, non_embedding=True)
    fpt = metrics_lib.flops_per_token(cfg.model, seq)
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    info = {"config": cfg_d, "params": params, "params_non_embedding": params_ne, "flops_per_token": fpt,
            "git_commit": None, "command": ["synthetic"]}
    sweep = {"name": name, "config": "configs/gpt2_124m.py",
             "overrides": {"model.n_layer": n_layer, "model.n_embd": n_embd, "train.num_steps": steps},
             "budget_flops": budget_flops, "tokens": steps * batch_size * seq, "params": params,
             "params_non_embedding": params_ne, "tags": {"synthetic": True}}
    t_cfg = cfg_d["train"]
    last = steps if finished else steps // 2
    rows = []
    log_steps = set(range(t_cfg["log_every"], last + 1, t_cfg["log_every"]))
    val_steps = set(range(t_cfg["eval_every"], last + 1, t_cfg["eval_every"])) | ({steps} if finished else set())
    for step in sorted(log_steps | val_steps):
        tok = step * batch_size * seq
        if step in log_steps or step == steps:
            loss = chinchilla_loss(law, params, tok) * math.exp(rng.normal(0, noise))
            rows.append({"step": step, "loss": float(loss), "lr": 1e-3, "grad_norm": 1.0, "tokens": tok,
                         "tokens_per_sec": 1e5, "mfu": None, "skipped_steps": 0})
        if step in val_steps:
            val = chinchilla_loss(law, params, tok) * math.exp(rng.normal(0, noise))
            rows.append({"step": step, "val_loss": float(val)})
    with open(os.path.join(d, "run.json"), "w") as f:
        json.dump(info, f)
    with open(os.path.join(d, "sweep_run.json"), "w") as f:
        json.dump(sweep, f)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return {"name": name, "params": params, "tokens": steps * batch_size * seq}


def write_sweep(root: str, kind: str = "isoflop", law: dict | None = None, seed: int = 0,
                noise: float = 0.003) -> list[dict]:
    """kind 'isoflop': 4 FLOP budgets x 5 sizes with tokens = C / (6N); 'ladder': every shape at
    20 tokens per parameter plus a fixed-token ladder (so every fit has data)."""
    law = law or CHINCHILLA
    rng = np.random.default_rng(seed)
    from gpt2jax import config as config_lib
    from gpt2jax import model as model_lib

    def count(nl, ne):
        c = config_lib.get_config()
        c.model.n_layer, c.model.n_embd, c.model.n_head = nl, ne, ne // 64
        return model_lib.num_params(c.model)

    out = []
    if kind == "isoflop":
        for c in (1e17, 1e18, 1e19, 1e20):
            n_opt = fits_lib.optimal_allocation(law, c)["N_opt"]
            shapes = sorted(SHAPES, key=lambda s: abs(math.log(count(*s) / n_opt)))[:5]
            for nl, ne in sorted(shapes, key=lambda s: count(*s)):
                tokens = c / (6 * count(nl, ne))
                out.append(write_run(root, f"iso{c:.0e}_l{nl}_d{ne}", nl, ne, tokens, law, rng, noise,
                                     budget_flops=c))
    elif kind == "ladder":
        for nl, ne in SHAPES[:8]:
            out.append(write_run(root, f"ladder_l{nl}_d{ne}_k20", nl, ne, 20 * count(nl, ne), law, rng,
                                 noise))
            out.append(write_run(root, f"fixed_l{nl}_d{ne}", nl, ne, 2e9, law, rng, noise))
    else:
        raise ValueError(f"kind must be 'isoflop' or 'ladder', got {kind!r}")
    return out


def main(argv, fv):
    del argv
    runs = write_sweep(fv.root, fv.kind, seed=fv.seed, noise=fv.noise)
    if fv.unfinished:
        write_run(fv.root, "unfinished_run", 4, 256, 1e9, CHINCHILLA, np.random.default_rng(1),
                  finished=False)
    print(f"wrote {len(runs)} runs under {fv.root}")


def define_flags(fv) -> None:
    from absl import flags

    flags.DEFINE_string("root", None, "Where to write the run directories.", required=True, flag_values=fv)
    flags.DEFINE_enum("kind", "isoflop", ["isoflop", "ladder"], "Sweep shape.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Noise seed.", flag_values=fv)
    flags.DEFINE_float("noise", 0.003, "Standard deviation of the log-normal noise on each loss.", flag_values=fv)
    flags.DEFINE_boolean("unfinished", True, "Also write one run stopped half-way (no final val_loss).",
                         flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
