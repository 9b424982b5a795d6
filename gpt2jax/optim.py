"""The optimizer: AdamW with decoupled weight decay on matrices and embeddings only, linear warmup
then cosine decay to min_lr, and global-norm gradient clipping. Gradient accumulation happens inside
the train step (gpt2jax/train.py), so one optimizer update always sees the whole global batch."""

from __future__ import annotations

import jax
import optax


def schedule(optim_cfg, num_steps: int) -> optax.Schedule:
    """0 -> lr linearly over warmup_steps, then cosine to min_lr at num_steps."""
    o = optim_cfg
    warmup = min(o.warmup_steps, max(num_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=o.lr,
        warmup_steps=warmup,
        decay_steps=max(num_steps, warmup + 1),
        end_value=o.min_lr,
    )


def decay_mask(params):
    """True where weight decay applies: the kernels and the two embedding tables (not biases or
    LayerNorm parameters)."""

    def decays(path, _):
        names = [getattr(k, "key", str(k)) for k in path]
        return names[-1] == "kernel" or names[0] in ("wte", "wpe")

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(config) -> optax.GradientTransformation:
    o = config.optim
    parts = []
    if o.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip))
    parts.append(
        optax.adamw(
            learning_rate=schedule(o, config.train.num_steps),
            b1=o.b1,
            b2=o.b2,
            eps=o.eps,
            weight_decay=o.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)
