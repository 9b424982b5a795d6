"""The optimizer: AdamW with decoupled weight decay on matrices and embeddings only, linear warmup then
cosine decay to min_lr (or warmup-stable-decay, or constant: `schedule`), and global-norm gradient clipping. Gradient accumulation happens inside the train
step (gpt2jax/training/trainer.py), so one optimizer update always sees the whole global batch.

optim.name='muon': Muon (Jordan et al. 2024; optax.contrib's scale_by_muon) on the hidden
matrices, AdamW as above on everything else. optax.contrib.muon itself is not used because its Adam group
takes Muon's Nesterov flag and has no weight-decay mask; the Newton-Schulz step is optax's, and the shape
factor after it is the one optax.contrib.muon applies (`muon_shape_scales`).

Which parameters decay, which are Muon's matrices (and which axes form each matrix), and (under muP) each
parameter's learning-rate multiplier, come from the model's parameter declarations (gpt2jax/model.py
`ParamSpec.decay` / `ParamSpec.matrix` / `ParamSpec.lr_scale`)."""

from __future__ import annotations

import math

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


def lr_scales(model_cfg, optim_cfg=None) -> dict:
    """Each parameter's learning-rate multiplier: 1 under SP; under muP 1/width_mult for hidden matrices
    (Adam's per-group rates of Tensor Programs V, table 3). Under Muon with its width scaling (muon_rms = 0)
    a hidden matrix's multiplier is 1: its update's spectral norm is already lr sqrt(fan_out / fan_in) at
    every width, the spectral condition for width-independent feature learning (Yang, Simon & Bernstein
    2023), which muP's 1/width_mult would undo. With muon_rms > 0 the update has AdamW's RMS, and so AdamW's
    muP multiplier."""
    cfg = ModelConfig.of(model_cfg)
    spectral = optim_cfg is not None and optim_cfg.name == "muon" and not optim_cfg.muon_rms
    return _per_param(cfg, lambda s: 1.0 if (spectral and s.matrix) else s.lr_scale(cfg))


def muon_labels(model_cfg) -> dict:
    """'muon' for the hidden matrices (ParamSpec.matrix), 'adamw' for the rest."""
    return _per_param(model_cfg, lambda s: "muon" if s.matrix else "adamw")


def muon_dimension_numbers(model_cfg) -> dict:
    """optax's MuonDimensionNumbers for each hidden matrix (its declared input and output axes; the other axes,
    'layers' and c_attn's q/k/v axis, index separate matrices), MaskedNode for the parameters AdamW takes."""
    def dims(s):
        if not s.matrix:
            return optax.MaskedNode()
        ins, outs = s.matrix_axes()
        return optax.contrib.MuonDimensionNumbers(reduction_axis=ins, output_axis=outs)

    return _per_param(model_cfg, dims)


def scale_by_tree(scales) -> optax.GradientTransformation:
    """Multiply each update by a fixed per-parameter factor (applied after AdamW, so it scales the
    parameter's learning rate and, as with per-group rates in torch's AdamW, its decoupled decay)."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def muon_shape_scales(model_cfg, muon_rms: float = 0.0) -> dict:
    """The factor each orthogonalised update is multiplied by, from its matrix's fan-in and fan-out (the
    products of the declared input and output axes): sqrt(max(1, fan_out / fan_in)) (Jordan et al.'s width
    scaling), or with muon_rms > 0, muon_rms sqrt(max(fan_in, fan_out)) (Liu et al. 2025: AdamW's update RMS).
    MaskedNode for the parameters AdamW takes."""
    def scale(s):
        if not s.matrix:
            return optax.MaskedNode()
        ins, outs = s.matrix_axes()
        fan_in, fan_out = math.prod(s.shape[i] for i in ins), math.prod(s.shape[i] for i in outs)
        if muon_rms:
            return muon_rms * math.sqrt(max(fan_in, fan_out))
        return math.sqrt(max(1.0, fan_out / fan_in))

    return _per_param(model_cfg, scale)


def _muon(o, m: ModelConfig, lr: optax.Schedule) -> optax.GradientTransformation:
    """Muon on the declared matrices, AdamW (masked decay, as optim.name='adamw') on the rest."""
    ratio = o.muon_lr / o.lr
    muon_part = optax.chain(
        optax.contrib.scale_by_muon(
            ns_steps=o.muon_ns_steps, beta=o.muon_momentum, nesterov=o.muon_nesterov,
            weight_dimension_numbers=muon_dimension_numbers(m),
        ),
        scale_by_tree(muon_shape_scales(m, o.muon_rms)),
        optax.add_decayed_weights(o.muon_weight_decay),
        optax.scale_by_learning_rate(lambda count: lr(count) * ratio),
    )
    adam_part = optax.adamw(
        learning_rate=lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=decay_mask(m)
    )
    return optax.partition({"muon": muon_part, "adamw": adam_part}, muon_labels(m))


def make_optimizer(config) -> optax.GradientTransformation:
    o, m = config.optim, ModelConfig.of(config.model)
    lr = schedule(o, config.train.num_steps)
    parts = []
    if o.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip))
    if o.name == "muon":
        parts.append(_muon(o, m, lr))
    else:
        parts.append(
            optax.adamw(learning_rate=lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=decay_mask(m))
        )
    if m.mup:
        parts.append(scale_by_tree(lr_scales(m, o)))
    return optax.chain(*parts)
