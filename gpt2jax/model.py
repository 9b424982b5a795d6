"""GPT-2, exactly: a functional Flax (linen) module whose parameters are a plain pytree.

    model = GPT2(config.model)
    params = model.init(key, tokens_BT)['params']          # or init_params(config.model, key)
    logits_BTV = model.apply({'params': params}, tokens_BT)  # [B, T, padded_vocab], float32

The network: learned token + position embeddings, n_layer pre-LayerNorm blocks (LayerNorm eps 1e-5,
causal multi-head self-attention with biases, MLP 4x with tanh-GELU), a final LayerNorm, and the LM
head tied to the token embedding. Init N(0, 0.02); the two residual output projections of each block
N(0, 0.02 / sqrt(2 * n_layer)); biases 0, LayerNorm scale 1.

Parameter layout (the same for every size; used by checkpoints, conversion and sharding). L = n_layer,
D = n_embd, H = n_head, K = D / H, F = 4 D, V = padded vocabulary, P = block_size. Every per-layer
array is stacked along a leading `layers` axis:

    wte                 [V, D]        ('vocab', 'embed')     rows >= vocab_size are zero, stay zero
    wpe                 [P, D]        (None, 'embed')
    h/ln_1/{scale,bias} [L, D]        ('layers', 'embed')
    h/attn/c_attn/kernel [L, D, 3, H, K]  ('layers', 'embed', None, 'heads', 'head_dim')  q, k, v
    h/attn/c_attn/bias   [L, 3, H, K]     ('layers', None, 'heads', 'head_dim')
    h/attn/c_proj/kernel [L, H, K, D]     ('layers', 'heads', 'head_dim', 'embed')
    h/attn/c_proj/bias   [L, D]           ('layers', 'embed')
    h/ln_2/{scale,bias} [L, D]
    h/mlp/c_fc/kernel   [L, D, F]     ('layers', 'embed', 'mlp')
    h/mlp/c_fc/bias     [L, F]        ('layers', 'mlp')
    h/mlp/c_proj/kernel [L, F, D]     ('layers', 'mlp', 'embed')
    h/mlp/c_proj/bias   [L, D]        ('layers', 'embed')
    ln_f/{scale,bias}   [D]           ('embed',)

`param_axes(model_cfg)` returns this tree of logical axis names; `init` also returns the parameters
boxed with them (flax `LogicallyPartitioned`), and `init_params` unboxes them into plain arrays.

Numerics: parameters in `param_dtype` (fp32), matmuls in `dtype` (bf16 on accelerators); LayerNorm,
softmax and the logits are fp32. Padded vocabulary logits are set to -1e9 so they never win in the
loss or in sampling.

Decoding: `init_cache` + `GPT2.decode` run the network on new tokens at position `pos` against a
key/value cache, giving the same logits as a full forward pass.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt2jax.config import padded_vocab

LN_EPS = 1e-5
NEG_INF = -1e9  # logit of padded vocabulary rows and of masked attention scores

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def param_axes(cfg) -> dict:
    """The logical axis names of every parameter, as a tree shaped like the parameters."""
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
                "c_proj": {
                    "kernel": ("layers", "heads", "head_dim", "embed"),
                    "bias": ("layers", "embed"),
                },
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
    """Shapes of every parameter, as a tree shaped like the parameters."""
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
            "mlp": {
                "c_fc": {"kernel": (L, D, F), "bias": (L, F)},
                "c_proj": {"kernel": (L, F, D), "bias": (L, D)},
            },
        },
        "ln_f": {"scale": (D,), "bias": (D,)},
    }


def _init_leaf(path: tuple[str, ...], shape, dtype, key, cfg):
    """GPT-2 initialisation for one parameter, chosen by its path."""
    name = path[-1]
    if name == "scale":
        return jnp.ones(shape, dtype)
    if name == "bias":
        return jnp.zeros(shape, dtype)
    std = 0.02
    if path[-2:] == ("c_proj", "kernel"):  # the residual output projections
        std = 0.02 / math.sqrt(2 * cfg.n_layer)
    w = std * jax.random.normal(key, shape, jnp.float32)
    if path == ("wte",):  # padded vocabulary rows start at zero
        w = jnp.where(jnp.arange(shape[0])[:, None] < cfg.vocab_size, w, 0.0)
    return w.astype(dtype)


def _dtype(name: str):
    return jnp.dtype(name)


def constrain(x, names: tuple):
    """Name an activation's axes logically (e.g. ('batch', 'seq', 'embed')). A no-op unless the caller
    set flax logical-axis rules and a mesh (gpt2jax.sharding.activation_context, used by the trainer);
    then XLA is told to lay the activation out as config.mesh.rules say."""
    if not nn.get_logical_axis_rules():
        return x
    return nn.with_logical_constraint(x, names)


def layer_norm(x, p):
    """LayerNorm in fp32, returned in x's dtype."""
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + LN_EPS)
    return (y * p["scale"].astype(jnp.float32) + p["bias"].astype(jnp.float32)).astype(x.dtype)


def gelu(x):
    return jax.nn.gelu(x, approximate=True)


