"""Looking inside a trained model: attention entropy per layer and head, and a logit lens.

    python -m experiments.inspect_model --workdir=runs/cpu_ladder/cpu-L6-D256 --data_dir=data/shakespeare \
        --out=experiments/results/inspect

Runs the model with `capture=True` (gpt2jax/model.py) on `--batches` batches of the validation split and
computes (1) the entropy of every head's attention distribution, averaged over query positions >= 8 (so the
first tokens, which can attend to only a few keys, do not dominate), next to the entropy of uniform attention
over the same keys; and (2) the logit lens (nostalgebraist 2020): each layer's output passed through the final
norm and the LM head, scored as a next-token prediction (loss in nats). Writes inspect.json and inspect.png.
"""

from __future__ import annotations

import json
import os

import numpy as np


def inspect(workdir: str, data_dir: str, batches: int = 4, batch_size: int = 8, step=None) -> dict:
    import jax
    import jax.numpy as jnp

    from gpt2jax.checkpoint import load_params
    from gpt2jax.data import loader
    from gpt2jax.losses import cross_entropy
    from gpt2jax.model import GPT2, ModelConfig, head_weight, norm, output_multiplier

    config, params = load_params(workdir, step)
    m = ModelConfig.of(config.model)
    model = GPT2(m)
    T = min(m.block_size, config.train.seq_len or m.block_size)
    val = loader.TokenDataset(data_dir, "val", T, m.vocab_size)

    @jax.jit
    def one(params, batch):
        x, y = batch[:, :-1], batch[:, 1:]
        logits, state = model.apply({"params": params}, x, capture=True, mutable=["intermediates"])
        probs = state["intermediates"]["h/attn_probs"][0]  # [L, B, H, T, T]
        outs = state["intermediates"]["h/out"][0]  # [L, B, T, D]
        ent = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(probs), 0.0), -1)  # [L, B, H, T]
        W = head_weight(params, m)
        real = jnp.arange(W.shape[0]) < m.vocab_size

        def lens(h):
            lg = jnp.einsum("btd,vd->btv", norm(h, params["ln_f"], m), W) * output_multiplier(m)
            return cross_entropy(jnp.where(real, lg, -1e9), y)

        return ent[..., 8:].mean((1, 3)), jax.lax.map(lens, outs), cross_entropy(logits, y)

    ents, lenses, finals = [], [], []
    for i in range(batches):
        batch = jnp.asarray(loader.eval_batch(val, i, batch_size, 0, 1))
        e, l, f = jax.device_get(one(params, batch))
        ents.append(e), lenses.append(l), finals.append(f)
    uniform = float(np.mean(np.log(np.arange(9, T + 1))))
    return {
        "workdir": workdir, "n_layer": m.n_layer, "n_head": m.n_head, "n_embd": m.n_embd, "tokens": batches * batch_size * T,
        "attention_entropy": np.mean(ents, 0).tolist(),  # [layer][head], nats
        "uniform_entropy": uniform,
        "logit_lens_loss": np.mean(lenses, 0).tolist(),  # [layer], nats/token
        "final_loss": float(np.mean(finals)),
    }


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpt2jax.scaling.plots import save_png

    ent = np.asarray(res["attention_entropy"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.2, 1]})
    im = a.imshow(ent, cmap="viridis", aspect="auto", vmin=0, vmax=res["uniform_entropy"])
    a.set_xlabel("head")
    a.set_ylabel("layer")
    a.set_xticks(range(ent.shape[1]))
    a.set_yticks(range(ent.shape[0]))
    a.set_title("attention entropy (nats; colour scale ends at uniform)")
    for (i, j), v in np.ndenumerate(ent):
        a.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < ent.max() * 0.6 else "k")
    fig.colorbar(im, ax=a)
    lens = res["logit_lens_loss"]
    b.plot(range(len(lens)), lens, marker="o", label="layer output -> final norm -> head")
    b.axhline(res["final_loss"], color="gray", ls="--", label=f"model's loss {res['final_loss']:.3f}")
    b.set_xlabel("layer")
    b.set_ylabel("next-token loss (nats)")
    b.set_title("logit lens")
    b.set_xticks(range(len(lens)))
    b.grid(True, alpha=0.3)
    b.legend()
    fig.suptitle(f"{res['n_layer']} layers x {res['n_embd']} wide, {res['tokens']:,} val tokens", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


def main(argv, F):
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    res = inspect(F.workdir, F.data_dir, F.batches, F.batch_size, F.step)
    os.makedirs(F.out, exist_ok=True)
    with open(os.path.join(F.out, "inspect.json"), "w") as f:
        json.dump(res, f, indent=1)
    plot(res, os.path.join(F.out, "inspect.png"))
    print("logit lens loss per layer: " + ", ".join(f"{v:.3f}" for v in res["logit_lens_loss"]))
    print(f"wrote {F.out}/inspect.json and inspect.png")


def define_flags(fv):
    from absl import flags

    flags.DEFINE_string("workdir", None, "A run's workdir (its latest checkpoint is used).", required=True, flag_values=fv)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=fv)
    flags.DEFINE_string("data_dir", "data/shakespeare", "Prepared token files; the val split is used.", flag_values=fv)
    flags.DEFINE_integer("batches", 4, "Validation batches.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 8, "Sequences per batch.", flag_values=fv)
    flags.DEFINE_string("out", "experiments/results/inspect", "Output directory.", flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
