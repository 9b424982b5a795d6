"""The parameter layout and initialisation as they were written by hand before parameters were declared
once (gpt2jax/model.py ParamSpec): a fixture that the derived trees and init must reproduce exactly."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt2jax.config import padded_vocab


def param_axes(cfg) -> dict:
    ln = {"scale": ("layers", "embed"), "bias": ("layers", "embed")}
    return {
        "wte": ("vocab", "embed"),
        "wpe": (None, "embed"),
        "h": {
            "ln_1": dict(ln),
            "attn": {
                "c_attn": {
                    "kernel": ("layers", "embed", None, "heads", "head_dim"),
                    "bias": ("layers", None, "heads", "head_dim"),
                },
                "c_proj": {"kernel": ("layers", "heads", "head_dim", "embed"), "bias": ("layers", "embed")},
            },
            "ln_2": dict(ln),
            "mlp": {
                "c_fc": {"kernel": ("layers", "embed", "mlp"), "bias": ("layers", "mlp")},
                "c_proj": {"kernel": ("layers", "mlp", "embed"), "bias": ("layers", "embed")},
            },
        },
        "ln_f": {"scale": ("embed",), "bias": ("embed",)},
    }


def param_shapes(cfg) -> dict:
    L, D, H = cfg.n_layer, cfg.n_embd, cfg.n_head
    K, F = D // H, 4 * D
    ln = {"scale": (L, D), "bias": (L, D)}
    return {
        "wte": (padded_vocab(cfg), D),
        "wpe": (cfg.block_size, D),
        "h": {
            "ln_1": dict(ln),
            "attn": {
                "c_attn": {"kernel": (L, D, 3, H, K), "bias": (L, 3, H, K)},
                "c_proj": {"kernel": (L, H, K, D), "bias": (L, D)},
            },
            "ln_2": dict(ln),
            "mlp": {"c_fc": {"kernel": (L, D, F), "bias": (L, F)}, "c_proj": {"kernel": (L, F, D), "bias": (L, D)}},
        },
        "ln_f": {"scale": (D,), "bias": (D,)},
    }


def _init_leaf(path, shape, key, cfg):
    if path[-1] == "scale":
        return jnp.ones(shape, jnp.float32)
    if path[-1] == "bias":
        return jnp.zeros(shape, jnp.float32)
    std = 0.02 / math.sqrt(2 * cfg.n_layer) if path[-2:] == ("c_proj", "kernel") else 0.02
    w = std * jax.random.normal(key, shape, jnp.float32)
    if path == ("wte",):
        w = jnp.where(jnp.arange(shape[0])[:, None] < cfg.vocab_size, w, 0.0)
    return w


class LegacyInit(nn.Module):
    """Creates the parameters exactly as the hand-written model did (same names, order and keys)."""

    config: object

    @nn.compact
    def __call__(self):
        cfg = self.config
        shapes = param_shapes(cfg)
        out = {}
        for name in ("wte", "wpe", "h", "ln_f"):
            def init(rng, name=name):
                is_shape = lambda x: isinstance(x, tuple)  # noqa: E731
                leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes[name], is_leaf=is_shape)
                keys = jax.random.split(rng, len(leaves))
                vals = [_init_leaf((name,) + tuple(e.key for e in p), s, k, cfg) for (p, s), k in zip(leaves, keys)]
                return jax.tree_util.tree_unflatten(treedef, vals)

            out[name] = self.param(name, init)
        return out


def legacy_init(cfg, key) -> dict:
    return LegacyInit(cfg).init(key)["params"]
