"""Coordinate check for muP (Yang et al., Tensor Programs V, 2022, section 7 / appendix D).

    python -m experiments.coord_check --widths=64,128,256,512,1024 --data_dir=data/shakespeare \
        --out=experiments/results/coord_check

For each parametrization (sp, mup) and width, trains (gpt2jax.train.train, with the measurement as one more
loop hook, `rms_hook`) a small GPT-2 (`--n_layer` layers, `--n_head` heads, so
the head size grows with the width) for `--steps` Adam steps at one learning rate on real batches, and after
each step records the RMS of the token embeddings' output, of every layer's output (`capture=True`) and of the
logits. Under muP these stay about the same size as the width grows; under SP (GPT-2's fixed init scale and
one learning rate for every parameter) the hidden states and the logits grow with the width, because one Adam
step moves every weight by about the learning rate whatever its fan-in. Writes coord_check.csv (one row per
parametrization, width, step, quantity) and coord_check.png (RMS against width at the last step).
"""

from __future__ import annotations

import csv
import os



def _config(width: int, parametrization: str, base_width: int, n_layer: int, n_head: int, lr: float, data_dir):
    from gpt2jax.config import get_config

    c = get_config()
    m = c.model
    m.n_layer, m.n_embd, m.n_head, m.block_size = n_layer, width, n_head, 64
    m.vocab_size = 0  # the dataset's (meta.json): GPT-2 BPE or bytes
    m.parametrization, m.mup_base_width, m.scan_layers = parametrization, base_width, False
    c.data.dir = str(data_dir)
    c.train.batch_size, c.train.num_steps, c.train.compile_cache = 8, 1000, ""
    c.optim.lr, c.optim.min_lr, c.optim.warmup_steps, c.optim.weight_decay = lr, lr, 0, 0.0
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
    from gpt2jax.training.records import resolve_vocab

    resolve_vocab(c)
    return c


def rms_hook(c, probe_BT, rows: list):
    """A training-loop hook (gpt2jax.train.Hook) that appends the RMS of the embeddings' output, of every
    layer's output and of the (centred) logits on the fixed batch `probe_BT` to `rows` after each step."""
    import jax
    import jax.numpy as jnp

    from gpt2jax.model import GPT2
    from gpt2jax.train import Hook

    model = GPT2(c.model)
    V = c.model.vocab_size

    @jax.jit
    def activations(params):
        logits, state = model.apply({"params": params}, probe_BT, capture=True, mutable=["intermediates"])
        out = state["intermediates"]["h/out"][0]  # [L, B, T, D]
        rms = lambda x: jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32))))  # noqa: E731
        real = logits[..., :V]
        return {"embedding": rms(params["wte"][probe_BT]), **{f"layer_{i}": rms(out[i]) for i in range(out.shape[0])},
                "logits": rms(real - real.mean(-1, keepdims=True))}

    def record(loop):
        for q, v in jax.device_get(activations(loop.params)).items():
            rows.append({"step": loop.step, "quantity": q, "rms": float(v)})

    return Hook(record, every=1, name="coord_check"), record


def measure(width: int, parametrization: str, *, base_width: int, steps: int, lr: float, data_dir,
            n_layer: int = 2, n_head: int = 4, seed: int = 0) -> list[dict]:
    """[{'step', 'quantity', 'rms'}] at init (step 0) and after each of `steps` train steps, recorded by a
    hook of the ordinary training loop (gpt2jax.train.train) in a temporary workdir."""
    import tempfile
    import types

    import jax
    import jax.numpy as jnp

    from gpt2jax.data import loader
    from gpt2jax.model import init_params
    from gpt2jax.train import train

    c = _config(width, parametrization, base_width, n_layer, n_head, lr, data_dir)
    c.train.num_steps, c.train.log_every, c.train.eval_every, c.train.eval_batches = steps, steps, 0, 1
    c.checkpoint.every, c.checkpoint.keep, c.train.seed = 0, 1, seed
    ds = loader.TokenDataset(c.data.dir, "train", c.model.block_size, c.model.vocab_size)
    probe = jnp.asarray(loader.train_batch(ds, 10_000, c.train.batch_size, seed + 1)[:, :-1])  # held fixed
    rows: list = []
    hook, record = rms_hook(c, probe, rows)
    record(types.SimpleNamespace(step=0, params=init_params(c.model, jax.random.PRNGKey(seed))))
    with tempfile.TemporaryDirectory() as wd:
        train(c, wd, progress=False, hooks=[hook])
    return rows


