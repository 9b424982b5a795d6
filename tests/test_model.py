import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2jax.config import padded_vocab
from gpt2jax.losses import cross_entropy
from gpt2jax.model import GPT2, NEG_INF, init_cache, init_params, param_axes

from conftest import tiny_config


def tiny(**overrides):
    """The tests' tiny model with 4 heads."""
    return tiny_config(model__n_head=4, **{f"model__{k}": v for k, v in overrides.items()}).model


@pytest.fixture(scope="module")
def setup():
    cfg = tiny()
    params = init_params(cfg, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (3, 20), 0, cfg.vocab_size)
    return cfg, params, tokens


def test_shapes_and_padding(setup):
    cfg, params, tokens = setup
    logits = GPT2(cfg).apply({"params": params}, tokens)
    assert logits.shape == (3, 20, padded_vocab(cfg)) and logits.dtype == jnp.float32
    # Padded vocabulary rows start at zero and their logits never win.
    assert not np.asarray(params["wte"][cfg.vocab_size:]).any()
    assert np.asarray(params["wte"][: cfg.vocab_size]).std() == pytest.approx(0.02, rel=0.05)
    assert (np.asarray(logits[..., cfg.vocab_size:]) == NEG_INF).all()
    assert (np.asarray(logits.argmax(-1)) < cfg.vocab_size).all()


def test_param_tree_matches_axes_and_init(setup):
    cfg, params, _ = setup
    axes = param_axes(cfg)
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_a = jax.tree_util.tree_flatten_with_path(axes, is_leaf=lambda x: isinstance(x, tuple))[0]
    assert [p for p, _ in flat_p] == [p for p, _ in flat_a]
    for (_, x), (_, ax) in zip(flat_p, flat_a):
        assert x.ndim == len(ax)
    # Residual projections: N(0, 0.02 / sqrt(2 n_layer)); other kernels N(0, 0.02).
    proj = np.asarray(params["h"]["mlp"]["c_proj"]["kernel"])
    assert proj.std() == pytest.approx(0.02 / math.sqrt(2 * cfg.n_layer), rel=0.05)
    assert np.asarray(params["h"]["mlp"]["c_fc"]["kernel"]).std() == pytest.approx(0.02, rel=0.05)
    assert (np.asarray(params["h"]["ln_1"]["scale"]) == 1).all()
    assert not np.asarray(params["h"]["attn"]["c_attn"]["bias"]).any()


def test_boxed_init_carries_logical_axes(setup):
    import flax.linen as nn

    cfg, _, tokens = setup
    boxed = GPT2(cfg).init(jax.random.PRNGKey(0), tokens[:, :2])["params"]
    specs = nn.get_partition_spec(boxed)
    assert tuple(specs["h"]["attn"]["c_attn"]["kernel"]) == ("layers", "embed", None, "heads", "head_dim")
    assert tuple(specs["wte"]) == ("vocab", "embed")


def test_causality(setup):
    cfg, params, tokens = setup
    model = GPT2(cfg)
    changed = tokens.at[:, 12].set((tokens[:, 12] + 1) % cfg.vocab_size)
    a = model.apply({"params": params}, tokens)
    b = model.apply({"params": params}, changed)
    np.testing.assert_array_equal(np.asarray(a[:, :12]), np.asarray(b[:, :12]))
    assert np.abs(np.asarray(a[:, 12:] - b[:, 12:])).max() > 1e-4


def test_scan_unrolled_remat_agree(setup):
    cfg, params, tokens = setup

    def forward(c):
        return jax.jit(lambda p: GPT2(c).apply({"params": p}, tokens))(params)

    ref = forward(cfg)
    for kw in (dict(scan_layers=False), dict(remat="full"), dict(remat="dots", scan_layers=False)):
        np.testing.assert_allclose(np.asarray(forward(tiny(**kw))), np.asarray(ref), atol=1e-5)

    def grad(c):
        loss = lambda p: cross_entropy(GPT2(c).apply({"params": p}, tokens[:, :-1]), tokens[:, 1:])  # noqa: E731
        return jax.jit(jax.grad(loss))(params)

    g0, g1 = grad(cfg), grad(tiny(remat="full", scan_layers=False))
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_kv_cache_decoding_equals_full_forward(setup):
    cfg, params, tokens = setup
    model = GPT2(cfg)
    full = model.apply({"params": params}, tokens)
    decode = jax.jit(lambda toks, cache, pos: model.apply({"params": params}, toks, cache, pos, method=GPT2.decode))
    cache = init_cache(cfg, tokens.shape[0], 24)
    logits, cache = decode(tokens[:, :7], cache, 0)
    pieces = [logits]
    for t in range(7, 20):  # one compiled step: the position is traced
        logits, cache = decode(tokens[:, t : t + 1], cache, t)
        pieces.append(logits)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(pieces, 1)), np.asarray(full), atol=1e-4)


def test_dropout_only_when_training(setup):
    cfg, params, tokens = setup
    model = GPT2(tiny(dropout=0.3))
    a = model.apply({"params": params}, tokens)
    b = model.apply({"params": params}, tokens)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = model.apply({"params": params}, tokens, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
    d = model.apply({"params": params}, tokens, deterministic=False, rngs={"dropout": jax.random.PRNGKey(4)})
    assert np.abs(np.asarray(c - a)).max() > 1e-3 and np.abs(np.asarray(c - d)).max() > 1e-3
    # The deterministic output equals the model without dropout.
    np.testing.assert_allclose(np.asarray(a), np.asarray(GPT2(cfg).apply({"params": params}, tokens)), atol=1e-6)


def test_bf16_compute_keeps_fp32_params_and_logits(setup):
    cfg, params, tokens = setup
    logits = GPT2(tiny(dtype="bfloat16")).apply({"params": params}, tokens)
    assert logits.dtype == jnp.float32
    ref = GPT2(cfg).apply({"params": params}, tokens)
    real = slice(0, cfg.vocab_size)
    assert np.abs(np.asarray(logits[..., real] - ref[..., real])).max() < 0.05
