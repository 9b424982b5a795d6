"""gpt2jax.losses: the blockwise and fused cross-entropies against the dense head + cross_entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2jax.losses import blockwise_cross_entropy, cross_entropy, fused_cross_entropy
from gpt2jax.model import NEG_INF

B, T, D = 4, 64, 32
VOCAB, PADDED = 1000, 1024


def _inputs(seed=0, pad_value=0.0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    h = jax.random.normal(k1, (B, T, D), jnp.float32)
    w = 0.5 * jax.random.normal(k2, (PADDED, D), jnp.float32)
    # Padded rows that would win every softmax and take gradient if they were not masked.
    w = w.at[VOCAB:].set(pad_value)
    t = jax.random.randint(k3, (B, T), 0, VOCAB)
    return h, w, t


def _dense(h, w, t, mask=None):
    logits = jnp.einsum("btd,vd->btv", h, w)
    logits = jnp.where(jnp.arange(PADDED) < VOCAB, logits, NEG_INF)
    return cross_entropy(logits, t, mask)


def _loss_fn(kind, size, t, mask):
    if kind == "block":
        return lambda h, w: blockwise_cross_entropy(h, w, t, VOCAB, mask, block=size)
    return lambda h, w: fused_cross_entropy(h, w, t, VOCAB, mask, rows=size)


# block 300 does not divide 1024: the last vocabulary block overlaps the one before it; rows 100 does not
# divide the 256 tokens: the last token chunk is padded with weight-0 tokens.
@pytest.mark.parametrize("kind,size", [("block", 128), ("block", 300), ("block", 1024), ("block", 4096),
                                       ("fused", 64), ("fused", 100), ("fused", 256), ("fused", 1000)])
def test_matches_dense_values_and_gradients(kind, size):
    h, w, t = _inputs(pad_value=3.0)
    mask = (jnp.arange(T) % 3 != 0).astype(jnp.float32)[None].repeat(B, 0)
    fn = _loss_fn(kind, size, t, mask)
    ref = lambda h, w: _dense(h, w, t, mask)  # noqa: E731
    (l1, (gh1, gw1)) = jax.value_and_grad(fn, argnums=(0, 1))(h, w)
    (l0, (gh0, gw0)) = jax.value_and_grad(ref, argnums=(0, 1))(h, w)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(fn)(h, w), l0, rtol=1e-5)  # the primal (no gradient) path
    np.testing.assert_allclose(gh1, gh0, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gw1, gw0, rtol=1e-4, atol=1e-7)
    # Padded rows: exactly no gradient, though they hold large values.
    assert np.all(np.asarray(gw1[VOCAB:]) == 0.0)
    assert np.any(np.asarray(gw1[:VOCAB]) != 0.0)
    # A scaled cotangent scales both gradients (the fused loss forms them for a cotangent of 1).
    g2 = jax.grad(lambda h, w: 2.5 * fn(h, w), argnums=(0, 1))(h, w)
    np.testing.assert_allclose(g2[1], 2.5 * gw0, rtol=1e-4, atol=1e-7)


def test_padded_rows_never_win():
    h, w, t = _inputs(pad_value=0.0)
    # Make one padded row dominate every token's logits: the loss must not change.
    w_bad = w.at[PADDED - 1].set(100.0 * jnp.sign(h.reshape(-1, D).mean(0)))
    a = blockwise_cross_entropy(h, w, t, VOCAB, block=256)
    b = blockwise_cross_entropy(h, w_bad, t, VOCAB, block=256)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(a, _dense(h, w, t), rtol=1e-5)


def test_bf16_hidden_states_close_to_fp32():
    h, w, t = _inputs()
    l32 = blockwise_cross_entropy(h, w, t, VOCAB, block=256)
    g = jax.grad(lambda h: blockwise_cross_entropy(h, w, t, VOCAB, block=256))(h.astype(jnp.bfloat16))
    l16 = blockwise_cross_entropy(h.astype(jnp.bfloat16), w, t, VOCAB, block=256)
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(float(l16), float(l32), rtol=2e-2)


@pytest.mark.parametrize("rows", [64, 256])  # 4 chunks; 1 chunk (XLA drops a 1-trip loop)
def test_fused_bf16_matches_dense_on_the_rounded_inputs(rows):
    """Below fp32 the fused loss accumulates dw transposed (a different dot layout): values and both
    gradients equal the fp32 dense loss of the bf16-rounded h and w, to bf16 precision of the softmax
    gradient; padded rows still get exactly zero."""
    h, w, t = _inputs(pad_value=3.0)
    h16 = h.astype(jnp.bfloat16)
    fn = jax.jit(jax.value_and_grad(lambda h, w: fused_cross_entropy(h, w, t, VOCAB, rows=rows), argnums=(0, 1)))
    l1, (gh1, gw1) = fn(h16, w)
    l0, (gh0, gw0) = jax.value_and_grad(lambda h, w: _dense(h, w, t), argnums=(0, 1))(
        h16.astype(jnp.float32), w.astype(jnp.bfloat16).astype(jnp.float32))
    assert gh1.dtype == jnp.bfloat16 and gw1.dtype == jnp.float32 and gw1.shape == w.shape
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    for got, ref in ((gh1, gh0), (gw1, gw0)):
        ref = np.asarray(ref)
        np.testing.assert_allclose(np.asarray(got, np.float32), ref, rtol=0, atol=1e-2 * np.abs(ref).max())
    assert np.all(np.asarray(gw1[VOCAB:]) == 0.0)


def test_no_full_logits_buffer():
    """The compiled forward+backward holds no [B*T, V] (or [B, T, V]) fp32 array and needs less
    scratch memory than one; the dense version does both (so the check can fail)."""
    h, w, t = _inputs()

    def compiled(fn):
        return jax.jit(jax.value_and_grad(fn, argnums=(0, 1))).lower(h, w).compile()

    blk = compiled(lambda h, w: blockwise_cross_entropy(h, w, t, VOCAB, block=128))
    fused = compiled(lambda h, w: fused_cross_entropy(h, w, t, VOCAB, rows=64))
    dense = compiled(lambda h, w: _dense(h, w, t))
    full = {f"f32[{B * T},{PADDED}]", f"f32[{B},{T},{PADDED}]"}
    assert any(s in dense.as_text() for s in full)
    logits_bytes = B * T * PADDED * 4
    assert dense.memory_analysis().temp_size_in_bytes >= logits_bytes
    for c in (blk, fused):
        assert not any(s in c.as_text() for s in full)
        assert c.memory_analysis().temp_size_in_bytes < logits_bytes


def test_bad_vocab_size():
    h, w, t = _inputs()
    with pytest.raises(ValueError, match="vocab_size"):
        blockwise_cross_entropy(h, w, t, PADDED + 1)


def test_trainer_loss_block_matches_dense():
    """train.loss_block > 0 gives the dense step's loss and update, on the 8-device mesh (batch split),
    with the tied head and muP's output multiplier (1/width_mult = 0.5 here)."""
    from conftest import tiny_config
    from gpt2jax.train import Trainer

    c = tiny_config(model__vocab_size=1000, model__parametrization="mup", model__mup_base_width=32)
    rows = np.random.default_rng(0).integers(0, 1000, (c.train.batch_size, c.model.block_size + 1), dtype=np.int32)
    outs = []
    for block, n_rows in ((0, 0), (96, 0), (0, 96)):  # 96 divides neither the 1024 rows nor B*T tokens
        c.train.loss_block, c.train.loss_rows = block, n_rows
        tr = Trainer(c)
        p, o = tr.init_state(0)
        batch = tr.global_batch(rows)
        val = float(tr.eval_step(p, batch))
        p, o, out = tr.train_step(p, o, batch, jnp.asarray(0, jnp.int32))
        outs.append((val, float(out["loss"]), float(out["grad_norm"]), jax.device_get(p)))
    (v0, l0, g0, p0) = outs[0]
    assert abs(v0 - np.log(1000)) < 1.0
    for v1, l1, g1, p1 in outs[1:]:
        np.testing.assert_allclose([v1, l1, g1], [v0, l0, g0], rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p0)


def test_loss_block_validated():
    from gpt2jax import config as config_lib

    c = config_lib.get_config()
    c.train.loss_block = -1
    with pytest.raises(config_lib.ConfigError, match="train.loss_block"):
        config_lib.validate(c)
    c.train.loss_block, c.train.loss_rows = 0, -2
    with pytest.raises(config_lib.ConfigError, match="train.loss_rows"):
        config_lib.validate(c)
    c.train.loss_block, c.train.loss_rows = 128, 256
    with pytest.raises(config_lib.ConfigError, match="train.loss_rows.*set one"):
        config_lib.validate(c)


def test_cross_entropy_matches_log_softmax():
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 11)) * 3
    y = jax.random.randint(jax.random.PRNGKey(1), (2, 5), 0, 11)
    ref = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), np.asarray(y)[..., None], -1).mean()
    assert float(cross_entropy(logits, y)) == pytest.approx(float(ref), rel=1e-6)
    mask = jnp.zeros((2, 5)).at[0, :2].set(1)
    ref_m = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), np.asarray(y)[..., None], -1)[0, :2].mean()
    assert float(cross_entropy(logits, y, mask)) == pytest.approx(float(ref_m), rel=1e-6)