def _attention(q_BTHK, k_BSHK, v_BSHK, mask_BTS, *, cfg, dropout_key):
    """Scaled dot-product attention. mask True = may attend. fp32 softmax."""
    use_dropout = dropout_key is not None and cfg.dropout > 0.0
    if not use_dropout:
        impl = "cudnn" if cfg.attention == "cudnn" else "xla"
        if mask_BTS is None:
            return jax.nn.dot_product_attention(q_BTHK, k_BSHK, v_BSHK, is_causal=True, implementation=impl)
        return jax.nn.dot_product_attention(
            q_BTHK, k_BSHK, v_BSHK, mask=mask_BTS[:, None], implementation=impl
        )
    # Attention dropout needs the probabilities, so this path spells attention out (XLA only).
    T, S = q_BTHK.shape[1], k_BSHK.shape[1]
    if mask_BTS is None:
        mask_BTS = jnp.tril(jnp.ones((T, S), bool))[None]
    scores = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BSHK).astype(jnp.float32)
    scores = scores / math.sqrt(q_BTHK.shape[-1])
    scores = jnp.where(mask_BTS[:, None], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1)
    keep = jax.random.bernoulli(dropout_key, 1.0 - cfg.dropout, probs.shape)
    probs = jnp.where(keep, probs / (1.0 - cfg.dropout), 0.0).astype(v_BSHK.dtype)
    return jnp.einsum("bhts,bshk->bthk", probs, v_BSHK)


def _dropout(x, rate, key):
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def block(p, x_BTD, *, cfg, key=None, kv=None, pos=None):
    """One transformer block on one layer's parameters `p`.

    key: dropout key (None = deterministic). kv: optional (k_cache_BSHK, v_cache_BSHK) for decoding at
    position `pos`; then returns (x, (k_cache, v_cache)) with the new keys/values written in.
    """
    dt = x_BTD.dtype
    keys = list(jax.random.split(key, 3)) if key is not None else [None] * 3
    a = p["attn"]
    h = layer_norm(x_BTD, p["ln_1"])
    qkv = jnp.einsum("btd,dchk->cbthk", h, a["c_attn"]["kernel"].astype(dt))
    qkv = qkv + a["c_attn"]["bias"].astype(dt)[:, None, None]
    q, k, v = qkv[0], qkv[1], qkv[2]
    mask = None
    if kv is not None:
        k_cache, v_cache = kv
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), pos, axis=1)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), pos, axis=1)
        T, S = q.shape[1], k_cache.shape[1]
        mask = (jnp.arange(S)[None, :] <= pos + jnp.arange(T)[:, None])[None]
        k, v = k_cache.astype(dt), v_cache.astype(dt)
        kv = (k_cache, v_cache)
    y = _attention(q, k, v, mask, cfg=cfg, dropout_key=keys[0])
    y = jnp.einsum("bthk,hkd->btd", y, a["c_proj"]["kernel"].astype(dt)) + a["c_proj"]["bias"].astype(dt)
    x_BTD = x_BTD + _dropout(y, cfg.dropout, keys[1])
    m = p["mlp"]
    h = layer_norm(x_BTD, p["ln_2"])
    h = gelu(h @ m["c_fc"]["kernel"].astype(dt) + m["c_fc"]["bias"].astype(dt))
    h = h @ m["c_proj"]["kernel"].astype(dt) + m["c_proj"]["bias"].astype(dt)
    x_BTD = x_BTD + _dropout(h, cfg.dropout, keys[2])
    return x_BTD if kv is None else (x_BTD, kv)