def run(widths, parametrizations, *, base_width, steps, lr, data_dir, n_layer=2, n_head=4, progress=True):
    """Rows {'parametrization', 'width', 'step', 'quantity', 'rms'} for every width and parametrization."""
    from tqdm.auto import tqdm

    out = []
    jobs = [(p, w) for p in parametrizations for w in widths]
    for p, w in tqdm(jobs, desc="coord check", disable=not progress):
        for r in measure(w, p, base_width=base_width, steps=steps, lr=lr, data_dir=data_dir, n_layer=n_layer,
                         n_head=n_head):
            out.append({"parametrization": p, "width": w, **r})
    return out


def growth(rows, parametrization: str, quantity: str, step: int) -> float:
    """RMS at the widest width over RMS at the narrowest, at `step` (1 = flat)."""
    sel = sorted((r["width"], r["rms"]) for r in rows
                 if r["parametrization"] == parametrization and r["quantity"] == quantity and r["step"] == step)
    return sel[-1][1] / sel[0][1]


def plot(rows, path: str, step: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpt2jax.scaling.plots import save_png

    params = sorted({r["parametrization"] for r in rows}, key=lambda p: p != "sp")
    quantities = list(dict.fromkeys(r["quantity"] for r in rows))
    fig, axes = plt.subplots(1, len(params), figsize=(5.5 * len(params), 4.2), sharey=True, squeeze=False)
    for ax, p in zip(axes[0], params):
        for q in quantities:
            pts = sorted((r["width"], r["rms"]) for r in rows if r["parametrization"] == p and r["quantity"] == q
                         and r["step"] == step)
            ax.plot([w for w, _ in pts], [v for _, v in pts], marker="o", label=q)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width (n_embd)")
        ax.set_title(f"{p.upper()}: activation RMS after {step} Adam steps")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("RMS of the activation")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def main(argv, F):
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    widths = [int(w) for w in F.widths.split(",") if w]
    params = [p for p in F.parametrizations.split(",") if p]
    base = F.base_width or min(widths)
    rows = run(widths, params, base_width=base, steps=F.steps, lr=F.lr, data_dir=F.data_dir, n_layer=F.n_layer,
               n_head=F.n_head)
    os.makedirs(F.out, exist_ok=True)
    with open(os.path.join(F.out, "coord_check.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["parametrization", "width", "step", "quantity", "rms"])
        w.writeheader()
        w.writerows(rows)
    plot(rows, os.path.join(F.out, "coord_check.png"), F.steps)
    for p in params:
        print(f"{p}: widest/narrowest RMS after {F.steps} steps: " + ", ".join(
            f"{q} {growth(rows, p, q, F.steps):.2f}" for q in dict.fromkeys(r["quantity"] for r in rows)))
    print(f"wrote {F.out}/coord_check.csv and coord_check.png")


def define_flags(fv):
    from absl import flags

    flags.DEFINE_string("widths", "64,128,256,512,1024", "Comma-separated widths (n_embd).", flag_values=fv)
    flags.DEFINE_string("parametrizations", "sp,mup", "Which parametrizations to check.", flag_values=fv)
    flags.DEFINE_integer("base_width", 0, "muP base width (0 = the smallest width).", flag_values=fv)
    flags.DEFINE_integer("steps", 10, "Adam steps per width.", flag_values=fv)
    flags.DEFINE_float("lr", 1e-2, "The one learning rate used at every width.", flag_values=fv)
    flags.DEFINE_integer("n_layer", 2, "Layers.", flag_values=fv)
    flags.DEFINE_integer("n_head", 4, "Heads (fixed, so the head size grows with the width).", flag_values=fv)
    flags.DEFINE_string("data_dir", "data/shakespeare", "Prepared token files (python -m gpt2jax.prepare).", flag_values=fv)
    flags.DEFINE_string("out", "experiments/results/coord_check", "Output directory.", flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
