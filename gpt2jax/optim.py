"""The optimizer: AdamW with decoupled weight decay on matrices and embeddings only, linear warmup then
cosine decay to min_lr, and global-norm gradient clipping. Gradient accumulation happens inside the train
step (gpt2jax/train.py), so one optimizer update always sees the whole global batch.

Which parameters decay, and (under muP) each parameter's learning-rate multiplier, come from the model's
parameter declarations (gpt2jax/model.py `ParamSpec.decay` / `ParamSpec.lr_scale`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gpt2jax.model import ModelConfig, param_specs


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


def _per_param(model_cfg, fn):
    return jax.tree.map(fn, param_specs(model_cfg), is_leaf=lambda x: hasattr(x, "lr_scale"))


def decay_mask(model_cfg) -> dict:
    """True where weight decay applies (the kernels and the embedding tables; not biases or norm gains)."""
    return _per_param(model_cfg, lambda s: s.decay)


def lr_scales(model_cfg) -> dict:
    """Each parameter's learning-rate multiplier: 1 under SP; under muP 1/width_mult for hidden matrices
    (Adam's per-group rates of Tensor Programs V, table 3)."""
    cfg = ModelConfig.of(model_cfg)
    return _per_param(cfg, lambda s: s.lr_scale(cfg))


def scale_by_tree(scales) -> optax.GradientTransformation:
    """Multiply each update by a fixed per-parameter factor (applied after AdamW, so it scales the
    parameter's learning rate and, as with per-group rates in torch's AdamW, its decoupled decay)."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


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
            mask=decay_mask(config.model),
        )
    )
    if ModelConfig.of(config.model).mup:
        parts.append(scale_by_tree(lr_scales(config.model)))
    return optax.chain(*parts)
