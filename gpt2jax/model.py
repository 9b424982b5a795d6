"""GPT-2, exactly, and the common research variants: a functional Flax (linen) module whose parameters are a
plain pytree.

    model = GPT2(config.model)                                # a ConfigDict section or a ModelConfig
    params = model.init(key, tokens_BT)['params']             # or init_params(config.model, key)
    logits_BTV = model.apply({'params': params}, tokens_BT)   # [B, T, padded_vocab], float32

The default network is OpenAI's GPT-2: learned token + position embeddings, n_layer pre-LayerNorm blocks
(LayerNorm eps 1e-5, causal multi-head self-attention with biases, MLP 4x with tanh-GELU), a final LayerNorm
and the LM head tied to the token embedding. Init N(0, 0.02); the two residual output projections of each
block N(0, 0.02 / sqrt(2 * n_layer)); biases 0, LayerNorm scale 1.

One declaration per parameter. Each piece of the network below (`norm`, `attention`, `mlp`, the embeddings
and the head) has a `*_params(cfg)` function right beside the code that uses the parameters; it declares
every parameter once as a `ParamSpec`: shape, logical axes, initialiser, whether weight decay applies, its
muP role, and whether it is a lookup table. Everything else derives from that tree (`param_specs`):
shapes (`param_shapes`), logical axes (`param_axes`, used for sharding), initialisation, the weight-decay
mask and muP learning-rate scales (gpt2jax/optim.py), parameter and FLOP counts (`num_params`,
`matmul_params`), abstract shapes (`abstract_params`) and the memory planner. A new variant is a change here.

Parameter layout of the default model (used by checkpoints, conversion and sharding). L = n_layer,
D = n_embd, H = n_head, K = D / H, F = 4 D, V = padded vocabulary, P = block_size. Every per-layer array is
stacked along a leading `layers` axis:

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

Variants (config.model fields, all off by default): `norm='rmsnorm'` (scale only); `bias=False` (no biases
in linear layers or norms); `position='rope'` (rotary q/k, base `rope_base`; no wpe) or `'none'` (no
positions: causal attention alone); `mlp='swiglu'` (c_fc and c_gate [D, F'], c_proj [F', D] with
F' = 8D/3 rounded up to a multiple of 32, so the MLP keeps ~8 D^2 parameters like GPT-2's 4x GELU MLP);
`mlp='relu2'` (relu(x)^2 in place of GELU, the same 4x parameters); `tie_embeddings=False` (a separate head
`lm_head` [V, D]); `qk_norm=True` (q and k normalised per head, `attn/{q_norm,k_norm}/scale` [L, K]);
`parallel_block=True` (x + attn(ln_1(x)) + mlp(ln_1(x)), GPT-J/PaLM, no ln_2); `logit_softcap=C` (logits
C tanh(logits / C), in `head_logits` and the fused and blockwise losses; after muP's output multiplier);
`zero_init_proj=True` (the two residual output projections start at zero); `parametrization='mup'` (see
`mup_*` below).

Numerics: parameters in `param_dtype` (fp32), matmuls in `dtype` (bf16 on accelerators); norms, softmax
and the logits are fp32. Padded vocabulary logits are set to -1e9 so they never win in the loss or in
sampling.

Decoding: `init_cache` + `GPT2.decode` run the network on new tokens at position `pos` against a key/value
cache, giving the same logits as a full forward pass.

Looking inside: `model.apply(..., capture=True, mutable=['intermediates'])` also returns, under
`intermediates`, every layer's output hidden states (`h/out` [L, B, T, D]) and attention probabilities
(`h/attn_probs` [L, B, H, T, T]). Off by default; the default path runs the same code as without it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gpt2jax.model_config import MUP_DEFAULT_BASE_WIDTH, ModelConfig, padded_vocab  # noqa: F401  (re-exported)

LN_EPS = 1e-5
NEG_INF = -1e9  # logit of padded vocabulary rows and of masked attention scores

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


# ------------------------------------------------------------------------------ parameter specs
@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """Everything about one parameter, declared once.

    init: 'normal' (N(0, std^2)), 'zeros' or 'ones'. decay: AdamW weight decay applies. mup: its muP role
    (Tensor Programs V, Yang et al. 2022, table 3 with the output multiplier of its appendix): 'hidden'
    for matrices whose fan-in grows with width (init std and Adam lr scale as 1/sqrt(width_mult) and
    1/width_mult), 'vector' for embeddings, biases and gains (unchanged), 'output' for an untied head
    (unchanged: the logit multiplier 1/width_mult does the scaling). lookup: a table read by index, not
    multiplied (left out of FLOPs' N). vocab_rows: rows >= vocab_size start (and stay) zero. matrix: for a
    hidden weight matrix, (its input axes, its output axes) by logical name; every other axis ('layers', the
    q/k/v axis) indexes separate matrices. Muon orthogonalises exactly these (gpt2jax/optim.py); () = not a
    hidden matrix (embeddings, an untied head, biases, gains: AdamW's under optim.name='muon')."""

    shape: tuple
    axes: tuple
    init: str = "normal"
    std: float = 0.02
    decay: bool = False
    mup: str = "vector"
    lookup: bool = False
    vocab_rows: bool = False
    matrix: tuple = ()

    def stacked(self, n: int) -> "ParamSpec":
        """The same parameter for each of n layers, stacked along a leading 'layers' axis."""
        return dataclasses.replace(self, shape=(n,) + tuple(self.shape), axes=("layers",) + tuple(self.axes))

    def init_std(self, cfg: ModelConfig) -> float:
        if cfg.mup and self.mup == "hidden":
            return self.std * cfg.mup_hidden_init / math.sqrt(cfg.width_mult)
        return self.std

    def lr_scale(self, cfg: ModelConfig) -> float:
        if not cfg.mup:
            return 1.0
        return 1.0 / cfg.width_mult if self.mup == "hidden" else cfg.mup_vector_lr

    def matrix_axes(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(input axis indices, output axis indices) of a hidden matrix in this (possibly stacked) shape."""
        if not self.matrix:
            return None
        ins, outs = self.matrix
        return tuple(self.axes.index(a) for a in ins), tuple(self.axes.index(a) for a in outs)


def _kernel(shape, axes, inputs=("embed",), std=0.02):
    """A hidden weight matrix: decayed, muP 'hidden', and a matrix from its `inputs` axes to its other named axes
    (a None axis, like c_attn's q/k/v axis, indexes separate matrices)."""
    outputs = tuple(a for a in axes if a is not None and a not in inputs)
    return ParamSpec(tuple(shape), tuple(axes), std=std, decay=True, mup="hidden", matrix=(tuple(inputs), outputs))


def _bias(shape, axes):
    return ParamSpec(tuple(shape), tuple(axes), init="zeros")


def _out_proj(cfg: ModelConfig, shape, axes, inputs):
    """A residual output projection (attn/c_proj, mlp/c_proj): N(0, 0.02 / sqrt(2 n_layer)), or zeros with
    zero_init_proj (still a decayed muP 'hidden' matrix; only its initial value changes)."""
    spec = _kernel(shape, axes, inputs, 0.02 / math.sqrt(2 * cfg.n_layer))
    return dataclasses.replace(spec, init="zeros") if cfg.zero_init_proj else spec


def _is_spec(x) -> bool:
    return isinstance(x, ParamSpec)


def _dtype(name: str):
    return jnp.dtype(name)


def constrain(x, names: tuple):
    """Name an activation's axes logically (e.g. ('batch', 'seq', 'embed')). A no-op unless the caller
    set flax logical-axis rules and a mesh (gpt2jax.sharding.activation_context, used by the trainer);
    then XLA is told to lay the activation out as config.mesh.rules say."""
    if not nn.get_logical_axis_rules():
        return x
    return nn.with_logical_constraint(x, names)


# ------------------------------------------------------------------------------------------ norm
def norm_params(cfg: ModelConfig, dim: int, axis: str = "embed", bias: bool | None = None) -> dict:
    p = {"scale": ParamSpec((dim,), (axis,), init="ones")}
    if cfg.norm == "layernorm" and (cfg.bias if bias is None else bias):
        p["bias"] = _bias((dim,), (axis,))
    return p


def norm(x, p, cfg: ModelConfig):
    """LayerNorm (eps 1e-5) or RMSNorm over the last axis, in fp32, returned in x's dtype."""
    xf = x.astype(jnp.float32)
    if cfg.norm == "rmsnorm":
        y = xf * jax.lax.rsqrt(jnp.square(xf).mean(-1, keepdims=True) + LN_EPS)
    else:
        mean = xf.mean(-1, keepdims=True)
        var = jnp.square(xf - mean).mean(-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + LN_EPS)
    y = y * p["scale"].astype(jnp.float32)
    if "bias" in p:
        y = y + p["bias"].astype(jnp.float32)
    return y.astype(x.dtype)


# ------------------------------------------------------------------------------------- attention
def attention_params(cfg: ModelConfig) -> dict:
    D, H, K = cfg.n_embd, cfg.n_head, cfg.head_dim
    p = {
        "c_attn": {"kernel": _kernel((D, 3, H, K), ("embed", None, "heads", "head_dim"))},
        "c_proj": {"kernel": _out_proj(cfg, (H, K, D), ("heads", "head_dim", "embed"), ("heads", "head_dim"))},
    }
    if cfg.bias:
        p["c_attn"]["bias"] = _bias((3, H, K), (None, "heads", "head_dim"))
        p["c_proj"]["bias"] = _bias((D,), ("embed",))
    if cfg.qk_norm:
        p["q_norm"] = norm_params(cfg, K, "head_dim", bias=False)
        p["k_norm"] = norm_params(cfg, K, "head_dim", bias=False)
    return p


def attention_scale(cfg: ModelConfig) -> float | None:
    """Score scale: 1/sqrt(K) (None = jax's default); under muP sqrt(K0)/K with K0 the head size at the
    base width (attention ~ 1/d_head, TP5 section 6; equal to 1/sqrt(K) at the base width), unless
    mup_attention='sqrt' keeps SP's 1/sqrt(K) (an ablation)."""
    if not cfg.mup or cfg.mup_attention == "sqrt":
        return None
    k0 = cfg.mup_base_width / cfg.n_head
    return math.sqrt(k0) / cfg.head_dim


def rope(x_BTHK, positions_T, base: float):
    """Rotary position embedding (Su et al. 2021), rotate-half convention, in fp32."""
    K = x_BTHK.shape[-1]
    inv = 1.0 / (base ** (jnp.arange(0, K // 2, dtype=jnp.float32) * 2.0 / K))
    ang = positions_T.astype(jnp.float32)[:, None] * inv[None]  # [T, K/2]
    cos, sin = jnp.cos(ang)[None, :, None], jnp.sin(ang)[None, :, None]
    xf = x_BTHK.astype(jnp.float32)
    x1, x2 = xf[..., : K // 2], xf[..., K // 2 :]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x_BTHK.dtype)


def _sdpa(q_BTHK, k_BSHK, v_BSHK, mask_BTS, *, cfg: ModelConfig, dropout_key, capture):
    """Scaled dot-product attention. mask True = may attend. fp32 softmax. With capture, also returns the
    attention probabilities [B, H, T, S]."""
    scale = attention_scale(cfg)
    use_dropout = dropout_key is not None and cfg.dropout > 0.0
    if not use_dropout and not capture:
        impl = "cudnn" if cfg.attention == "cudnn" else "xla"
        if mask_BTS is None:
            return jax.nn.dot_product_attention(
                q_BTHK, k_BSHK, v_BSHK, is_causal=True, scale=scale, implementation=impl
            ), None
        return jax.nn.dot_product_attention(
            q_BTHK, k_BSHK, v_BSHK, mask=mask_BTS[:, None], scale=scale, implementation=impl
        ), None
    # Dropout and capture need the probabilities, so this path spells attention out (XLA only).
    T, S = q_BTHK.shape[1], k_BSHK.shape[1]
    if mask_BTS is None:
        mask_BTS = jnp.tril(jnp.ones((T, S), bool))[None]
    scores = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BSHK).astype(jnp.float32)
    scores = scores * (scale if scale is not None else 1.0 / math.sqrt(q_BTHK.shape[-1]))
    scores = jnp.where(mask_BTS[:, None], scores, NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1)
    kept = probs
    if use_dropout:
        keep = jax.random.bernoulli(dropout_key, 1.0 - cfg.dropout, probs.shape)
        kept = jnp.where(keep, probs / (1.0 - cfg.dropout), 0.0)
    y = jnp.einsum("bhts,bshk->bthk", kept.astype(v_BSHK.dtype), v_BSHK)
    return y, probs


def attention(p, h_BTD, positions_T, *, cfg: ModelConfig, key=None, kv=None, pos=None, capture=False):
    """Causal self-attention on one layer's parameters. kv: optional (k_cache, v_cache) [B, S, H, K] for
    decoding at position `pos`. Returns (y_BTD, kv, attention probabilities or None)."""
    dt = h_BTD.dtype
    qkv = jnp.einsum("btd,dchk->cbthk", h_BTD, p["c_attn"]["kernel"].astype(dt))
    if "bias" in p["c_attn"]:
        qkv = qkv + p["c_attn"]["bias"].astype(dt)[:, None, None]
    q, k, v = qkv[0], qkv[1], qkv[2]
    if cfg.qk_norm:
        q, k = norm(q, p["q_norm"], cfg), norm(k, p["k_norm"], cfg)
    if cfg.position == "rope":
        q, k = rope(q, positions_T, cfg.rope_base), rope(k, positions_T, cfg.rope_base)
    mask = None
    if kv is not None:
        k_cache, v_cache = kv
        k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), pos, axis=1)
        v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), pos, axis=1)
        T, S = q.shape[1], k_cache.shape[1]
        mask = (jnp.arange(S)[None, :] <= pos + jnp.arange(T)[:, None])[None]
        k, v = k_cache.astype(dt), v_cache.astype(dt)
        kv = (k_cache, v_cache)
    y, probs = _sdpa(q, k, v, mask, cfg=cfg, dropout_key=key, capture=capture)
    y = jnp.einsum("bthk,hkd->btd", y, p["c_proj"]["kernel"].astype(dt))
    if "bias" in p["c_proj"]:
        y = y + p["c_proj"]["bias"].astype(dt)
    return y, kv, probs


# ------------------------------------------------------------------------------------------- mlp
def mlp_params(cfg: ModelConfig) -> dict:
    D, F = cfg.n_embd, cfg.mlp_hidden
    p = {
        "c_fc": {"kernel": _kernel((D, F), ("embed", "mlp"))},
        "c_proj": {"kernel": _out_proj(cfg, (F, D), ("mlp", "embed"), ("mlp",))},
    }
    if cfg.mlp == "swiglu":
        p["c_gate"] = {"kernel": _kernel((D, F), ("embed", "mlp"))}
    if cfg.bias:
        for name in p:
            p[name]["bias"] = _bias((D,), ("embed",)) if name == "c_proj" else _bias((F,), ("mlp",))
    return p


def _linear(x, p):
    y = x @ p["kernel"].astype(x.dtype)
    return y + p["bias"].astype(x.dtype) if "bias" in p else y


def gelu(x):
    return jax.nn.gelu(x, approximate=True)


def relu2(x):
    """relu(x)^2 (So et al. 2021, Primer; the NanoGPT speedrun's MLP activation)."""
    return jnp.square(jax.nn.relu(x))


def mlp(p, h_BTD, *, cfg: ModelConfig):
    if cfg.mlp == "swiglu":
        h = jax.nn.silu(_linear(h_BTD, p["c_gate"])) * _linear(h_BTD, p["c_fc"])
    elif cfg.mlp == "relu2":
        h = relu2(_linear(h_BTD, p["c_fc"]))
    else:
        h = gelu(_linear(h_BTD, p["c_fc"]))
    return _linear(h, p["c_proj"])


# ----------------------------------------------------------------------------------------- block
def block_params(cfg: ModelConfig) -> dict:
    """One layer's parameters (unstacked)."""
    p = {"ln_1": norm_params(cfg, cfg.n_embd), "attn": attention_params(cfg), "mlp": mlp_params(cfg)}
    if not cfg.parallel_block:
        p["ln_2"] = norm_params(cfg, cfg.n_embd)
    return p


def _dropout(x, rate, key):
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def block(p, x_BTD, *, cfg: ModelConfig, key=None, kv=None, pos=None, positions_T=None, capture=False):
    """One transformer block on one layer's parameters `p`.

    key: dropout key (None = deterministic). kv: optional (k_cache_BSHK, v_cache_BSHK) for decoding at
    position `pos`; then returns (x, (k_cache, v_cache)) with the new keys/values written in. With
    capture, returns (x, kv, attention probabilities)."""
    if positions_T is None:
        positions_T = (0 if pos is None else pos) + jnp.arange(x_BTD.shape[1])
    keys = list(jax.random.split(key, 3)) if key is not None else [None] * 3
    h = norm(x_BTD, p["ln_1"], cfg)
    y, kv, probs = attention(p["attn"], h, positions_T, cfg=cfg, key=keys[0], kv=kv, pos=pos, capture=capture)
    if cfg.parallel_block:
        x_BTD = x_BTD + _dropout(y, cfg.dropout, keys[1]) + _dropout(mlp(p["mlp"], h, cfg=cfg), cfg.dropout, keys[2])
    else:
        x_BTD = x_BTD + _dropout(y, cfg.dropout, keys[1])
        h = norm(x_BTD, p["ln_2"], cfg)
        x_BTD = x_BTD + _dropout(mlp(p["mlp"], h, cfg=cfg), cfg.dropout, keys[2])
    if capture:
        return x_BTD, kv, probs
    return x_BTD if kv is None else (x_BTD, kv)


# ------------------------------------------------------------------------------ embeddings, head
def embedding_params(cfg: ModelConfig) -> dict:
    V, D = cfg.padded_vocab, cfg.n_embd
    p = {"wte": ParamSpec((V, D), ("vocab", "embed"), decay=True, lookup=not cfg.tie_embeddings, vocab_rows=True)}
    if cfg.position == "learned":
        p["wpe"] = ParamSpec((cfg.block_size, D), (None, "embed"), decay=True, lookup=True)
    return p


def head_params(cfg: ModelConfig) -> dict:
    p = {"ln_f": norm_params(cfg, cfg.n_embd)}
    if not cfg.tie_embeddings:
        p["lm_head"] = ParamSpec(
            (cfg.padded_vocab, cfg.n_embd), ("vocab", "embed"), decay=True, mup="output", vocab_rows=True
        )
    return p


def head_weight(params, cfg) -> jax.Array:
    """The [padded_vocab, D] matrix the logits are computed with (wte when tied, else lm_head)."""
    return params["wte"] if ModelConfig.of(cfg).tie_embeddings else params["lm_head"]


def output_multiplier(cfg) -> float:
    """The logits' multiplier: 1 under SP, mup_output_mult / width_mult under muP (TP5 appendix, tied heads
    included; mup_output_mult is the base width's, 1 by default)."""
    m = ModelConfig.of(cfg)
    return m.mup_output_mult / m.width_mult if m.mup else 1.0


def softcap(logits, cap: float):
    """cap * tanh(logits / cap): the logits bounded by +-cap, near the identity well inside (logit_softcap;
    Gemma 2, the NanoGPT speedrun). Its slope is 1 - (result / cap)^2."""
    return cap * jnp.tanh(logits / cap)


def head_logits(params, x_BTD, cfg) -> jax.Array:
    """Logits [B, T, padded_vocab] in fp32 from hidden states after the final norm (the forward pass's
    `return_hidden=True` output, or any [B, T, D] selection of it, e.g. the scorer's scored positions):
    their product with head_weight(), times output_multiplier() under muP, then soft-capped when
    logit_softcap > 0, padded columns at NEG_INF."""
    cfg = ModelConfig.of(cfg)
    logits = jnp.einsum("btd,vd->btv", x_BTD, head_weight(params, cfg).astype(x_BTD.dtype)).astype(jnp.float32)
    if cfg.mup:
        logits = logits * output_multiplier(cfg)
    if cfg.logit_softcap:
        logits = softcap(logits, cfg.logit_softcap)
    logits = constrain(logits, ("batch", "seq", "vocab"))
    real = jnp.arange(logits.shape[-1]) < cfg.vocab_size
    return jnp.where(real, logits, NEG_INF)


def param_specs(cfg) -> dict:
    """The declaration of every parameter: a tree of ParamSpec shaped like the parameters. The top-level
    order (wte, wpe, h, ln_f, lm_head) is the order parameters are created in."""
    cfg = ModelConfig.of(cfg)
    emb, head = embedding_params(cfg), head_params(cfg)
    layer = jax.tree.map(lambda s: s.stacked(cfg.n_layer), block_params(cfg), is_leaf=_is_spec)
    tree = {"wte": emb["wte"]}
    if "wpe" in emb:
        tree["wpe"] = emb["wpe"]
    tree["h"] = layer
    tree.update(head)
    return tree


def param_shapes(cfg) -> dict:
    """Shapes of every parameter, as a tree shaped like the parameters."""
    return jax.tree.map(lambda s: tuple(s.shape), param_specs(cfg), is_leaf=_is_spec)


def param_axes(cfg) -> dict:
    """The logical axis names of every parameter, as a tree shaped like the parameters."""
    return jax.tree.map(lambda s: tuple(s.axes), param_specs(cfg), is_leaf=_is_spec)


def abstract_params(cfg) -> dict:
    """ShapeDtypeStructs of every parameter (nothing is computed or compiled)."""
    cfg = ModelConfig.of(cfg)
    dt = _dtype(cfg.param_dtype)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(tuple(s.shape), dt), param_specs(cfg), is_leaf=_is_spec)


def _init_leaf(spec: ParamSpec, dtype, key, cfg: ModelConfig):
    if spec.init == "ones":
        return jnp.ones(spec.shape, dtype)
    if spec.init == "zeros":
        return jnp.zeros(spec.shape, dtype)
    w = spec.init_std(cfg) * jax.random.normal(key, spec.shape, jnp.float32)
    if spec.vocab_rows:  # padded vocabulary rows start at zero
        w = jnp.where(jnp.arange(spec.shape[0])[:, None] < cfg.vocab_size, w, 0.0)
    return w.astype(dtype)


def _init_group(specs, cfg: ModelConfig, rng):
    """Initialise one top-level group: one key per leaf (in the tree's flattening order), each leaf
    boxed with its logical axes."""
    leaves, treedef = jax.tree_util.tree_flatten(specs, is_leaf=_is_spec)
    keys = jax.random.split(rng, len(leaves))
    pdt = _dtype(cfg.param_dtype)
    boxes = [nn.LogicallyPartitioned(_init_leaf(s, pdt, k, cfg), tuple(s.axes)) for s, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, boxes)


# ------------------------------------------------------------------------------------- the model
class GPT2(nn.Module):
    """GPT-2. `config` is a ModelConfig (gpt2jax/model_config.py) or the `model` section of a gpt2jax config,
    converted once here; the layers below get the ModelConfig."""

    config: Any

    def __post_init__(self):
        object.__setattr__(self, "config", ModelConfig.of(self.config))
        super().__post_init__()

    def setup(self):
        specs = param_specs(self.config)
        self._names = tuple(specs)
        for name, group in specs.items():
            setattr(self, name, self.param(name, lambda rng, g=group: _init_group(g, self.config, rng)))

    def _params(self):
        return nn.unbox({name: getattr(self, name) for name in self._names})

    def _embed(self, p, tokens_BT, positions_T):
        dt = _dtype(self.config.dtype)
        # Look rows up in a table gathered along 'embed' (as the tied LM head uses it anyway), so the
        # result comes out sharded like the tokens (batch) rather than along 'embed'.
        wte = constrain(p["wte"], ("vocab", None))
        x = wte[tokens_BT]
        if "wpe" in p:
            x = x + p["wpe"][positions_T][None]
        return x.astype(dt)

    def _final(self, p, x_BTD):
        return norm(x_BTD, p["ln_f"], self.config)

    def _head(self, p, x_BTD):
        return head_logits(p, self._final(p, x_BTD), self.config)

    def __call__(self, tokens_BT, *, deterministic: bool = True, return_hidden: bool = False, capture: bool = False):
        """Logits [B, T, padded_vocab] in fp32. With deterministic=False, dropout uses the 'dropout' rng.
        return_hidden=True returns the head's input instead: the hidden states after the final norm (the
        logits are their product with head_weight(), times output_multiplier(), soft-capped by
        logit_softcap when set: `head_logits`). capture=True sows
        per-layer outputs and attention probabilities into 'intermediates' (see the module docstring)."""
        cfg = self.config
        p = self._params()
        T = tokens_BT.shape[1]
        positions = jnp.arange(T)
        key = None
        if not deterministic and cfg.dropout > 0.0:
            key = self.make_rng("dropout")
        x = constrain(self._embed(p, tokens_BT, positions), ("batch", "seq", "embed"))
        if key is not None:
            key, k0 = jax.random.split(key)
            x = _dropout(x, cfg.dropout, k0)

        def body(x, layer):
            lp, k = layer
            if capture:
                x, _, probs = block(lp, x, cfg=cfg, key=k, positions_T=positions, capture=True)
                x = constrain(x, ("batch", "seq", "embed"))
                return x, (x, probs)
            return constrain(block(lp, x, cfg=cfg, key=k, positions_T=positions), ("batch", "seq", "embed")), None

        if cfg.remat != "none":
            body = jax.checkpoint(body, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
        layer_keys = jax.random.split(key, cfg.n_layer) if key is not None else None
        if cfg.scan_layers:
            x, seen = jax.lax.scan(body, x, (p["h"], layer_keys))
        else:
            outs = []
            for i in range(cfg.n_layer):
                lp = jax.tree.map(lambda a: a[i], p["h"])
                x, o = body(x, (lp, None if layer_keys is None else layer_keys[i]))
                outs.append(o)
            seen = jax.tree.map(lambda *a: jnp.stack(a), *outs) if capture else None
        if capture:
            self.sow("intermediates", "h/out", seen[0])
            self.sow("intermediates", "h/attn_probs", seen[1])
        if return_hidden:
            return self._final(p, x)
        return self._head(p, x)

    def decode(self, tokens_BT, cache, pos):
        """Run new tokens at positions pos..pos+T-1 against `cache` (see init_cache).
        Returns (logits [B, T, padded_vocab] fp32, updated cache)."""
        cfg = self.config
        p = self._params()
        T = tokens_BT.shape[1]
        positions = pos + jnp.arange(T)
        x = self._embed(p, tokens_BT, positions)

        def body(x, layer):
            lp, kc, vc = layer
            x, (kc, vc) = block(lp, x, cfg=cfg, kv=(kc, vc), pos=pos, positions_T=positions)
            return x, (kc, vc)

        x, (k, v) = jax.lax.scan(body, x, (p["h"], cache["k"], cache["v"]))
        return self._head(p, x), {"k": k, "v": v}


def init_cache(cfg, batch: int, max_len: int | None = None, dtype=None) -> dict:
    """An empty key/value cache: {'k', 'v'} each [n_layer, batch, max_len, n_head, head_dim]."""
    cfg = ModelConfig.of(cfg)
    max_len = max_len or cfg.block_size
    shape = (cfg.n_layer, batch, max_len, cfg.n_head, cfg.head_dim)
    dt = dtype or _dtype(cfg.dtype)
    return {"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)}


def init_params(cfg, key) -> dict:
    """Initialised parameters as a plain pytree of arrays."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    return nn.unbox(GPT2(cfg).init(key, tokens)["params"])


# ---------------------------------------------------------------------------------------- counts
def _spec_leaves(cfg):
    return jax.tree_util.tree_flatten_with_path(param_specs(cfg), is_leaf=_is_spec)[0]


def _real_size(spec: ParamSpec, cfg: ModelConfig) -> int:
    """Elements of a parameter without its padded vocabulary rows."""
    n = math.prod(spec.shape)
    if spec.vocab_rows:
        n = n // spec.shape[0] * cfg.vocab_size
    return n


def num_params(cfg, non_embedding: bool = False) -> int:
    """Parameter count of a model config, without building anything (vocabulary padding excluded). With
    non_embedding, the token and position tables are left out too (Kaplan et al.'s N; an untied head
    counts, as it is a matmul)."""
    cfg = ModelConfig.of(cfg)
    total = 0
    for path, spec in _spec_leaves(cfg):
        if non_embedding and path[0].key in ("wte", "wpe"):
            continue
        total += _real_size(spec, cfg)
    return int(total)


def matmul_params(cfg) -> int:
    """N of FLOPs per token (PaLM appendix B): every parameter but lookup tables (the position table, an
    untied token table) and vocabulary padding; a tied LM head is counted once."""
    cfg = ModelConfig.of(cfg)
    return int(sum(_real_size(s, cfg) for _, s in _spec_leaves(cfg) if not s.lookup))


def count_params(params, cfg, non_embedding: bool = False) -> int:
    """Parameter count of a parameter tree (its leaves may be ShapeDtypeStructs); see num_params."""
    cfg = ModelConfig.of(cfg)
    specs = param_specs(cfg)
    got = jax.tree.map(lambda x: tuple(x.shape), params)
    want = jax.tree.map(lambda s: tuple(s.shape), specs, is_leaf=_is_spec)
    if got != want:
        raise ValueError("count_params: the parameters do not match the model config's declaration")
    return num_params(cfg, non_embedding)
