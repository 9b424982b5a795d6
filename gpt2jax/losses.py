"""The language-model losses: the dense cross-entropy, two that never hold the [B, T, V] logits whole, and
`lm_loss`, the next-token loss of a model on a batch as the Trainer computes it.

    loss = cross_entropy(logits_BTV, targets_BT)                                   # dense logits
    loss = blockwise_cross_entropy(h_BTD, w_VD, targets_BT, vocab_size, block=2048)
    loss = fused_cross_entropy(h_BTD, w_VD, targets_BT, vocab_size, rows=256)
    loss = lm_loss(model, params, tokens, config=config, mesh=mesh)   # tokens [B, T + 1]: the Trainer's loss

The two without logits take h_BTD, the final hidden states AFTER the final LayerNorm, and w_VD, the head
matrix ([padded_vocab, D], the tied token embedding for GPT-2). Their result equals
`cross_entropy(h @ w.T, targets)` with rows >= vocab_size masked out, up to fp32 rounding.

How: the vocabulary is walked in blocks of `block` rows of w. For each block the [N, block] fp32
logits are formed, folded into a running (max, sum of exponentials) pair -- the online logsumexp --
and dropped, so the largest logit buffer alive is [N, block] (4 MB for 512 tokens x 2048), which
stays in cache, instead of [N, V] (103 MB for 512 tokens of GPT-2's vocabulary) that the dense head
writes once and the softmax and its backward read and write again. A custom VJP keeps autodiff from
saving every block: the forward pass saves only the per-token logsumexp; the backward pass
recomputes each block's logits and forms

    dL/dh = sum_v g (softmax_v - onehot_v) w_v,      dL/dw_v = sum_n g_n (softmax_nv - onehot_nv) h_n

block by block (the one-hot terms are a gather and a scatter-add, outside the loop). That is four
[N, D] x [D, V] matmuls instead of the dense head's three; the bet is that they run at the matmul
rate instead of at memory speed.

Padded vocabulary rows (index >= vocab_size) have their logits at -inf inside the loop, so they
never win the max, carry no probability and get exactly zero gradient. The last block starts at
V - block when V is not a multiple of `block` (dynamic_slice clamps), and the columns it shares with
the block before are masked the same way, so no copy of w is ever padded.

Numerics: the logits are accumulated in fp32 (preferred_element_type) whatever h's dtype; the
softmax and the loss are fp32.

Soft-capped logits (model.logit_softcap = C > 0): both take `softcap=C` and form each block's or chunk's
logits as C tanh(h w^T / C) before the softmax (padded columns masked after the cap); their gradients carry
the cap's slope 1 - tanh^2. With softcap=0 (the default) the code is the uncapped one, unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from gpt2jax import sharding as shd
from gpt2jax.model import head_weight, output_multiplier, softcap as _softcap
from gpt2jax.model_config import _nonnegative_float

DEFAULT_BLOCK = 2048


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


def _num_blocks(V: int, block: int) -> int:
    return -(-V // block)


def _capped(s, softcap: float):
    """(softcap * tanh(s / softcap), its slope d/ds) for softcap > 0; (s, None) for 0."""
    if not softcap:
        return s, None
    c = _softcap(s, softcap)
    return c, 1.0 - jnp.square(c / softcap)


def _block_logits(h_ND, w_VD, i, *, block: int, vocab_size: int, softcap: float = 0.0):
    """fp32 logits of vocabulary block i, [N, block] (soft-capped when softcap > 0), with padded and
    already-covered columns at -inf, the block's start row, the valid columns and the cap's slope
    (None without a cap)."""
    V = w_VD.shape[0]
    start = jnp.minimum(i * block, V - block)
    w_blk = jax.lax.dynamic_slice_in_dim(w_VD, start, block, axis=0).astype(h_ND.dtype)
    s = jax.lax.dot_general(
        h_ND, w_blk, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
    )
    s, slope = _capped(s, softcap)
    col = start + jnp.arange(block)
    valid = (col >= i * block) & (col < vocab_size)
    return jnp.where(valid[None, :], s, -jnp.inf), start, valid, slope


def _lse(h_ND, w_VD, vocab_size: int, block: int, softcap: float = 0.0):
    N = h_ND.shape[0]
    V = w_VD.shape[0]

    def body(i, carry):
        m, l = carry
        s, _, _, _ = _block_logits(h_ND, w_VD, i, block=block, vocab_size=vocab_size, softcap=softcap)
        m_new = jnp.maximum(m, s.max(axis=-1))
        l = l * jnp.exp(m - m_new) + jnp.exp(s - m_new[:, None]).sum(axis=-1)
        return m_new, l

    init = (jnp.full((N,), -jnp.inf, jnp.float32), jnp.zeros((N,), jnp.float32))
    m, l = jax.lax.fori_loop(0, _num_blocks(V, block), body, init)
    return m + jnp.log(l)


def _target_logit(h_ND, w_VD, t_N, softcap: float = 0.0):
    """The targets' logits [N] (soft-capped when softcap > 0) and the cap's slope there (None without)."""
    w_t = jnp.take(w_VD, t_N, axis=0).astype(h_ND.dtype)
    return _capped(jnp.einsum("nd,nd->n", h_ND, w_t, preferred_element_type=jnp.float32), softcap)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _nll(h_ND, w_VD, t_N, vocab_size: int, block: int, softcap: float):
    return _lse(h_ND, w_VD, vocab_size, block, softcap) - _target_logit(h_ND, w_VD, t_N, softcap)[0]


def _nll_fwd(h_ND, w_VD, t_N, vocab_size, block, softcap):
    lse = _lse(h_ND, w_VD, vocab_size, block, softcap)
    return lse - _target_logit(h_ND, w_VD, t_N, softcap)[0], (h_ND, w_VD, t_N, lse)


def _nll_bwd(vocab_size, block, softcap, res, g_N):
    h_ND, w_VD, t_N, lse = res
    V, D = w_VD.shape
    g_N = g_N.astype(jnp.float32)
    cdt = h_ND.dtype

    def body(i, carry):
        dh, dw = carry
        s, start, valid, slope = _block_logits(h_ND, w_VD, i, block=block, vocab_size=vocab_size, softcap=softcap)
        p = jnp.exp(s - lse[:, None]) * g_N[:, None]  # exactly 0 on masked columns
        if slope is not None:  # through the cap: d/d(raw logit)
            p = p * slope
        w_blk = jax.lax.dynamic_slice_in_dim(w_VD, start, block, axis=0).astype(cdt)
        dh = dh + jnp.dot(p.astype(cdt), w_blk, preferred_element_type=jnp.float32)
        dw_blk = jax.lax.dot_general(
            p.astype(cdt), h_ND, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
        )
        # Columns shared with the previous block are masked (p = 0 there): add, never overwrite.
        old = jax.lax.dynamic_slice_in_dim(dw, start, block, axis=0)
        dw = jax.lax.dynamic_update_slice_in_dim(dw, old + dw_blk, start, axis=0)
        return dh, dw

    init = (jnp.zeros(h_ND.shape, jnp.float32), jnp.zeros((V, D), jnp.float32))
    dh, dw = jax.lax.fori_loop(0, _num_blocks(V, block), body, init)
    # The one-hot part of softmax - onehot: a gather for dh and a scatter-add for dw.
    if softcap:  # the targets' logits through the cap
        g_N = g_N * _target_logit(h_ND, w_VD, t_N, softcap)[1]
    gh = g_N[:, None] * h_ND.astype(jnp.float32)
    dh = dh - g_N[:, None] * jnp.take(w_VD, t_N, axis=0).astype(jnp.float32)
    dw = dw.at[t_N].add(-gh)
    return dh.astype(h_ND.dtype), dw.astype(w_VD.dtype), None


_nll.defvjp(_nll_fwd, _nll_bwd)


def _check_softcap(softcap) -> float:
    """The cap as a float, checked as the config checks model.logit_softcap."""
    problem = _nonnegative_float(softcap)
    if problem:
        raise ValueError(f"softcap {problem}")
    return float(softcap)


def blockwise_nll(h_ND, w_VD, targets_N, vocab_size: int, block: int = DEFAULT_BLOCK, softcap: float = 0.0):
    """Per-token negative log-likelihood [N] (fp32) of targets under softmax(h @ w[:vocab_size].T),
    computed block by block over the vocabulary (see the module docstring); softcap > 0 caps the
    logits at softcap * tanh(logits / softcap) first."""
    V = w_VD.shape[0]
    if not 0 < vocab_size <= V:
        raise ValueError(f"vocab_size={vocab_size} must be in (0, {V}] (rows of the head matrix)")
    block = int(min(block, V))
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    return _nll(h_ND, w_VD, targets_N.astype(jnp.int32), int(vocab_size), block, _check_softcap(softcap))


def blockwise_cross_entropy(h_BTD, w_VD, targets_BT, vocab_size: int, mask_BT=None, block: int = DEFAULT_BLOCK,
                            softcap: float = 0.0):
    """Mean next-token cross-entropy in fp32 (nats), like `cross_entropy` of the head's
    logits, without ever holding them. mask_BT weights positions (1 = counted); softcap > 0: of the
    soft-capped logits."""
    B, T, D = h_BTD.shape
    nll = blockwise_nll(h_BTD.reshape(B * T, D), w_VD, targets_BT.reshape(B * T), vocab_size, block, softcap)
    if mask_BT is None:
        return nll.mean()
    m = mask_BT.reshape(B * T).astype(jnp.float32)
    return (nll * m).sum() / jnp.maximum(m.sum(), 1.0)


# ------------------------------------------------------------------------------ token-row fused
# The other way round: walk the *tokens* in chunks of `rows`, each against the whole vocabulary. A
# chunk's [rows, V] logits (51 MB for 256 x 50304 fp32) are formed once, and in the same pass turned
# into the loss AND both gradients -- dh = (softmax - onehot) @ w and dw += (softmax - onehot)^T @ h
# -- which the forward rule of a custom VJP saves; the backward rule only scales them by the incoming
# cotangent. That works because the function returns one scalar (a weighted sum of per-token losses
# whose weights are known in the forward pass), so the cotangent is a single number. Three matmuls and
# one exp per logit, no recompute, no [N, V] buffer beyond one chunk, and no transposed copy of it.
# Without differentiation (evaluation) the primal computes only the loss, chunk by chunk.


def _chunk_logits(h_RD, w_VD, vocab_size: int, softcap: float = 0.0):
    """A chunk's fp32 logits [R, V] (soft-capped when softcap > 0; padded columns -inf), the column
    indices and the cap's slope (None without a cap)."""
    s = jax.lax.dot_general(h_RD, w_VD.astype(h_RD.dtype), (((1,), (1,)), ((), ())),
                            preferred_element_type=jnp.float32)
    s, slope = _capped(s, softcap)
    col = jnp.arange(w_VD.shape[0])
    return jnp.where((col < vocab_size)[None, :], s, -jnp.inf), col, slope