class GPT2(nn.Module):
    """GPT-2. `config` is the `model` section of a gpt2jax config (see gpt2jax/config.py)."""

    config: Any

    def setup(self):
        cfg = self.config
        shapes, axes = param_shapes(cfg), param_axes(cfg)
        pdt = _dtype(cfg.param_dtype)

        def make(name):
            def init(rng):
                is_shape = lambda x: isinstance(x, tuple)  # noqa: E731
                leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes[name], is_leaf=is_shape)
                names = jax.tree.leaves(axes[name], is_leaf=is_shape)
                keys = jax.random.split(rng, len(leaves))
                boxes = [
                    nn.LogicallyPartitioned(
                        _init_leaf((name,) + tuple(e.key for e in path), shape, pdt, k, cfg), ax
                    )
                    for (path, shape), ax, k in zip(leaves, names, keys)
                ]
                return jax.tree_util.tree_unflatten(treedef, boxes)

            return init

        self.wte = self.param("wte", make("wte"))
        self.wpe = self.param("wpe", make("wpe"))
        self.h = self.param("h", make("h"))
        self.ln_f = self.param("ln_f", make("ln_f"))

    def _params(self):
        return nn.unbox({"wte": self.wte, "wpe": self.wpe, "h": self.h, "ln_f": self.ln_f})

    def _embed(self, p, tokens_BT, positions_T):
        dt = _dtype(self.config.dtype)
        # Look rows up in a table gathered along 'embed' (as the tied LM head uses it anyway), so the
        # result comes out sharded like the tokens (batch) rather than along 'embed'.
        wte = constrain(p["wte"], ("vocab", None))
        return (wte[tokens_BT] + p["wpe"][positions_T][None]).astype(dt)

    def _head(self, p, x_BTD):
        cfg = self.config
        x = layer_norm(x_BTD, p["ln_f"])
        logits = jnp.einsum("btd,vd->btv", x, p["wte"].astype(x.dtype)).astype(jnp.float32)
        logits = constrain(logits, ("batch", "seq", "vocab"))
        real = jnp.arange(logits.shape[-1]) < cfg.vocab_size
        return jnp.where(real, logits, NEG_INF)

    def __call__(self, tokens_BT, *, deterministic: bool = True, return_hidden: bool = False):
        """Logits [B, T, padded_vocab] in fp32. With deterministic=False, dropout uses the
        'dropout' rng. return_hidden=True returns the final hidden states (before ln_f) instead."""
        cfg = self.config
        p = self._params()
        T = tokens_BT.shape[1]
        key = None
        if not deterministic and cfg.dropout > 0.0:
            key = self.make_rng("dropout")
        x = constrain(self._embed(p, tokens_BT, jnp.arange(T)), ("batch", "seq", "embed"))
        if key is not None:
            key, k0 = jax.random.split(key)
            x = _dropout(x, cfg.dropout, k0)

        def body(x, layer):
            lp, k = layer
            return constrain(block(lp, x, cfg=cfg, key=k), ("batch", "seq", "embed")), None

        if cfg.remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
        layer_keys = jax.random.split(key, cfg.n_layer) if key is not None else None
        if cfg.scan_layers:
            x, _ = jax.lax.scan(body, x, (p["h"], layer_keys))
        else:
            for i in range(cfg.n_layer):
                lp = jax.tree.map(lambda a: a[i], p["h"])
                x, _ = body(x, (lp, None if layer_keys is None else layer_keys[i]))
        if return_hidden:
            return x
        return self._head(p, x)

    def decode(self, tokens_BT, cache, pos):
        """Run new tokens at positions pos..pos+T-1 against `cache` (see init_cache).
        Returns (logits [B, T, padded_vocab] fp32, updated cache)."""
        cfg = self.config
        p = self._params()
        T = tokens_BT.shape[1]
        x = self._embed(p, tokens_BT, pos + jnp.arange(T))

        def body(x, layer):
            lp, kc, vc = layer
            x, (kc, vc) = block(lp, x, cfg=cfg, kv=(kc, vc), pos=pos)
            return x, (kc, vc)

        x, (k, v) = jax.lax.scan(body, x, (p["h"], cache["k"], cache["v"]))
        return self._head(p, x), {"k": k, "v": v}


def init_cache(cfg, batch: int, max_len: int | None = None, dtype=None) -> dict:
    """An empty key/value cache: {'k', 'v'} each [n_layer, batch, max_len, n_head, head_dim]."""
    max_len = max_len or cfg.block_size
    shape = (cfg.n_layer, batch, max_len, cfg.n_head, cfg.n_embd // cfg.n_head)
    dt = dtype or _dtype(cfg.dtype)
    return {"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)}


def init_params(cfg, key) -> dict:
    """GPT-2 initialised parameters as a plain pytree of arrays."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    return nn.unbox(GPT2(cfg).init(key, tokens)["params"])


def count_params(params, cfg, non_embedding: bool = False) -> int:
    """Parameter count excluding vocabulary padding (GPT-2's published counts). With non_embedding,
    the token and position embeddings are left out (Kaplan et al.'s N)."""
    total = sum(int(x.size) for x in jax.tree.leaves(params))
    total -= (params["wte"].shape[0] - cfg.vocab_size) * cfg.n_embd
    if non_embedding:
        total -= (cfg.vocab_size + cfg.block_size) * cfg.n_embd
    return total


def num_params(cfg, non_embedding: bool = False) -> int:
    """Parameter count of a model config, without building anything (vocabulary padding excluded;
    with non_embedding, the token and position tables left out too: Kaplan et al.'s N)."""
    import math as _m

    shapes = jax.tree.leaves(param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))
    total = sum(_m.prod(s) for s in shapes) - (padded_vocab(cfg) - cfg.vocab_size) * cfg.n_embd
    if non_embedding:
        total -= (cfg.vocab_size + cfg.block_size) * cfg.n_embd
    return int(total)


def cross_entropy(logits_BTV, targets_BT, mask_BT=None):
    """Mean next-token cross-entropy in fp32 (nats). mask_BT weights positions (1 = counted).

    Written as logsumexp(logits) - logit[target], which never materialises the log-probabilities
    (on CPU this form's forward+backward is about 1.5x faster than log_softmax + gather)."""
    logits = logits_BTV.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    nll = lse - jnp.take_along_axis(logits, targets_BT[..., None], axis=-1)[..., 0]
    if mask_BT is None:
        return nll.mean()
    mask_BT = mask_BT.astype(jnp.float32)
    return (nll * mask_BT).sum() / jnp.maximum(mask_BT.sum(), 1.0)
