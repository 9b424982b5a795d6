"""The optimizer: AdamW with decoupled weight decay on matrices and embeddings only, linear warmup then
cosine decay to min_lr (or warmup-stable-decay, or constant: `schedule`), and global-norm gradient clipping. Gradient accumulation happens inside the train
step (gpt2jax/training/trainer.py), so one optimizer update always sees the whole global batch.

Which parameters decay, and (under muP) each parameter's learning-rate multiplier, come from the model's
parameter declarations (gpt2jax/model.py `ParamSpec.decay` / `ParamSpec.lr_scale`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from gpt2jax.model import ModelConfig, param_specs


def decay_steps(optim_cfg, num_steps: int) -> int:
    """Steps of a WSD schedule's cooldown: the last round(decay_fraction * num_steps) (after any warmup)."""
    warmup = min(optim_cfg.warmup_steps, max(num_steps - 1, 0))
    return min(int(round(optim_cfg.decay_fraction * num_steps)), num_steps - warmup)


def schedule(optim_cfg, num_steps: int) -> optax.Schedule:
    """The learning rate of update `count` (0-based), by optim.schedule:
    cosine    0 -> lr linearly over warmup_steps, then cosine to min_lr at num_steps (the default);
    wsd       warmup, constant at lr, then a cooldown to min_lr over the last decay_fraction of the steps,
              shaped by decay_shape: linear | 1-sqrt (1 - sqrt(t / decay), Hagele et al. 2024) | cosine;
    constant  warmup, then lr.
    A WSD run's stable phase does not depend on num_steps, so a cooldown branched from a longer run at step
    S (train.branch_from) follows the same schedule as a fresh run of its own length."""
    o = optim_cfg
    warmup = min(o.warmup_steps, max(num_steps - 1, 0))
    if o.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=o.lr,
            warmup_steps=warmup,
            decay_steps=max(num_steps, warmup + 1),
            end_value=o.min_lr,
        )
    ramp = optax.linear_schedule(0.0, o.lr, warmup) if warmup else optax.constant_schedule(o.lr)
    stable = optax.constant_schedule(o.lr)
    if o.schedule == "constant":
        return optax.join_schedules([ramp, stable], [warmup])
    decay = decay_steps(o, num_steps)
    if decay <= 0:
        return optax.join_schedules([ramp, stable], [warmup])
    if o.decay_shape == "linear":
        cool = optax.linear_schedule(o.lr, o.min_lr, decay)
    elif o.decay_shape == "cosine":
        cool = optax.cosine_decay_schedule(o.lr, decay, alpha=o.min_lr / o.lr)
    else:  # 1-sqrt
        lr, min_lr = o.lr, o.min_lr

        def cool(count):
            frac = jnp.clip(jnp.asarray(count, jnp.float32) / decay, 0.0, 1.0)
            return min_lr + (lr - min_lr) * (1.0 - jnp.sqrt(frac))

    return optax.join_schedules([ramp, stable, cool], [warmup, num_steps - decay])


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
    o, m = config.optim, ModelConfig.of(config.model)
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
            mask=decay_mask(m),
        )
    )
    if m.mup:
        parts.append(scale_by_tree(lr_scales(m)))
    return optax.chain(*parts)
