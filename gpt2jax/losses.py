"""Cross-entropy over the LM head without materialising the [B, T, V] logits.

    loss = blockwise_cross_entropy(h_BTD, w_VD, targets_BT, vocab_size, block=2048)

h_BTD: final hidden states AFTER the final LayerNorm; w_VD: the head matrix ([padded_vocab, D], the
tied token embedding for GPT-2). The result equals `gpt2jax.model.cross_entropy(h @ w.T, targets)`
with rows >= vocab_size masked out, up to fp32 rounding.

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
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

DEFAULT_BLOCK = 2048


def _num_blocks(V: int, block: int) -> int:
    return -(-V // block)


def _block_logits(h_ND, w_VD, i, *, block: int, vocab_size: int):
    """fp32 logits of vocabulary block i, [N, block], with padded and already-covered columns at
    -inf, and the block's start row."""
    V = w_VD.shape[0]
    start = jnp.minimum(i * block, V - block)
    w_blk = jax.lax.dynamic_slice_in_dim(w_VD, start, block, axis=0).astype(h_ND.dtype)
    s = jax.lax.dot_general(
        h_ND, w_blk, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32
    )
    col = start + jnp.arange(block)
    valid = (col >= i * block) & (col < vocab_size)
    return jnp.where(valid[None, :], s, -jnp.inf), start, valid


def _lse(h_ND, w_VD, vocab_size: int, block: int):
    N = h_ND.shape[0]
    V = w_VD.shape[0]

    def body(i, carry):
        m, l = carry
        s, _, _ = _block_logits(h_ND, w_VD, i, block=block, vocab_size=vocab_size)
        m_new = jnp.maximum(m, s.max(axis=-1))
        l = l * jnp.exp(m - m_new) + jnp.exp(s - m_new[:, None]).sum(axis=-1)
        return m_new, l

    init = (jnp.full((N,), -jnp.inf, jnp.float32), jnp.zeros((N,), jnp.float32))
    m, l = jax.lax.fori_loop(0, _num_blocks(V, block), body, init)
    return m + jnp.log(l)


def _target_logit(h_ND, w_VD, t_N):
    w_t = jnp.take(w_VD, t_N, axis=0).astype(h_ND.dtype)
    return jnp.einsum("nd,nd->n", h_ND, w_t, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _nll(h_ND, w_VD, t_N, vocab_size: int, block: int):
    return _lse(h_ND, w_VD, vocab_size, block) - _target_logit(h_ND, w_VD, t_N)


def _nll_fwd(h_ND, w_VD, t_N, vocab_size, block):
    lse = _lse(h_ND, w_VD, vocab_size, block)
    return lse - _target_logit(h_ND, w_VD, t_N), (h_ND, w_VD, t_N, lse)


def _nll_bwd(vocab_size, block, res, g_N):
    h_ND, w_VD, t_N, lse = res
    V, D = w_VD.shape
    g_N = g_N.astype(jnp.float32)
    cdt = h_ND.dtype

    def body(i, carry):
        dh, dw = carry
        s, start, valid = _block_logits(h_ND, w_VD, i, block=block, vocab_size=vocab_size)
        p = jnp.exp(s - lse[:, None]) * g_N[:, None]  # exactly 0 on masked columns
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
    gh = g_N[:, None] * h_ND.astype(jnp.float32)
    dh = dh - g_N[:, None] * jnp.take(w_VD, t_N, axis=0).astype(jnp.float32)
    dw = dw.at[t_N].add(-gh)
    return dh.astype(h_ND.dtype), dw.astype(w_VD.dtype), None


_nll.defvjp(_nll_fwd, _nll_bwd)


def blockwise_nll(h_ND, w_VD, targets_N, vocab_size: int, block: int = DEFAULT_BLOCK):
    """Per-token negative log-likelihood [N] (fp32) of targets under softmax(h @ w[:vocab_size].T),
    computed block by block over the vocabulary (see the module docstring)."""
    V = w_VD.shape[0]
    if not 0 < vocab_size <= V:
        raise ValueError(f"vocab_size={vocab_size} must be in (0, {V}] (rows of the head matrix)")
    block = int(min(block, V))
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    return _nll(h_ND, w_VD, targets_N.astype(jnp.int32), int(vocab_size), block)


def blockwise_cross_entropy(h_BTD, w_VD, targets_BT, vocab_size: int, mask_BT=None, block: int = DEFAULT_BLOCK):
    """Mean next-token cross-entropy in fp32 (nats), like `gpt2jax.model.cross_entropy` of the head's
    logits, without ever holding them. mask_BT weights positions (1 = counted)."""
    B, T, D = h_BTD.shape
    nll = blockwise_nll(h_BTD.reshape(B * T, D), w_VD, targets_BT.reshape(B * T), vocab_size, block)
    if mask_BT is None:
        return nll.mean()
    m = mask_BT.reshape(B * T).astype(jnp.float32)
    return (nll * m).sum() / jnp.maximum(m.sum(), 1.0)