def _chunks(h_ND, t_N, m_N, rows: int):
    N, D = h_ND.shape
    n = -(-N // rows)
    pad = n * rows - N
    if pad:  # padded tokens carry weight 0
        h_ND = jnp.pad(h_ND, ((0, pad), (0, 0)))
        t_N, m_N = jnp.pad(t_N, (0, pad)), jnp.pad(m_N, (0, pad))
    return h_ND.reshape(n, rows, D), t_N.reshape(n, rows), m_N.reshape(n, rows)


def _fused_loss(h_ND, w_VD, t_N, m_N, vocab_size: int, rows: int, softcap: float):
    hs, ts, ms = _chunks(h_ND, t_N, m_N, rows)

    def body(acc, c):
        h, t, m = c
        s, _, _ = _chunk_logits(h, w_VD, vocab_size, softcap)
        nll = jax.nn.logsumexp(s, axis=-1) - jnp.take_along_axis(s, t[:, None], axis=-1)[:, 0]
        return acc + jnp.sum(nll * m), None

    return jax.lax.scan(body, jnp.zeros((), jnp.float32), (hs, ts, ms))[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _fused(h_ND, w_VD, t_N, m_N, vocab_size: int, rows: int, softcap: float):
    return _fused_loss(h_ND, w_VD, t_N, m_N, vocab_size, rows, softcap)


def _fused_fwd(h_ND, w_VD, t_N, m_N, vocab_size, rows, softcap):
    N, D = h_ND.shape
    hs, ts, ms = _chunks(h_ND, t_N, m_N, rows)
    cdt = h_ND.dtype
    # Below fp32, dw is accumulated transposed ([D, V] = h^T g, see _transposed_copy) and turned
    # round once after the loop; the barrier keeps XLA from folding that transpose back into the dot.
    transposed = cdt != jnp.float32

    def body(carry, c):
        loss, dw = carry
        h, t, m = c
        s, col, slope = _chunk_logits(h, w_VD, vocab_size, softcap)
        mx = s.max(axis=-1, keepdims=True)
        e = jnp.exp(s - mx)
        z = e.sum(axis=-1, keepdims=True)
        lse = mx[:, 0] + jnp.log(z[:, 0])
        nll = lse - jnp.take_along_axis(s, t[:, None], axis=-1)[:, 0]
        # (softmax - onehot) * weight, in one elementwise pass over the chunk's logits
        g = (e / z - (col[None, :] == t[:, None]).astype(jnp.float32)) * m[:, None]
        if slope is not None:  # through the cap: d/d(raw logit)
            g = g * slope
        gc = g.astype(cdt)
        dh = jnp.dot(gc, w_VD.astype(cdt), preferred_element_type=jnp.float32)
        if transposed:
            dw = dw + jnp.dot(_transposed_copy(h).astype(cdt), gc, preferred_element_type=jnp.float32)
        else:
            dw = dw + jax.lax.dot_general(gc, h, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
        return (loss + jnp.sum(nll * m), dw), dh

    init = (jnp.zeros((), jnp.float32), jnp.zeros((D, w_VD.shape[0]) if transposed else w_VD.shape, jnp.float32))
    (loss, dw), dh = jax.lax.scan(body, init, (hs, ts, ms))
    if transposed:
        dw = jax.lax.optimization_barrier(dw).T
    dh = dh.reshape(-1, D)[:N]
    return loss, (dh.astype(h_ND.dtype), dw.astype(w_VD.dtype))


def _transposed_copy(x_RD):
    """x^T as a fresh row-major [D, R] array, made by a (tiny, exact) matmul with the identity: a plain
    transpose would be folded into the next dot as `contract over the leading axis`, a form XLA:CPU runs
    in bf16 by converting both operands to fp32 (dw = g^T h took 118 ms there against 50 ms as h^T @ g
    with h^T materialised; `experiments/matmul_rates.py`)."""
    eye = jnp.eye(x_RD.shape[1], dtype=jnp.float32)
    return jax.lax.dot_general(eye, x_RD.astype(jnp.float32), (((1,), (1,)), ((), ())),
                               preferred_element_type=jnp.float32)


def _fused_bwd(vocab_size, rows, softcap, res, g):
    dh, dw = res
    return (dh * g.astype(dh.dtype)), (dw * g.astype(dw.dtype)), None, None


_fused.defvjp(_fused_fwd, _fused_bwd)


def fused_cross_entropy(h_BTD, w_VD, targets_BT, vocab_size: int, mask_BT=None, rows: int = 256,
                        softcap: float = 0.0):
    """Mean next-token cross-entropy in fp32 (nats) of softmax(h @ w[:vocab_size].T), like
    `cross_entropy` of the head's logits, computed `rows` tokens at a time with the
    gradients formed in the forward pass (see above). mask_BT weights positions (1 = counted);
    softcap > 0: of the soft-capped logits softcap * tanh(h @ w.T / softcap)."""
    V = w_VD.shape[0]
    if not 0 < vocab_size <= V:
        raise ValueError(f"vocab_size={vocab_size} must be in (0, {V}] (rows of the head matrix)")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    softcap = _check_softcap(softcap)
    B, T, D = h_BTD.shape
    N = B * T
    m = jnp.ones((N,), jnp.float32) if mask_BT is None else mask_BT.reshape(N).astype(jnp.float32)
    m = m / jnp.maximum(m.sum(), 1.0)
    return _fused(h_BTD.reshape(N, D), w_VD, targets_BT.reshape(N).astype(jnp.int32),
                  jax.lax.stop_gradient(m), int(vocab_size), int(min(rows, N)), softcap)


def lm_loss(model, params, tokens, key=None, *, config, mesh):
    """The mean next-token cross-entropy (nats) of `model` (a gpt2jax.model.GPT2) on `tokens`, [B, T + 1]
    token ids: inputs tokens[:, :-1], targets tokens[:, 1:]. The loss the Trainer trains and evaluates:
    dense logits, or with config.train.loss_rows the fused and with loss_block the blockwise cross-entropy
    (the logits never held whole; each soft-capped by model.logit_softcap as the dense head is); dropout on
    when `key` (a PRNG key) is given; the activation layouts from config.mesh.rules on `mesh`. Call it
    inside jax.jit."""
    x, y = tokens[:, :-1], tokens[:, 1:]
    kw = {} if key is None else {"deterministic": False, "rngs": {"dropout": key}}
    block, rows = config.train.loss_block, config.train.loss_rows
    with shd.activation_context(config, mesh):  # activation layouts from mesh.rules
        if not (block or rows):
            return cross_entropy(model.apply({"params": params}, x, **kw), y)
        h = model.apply({"params": params}, x, return_hidden=True, **kw)
        m = model.config  # the frozen ModelConfig
        if m.mup:
            h = h * output_multiplier(m)
        cap = m.logit_softcap  # after the muP multiplier, as in model.head_logits
        if rows:
            return fused_cross_entropy(h, head_weight(params, m), y, m.vocab_size, rows=rows, softcap=cap)
        return blockwise_cross_entropy(h, head_weight(params, m), y, m.vocab_size, block=block, softcap=cap)
