"""Three switches of the NanoGPT speedrun, each off by default: model.mlp='relu2' (relu(x)^2 in GPT-2's 4x MLP),
model.logit_softcap=C (logits C tanh(logits / C) wherever they are formed: the dense head, the fused and
blockwise losses, KV-cache decoding, the scorer) and model.zero_init_proj (the residual output projections start
at zero). End to end they run together as tests/test_variants.py's "speedrun" entry."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2jax import config as config_lib
from gpt2jax.errors import ConfigError
from gpt2jax.losses import blockwise_cross_entropy, cross_entropy, fused_cross_entropy
from gpt2jax.model import (
    GPT2, NEG_INF, ModelConfig, abstract_params, init_cache, init_params, mlp, num_params, param_shapes, param_specs,
)

from conftest import tiny_config

V = 1000  # a small vocabulary (padded to 1024) keeps the head cheap
PROJ = (("attn", "c_proj", "kernel"), ("mlp", "c_proj", "kernel"))


def _cfg(**model) -> ModelConfig:
    """The tests' tiny model (2 layers, width 64) with V tokens and `model` fields set."""
    return ModelConfig.of(tiny_config(model__vocab_size=V, **{f"model__{k}": v for k, v in model.items()}).model)


def _loud(params, scale=40.0):
    """The parameters with the token table scaled up, so the (tied) head's logits reach several units."""
    return {**params, "wte": params["wte"] * scale}


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


# -- relu2 ----------------------------------------------------------------------------------------------
def test_relu2_mlp_is_relu_squared_with_gelus_parameters():
    cfg, gelu_cfg = _cfg(mlp="relu2"), _cfg()
    assert param_shapes(cfg) == param_shapes(gelu_cfg) and num_params(cfg) == num_params(gelu_cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    lp = jax.tree.map(lambda a: a[1], params["h"]["mlp"])  # layer 1's MLP
    lp["c_fc"]["bias"] = 0.2 * jax.random.normal(k1, lp["c_fc"]["bias"].shape)  # biases start at 0: make them count
    lp["c_proj"]["bias"] = 0.1 * jax.random.normal(k2, lp["c_proj"]["bias"].shape)
    x = jax.random.normal(k3, (2, 5, cfg.n_embd))
    got = np.asarray(mlp(lp, x, cfg=cfg))
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    pre = f64(x) @ f64(lp["c_fc"]["kernel"]) + f64(lp["c_fc"]["bias"])
    want = np.maximum(pre, 0.0) ** 2 @ f64(lp["c_proj"]["kernel"]) + f64(lp["c_proj"]["bias"])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert (pre < 0).any() and (pre > 0).any()  # both sides of the kink are exercised
    assert not np.allclose(got, np.asarray(mlp(lp, x, cfg=gelu_cfg)), rtol=1e-3, atol=1e-5)
    # and in the network: the same parameters give other logits than under GELU
    toks = jax.random.randint(k1, (2, 8), 0, V)
    a = GPT2(cfg).apply({"params": params}, toks)
    b = GPT2(gelu_cfg).apply({"params": params}, toks)
    assert np.abs(np.asarray(a - b)[..., :V]).max() > 1e-6


# -- logit soft-capping --------------------------------------------------------------------------------
def test_softcap_bounds_the_logits_at_c_tanh_of_the_uncapped():
    C = 3.0
    plain, capped = _cfg(), _cfg(logit_softcap=C)
    params = _loud(init_params(plain, jax.random.PRNGKey(0)))
    toks = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, V)
    raw = np.asarray(GPT2(plain).apply({"params": params}, toks))
    got = np.asarray(GPT2(capped).apply({"params": params}, toks))
    assert np.abs(raw[..., :V]).max() > 2 * C  # the cap acts
    assert np.abs(got[..., :V]).max() <= C
    np.testing.assert_allclose(got[..., :V], C * np.tanh(raw[..., :V] / C), rtol=1e-5, atol=1e-5)
    assert (got[..., V:] == NEG_INF).all()  # padded columns are masked after the cap, not capped to -C
    # Under muP the output multiplier (mup_output_mult / width_mult = 3 x 32 / 64 here) applies first.
    mup = dict(parametrization="mup", mup_base_width=32, mup_output_mult=3.0)
    raw_m = np.asarray(GPT2(_cfg(**mup)).apply({"params": params}, toks))[..., :V]
    got_m = np.asarray(GPT2(_cfg(logit_softcap=C, **mup)).apply({"params": params}, toks))[..., :V]
    np.testing.assert_allclose(got_m, C * np.tanh(raw_m / C), rtol=1e-5, atol=1e-5)
    assert not np.allclose(got_m, 1.5 * C * np.tanh(raw_m / 1.5 / C), atol=1e-3)  # not the cap, then the multiplier


def test_softcap_decoding_and_scoring_give_the_full_forward_logits():
    from gpt2jax.eval.scoring import Scorer

    C = 3.0
    cfg = _cfg(logit_softcap=C)
    params = _loud(init_params(cfg, jax.random.PRNGKey(0)))
    model = GPT2(cfg)
    toks = jax.random.randint(jax.random.PRNGKey(1), (2, 10), 0, V)
    full = np.asarray(model.apply({"params": params}, toks))
    assert np.abs(full[..., :V]).max() <= C
    cache = init_cache(cfg, 2, cfg.block_size)
    logits, cache = model.apply({"params": params}, toks[:, :6], cache, 0, method=GPT2.decode)  # the prompt at once
    steps = [logits]
    for t in range(6, 10):  # then one token at a time
        logits, cache = model.apply({"params": params}, toks[:, t:t + 1], cache, t, method=GPT2.decode)
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, 1), full, rtol=1e-5, atol=1e-4)
    # The zero-shot scorer (the head at the scored positions only) gives the capped log-likelihood.
    ctx, cont = [int(t) for t in toks[0, :6]], [int(t) for t in toks[0, 6:]]
    (ll, _), = Scorer(cfg, params, batch_size=1, progress=False).loglikelihood([(ctx, cont)])
    logp = jax.nn.log_softmax(full[0], -1)
    want = sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
    assert ll == pytest.approx(want, rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("kind,size", [("block", 96), ("fused", 20)])  # neither divides its axis (256 rows, 48 tokens)
def test_softcap_in_the_chunked_losses_matches_the_capped_dense_head(kind, size):
    B, T, D, VOC, PAD, C = 2, 24, 16, 200, 256, 2.0
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    h = jax.random.normal(k1, (B, T, D))
    w = (0.8 * jax.random.normal(k2, (PAD, D))).at[VOC:].set(3.0)  # padded rows that would win if unmasked
    t = jax.random.randint(k3, (B, T), 0, VOC)
    mask = (jnp.arange(T) % 3 != 0).astype(jnp.float32)[None].repeat(B, 0)
    col = jnp.arange(PAD)

    def dense(h, w, cap=C):
        s = jnp.einsum("btd,vd->btv", h, w)
        s = cap * jnp.tanh(s / cap) if cap else s
        return cross_entropy(jnp.where(col < VOC, s, NEG_INF), t, mask)

    if kind == "block":
        fn = lambda h, w: blockwise_cross_entropy(h, w, t, VOC, mask, block=size, softcap=C)  # noqa: E731
    else:
        fn = lambda h, w: fused_cross_entropy(h, w, t, VOC, mask, rows=size, softcap=C)  # noqa: E731
    assert float(jnp.abs(jnp.einsum("btd,vd->btv", h, w[:VOC])).max()) > 2 * C  # the cap acts
    l1, (gh1, gw1) = jax.value_and_grad(fn, argnums=(0, 1))(h, w)
    l0, (gh0, gw0) = jax.value_and_grad(dense, argnums=(0, 1))(h, w)
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(fn)(h, w), l0, rtol=1e-5)  # the primal (no gradient) path
    assert abs(float(l0) - float(dense(h, w, cap=0.0))) > 0.1  # and it is not the uncapped loss
    np.testing.assert_allclose(gh1, gh0, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(gw1, gw0, rtol=1e-4, atol=1e-7)
    assert np.all(np.asarray(gw1[VOC:]) == 0.0)  # padded rows: no gradient
    g2 = jax.grad(lambda h, w: 2.5 * fn(h, w), argnums=(0, 1))(h, w)  # a scaled cotangent scales both
    np.testing.assert_allclose(g2[0], 2.5 * gh0, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(g2[1], 2.5 * gw0, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="softcap"):
        fused_cross_entropy(h, w, t, VOC, softcap=-1.0)
    with pytest.raises(ValueError, match="softcap"):
        blockwise_cross_entropy(h, w, t, VOC, softcap=float("nan"))


def test_softcap_reaches_the_trainers_fused_and_blockwise_losses():
    """lm_loss (the Trainer's loss) with train.loss_rows or loss_block gives the dense head's capped loss and
    gradients; under muP the cap comes after the output multiplier (x10 here, so that the cap acts at init)."""
    from gpt2jax import sharding as shd
    from gpt2jax.losses import lm_loss

    C = 2.0
    model_over = dict(model__vocab_size=V, model__logit_softcap=C, model__parametrization="mup",
                      model__mup_base_width=32, model__mup_output_mult=20.0)
    c = tiny_config(**model_over)
    model = GPT2(c.model)
    mesh = shd.make_mesh(c.mesh, jax.devices()[:1])
    params = init_params(c.model, jax.random.PRNGKey(0))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 17), 0, V)
    out = []
    for block, rows in ((0, 0), (96, 0), (0, 24)):  # 96 divides neither the 1024 rows nor 24 the 64 tokens
        cb = tiny_config(loss_block=block, loss_rows=rows, **model_over)
        out.append(jax.jit(jax.value_and_grad(lambda p: lm_loss(model, p, tokens, config=cb, mesh=mesh)))(params))
    # the dense loss, from the head's input by hand: C tanh(10 h w^T / C)
    x, y = tokens[:, :-1], tokens[:, 1:]
    h = model.apply({"params": params}, x, return_hidden=True)
    raw = 10.0 * jnp.einsum("btd,vd->btv", h, params["wte"])
    real = jnp.arange(raw.shape[-1]) < V
    assert float(jnp.abs(raw[..., :V]).max()) > 2 * C
    ref = cross_entropy(jnp.where(real, C * jnp.tanh(raw / C), NEG_INF), y)
    uncapped = cross_entropy(jnp.where(real, raw, NEG_INF), y)
    (l0, g0) = out[0]
    np.testing.assert_allclose(l0, ref, rtol=1e-5)
    assert abs(float(ref) - float(uncapped)) > 0.1
    for l1, g1 in out[1:]:
        np.testing.assert_allclose(l1, l0, rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max())),
                     g1, g0)


# -- zero-initialised output projections ---------------------------------------------------------------
def test_zero_init_proj_starts_the_output_projections_at_zero_and_a_step_moves_them():
    from gpt2jax.train import Trainer

    cfg, base = _cfg(zero_init_proj=True), _cfg()
    specs = param_specs(cfg)
    for path in PROJ:  # declared so: zero init, still a decayed muP-hidden matrix
        s, s0 = _get(specs["h"], path), _get(param_specs(base)["h"], path)
        assert s.init == "zeros" and s0.init == "normal" and (s.decay, s.mup, s.shape) == (s0.decay, s0.mup, s0.shape)
    key = jax.random.PRNGKey(3)
    p, p0 = init_params(cfg, key), init_params(base, key)
    for path in PROJ:
        assert not np.asarray(_get(p["h"], path)).any() and np.asarray(_get(p0["h"], path)).std() > 0.001
    # every other parameter is GPT-2's init, bitwise (one key per parameter): the kernels are not zero
    proj = {("h",) + path for path in PROJ}
    for (kp, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(p)[0], jax.tree_util.tree_flatten_with_path(p0)[0]):
        if tuple(k.key for k in kp) not in proj:
            np.testing.assert_array_equal(a, b)
    assert np.asarray(p["h"]["attn"]["c_attn"]["kernel"]).std() > 0.01
    assert np.asarray(p["h"]["mlp"]["c_fc"]["kernel"]).std() > 0.01

    # One training step (no warmup, so its learning rate is optim.lr) moves both off zero in every layer.
    c = tiny_config(model__vocab_size=V, model__zero_init_proj=True, optim__warmup_steps=0)
    tr = Trainer(c)
    params, opt = tr.init_state(0)
    assert not any(np.asarray(_get(params["h"], path)).any() for path in PROJ)
    rows = np.random.default_rng(0).integers(0, V, (c.train.batch_size, c.model.block_size + 1), dtype=np.int32)
    params, opt, out = tr.train_step(params, opt, tr.global_batch(rows), jnp.asarray(0, jnp.int32))
    assert np.isfinite(float(out["loss"]))
    for path in PROJ:
        k = np.asarray(jax.device_get(_get(params["h"], path)))
        for layer in k:
            assert (layer != 0).mean() > 0.5 and np.abs(layer).max() > 0.5 * c.optim.lr, path


# -- export and validation ---------------------------------------------------------------------------
def test_hf_export_refuses_relu2_and_a_softcap_by_name_and_writes_zero_init_proj(tmp_path):
    from gpt2jax.convert import ConversionError, from_hf, to_hf

    for over, named in ((dict(mlp="relu2"), "model.mlp='relu2'"),
                        (dict(logit_softcap=30.0), "model.logit_softcap=30.0")):
        c = tiny_config(**{f"model__{k}": v for k, v in over.items()})
        params = jax.tree.map(np.zeros_like, abstract_params(c.model))
        with pytest.raises(ConversionError, match=re.escape(named)):
            to_hf(c, params, tmp_path / "hf")
        assert not (tmp_path / "hf").exists()
    # zero_init_proj only starts the projections at zero: the trained network is GPT-2's, and exports as one
    c = tiny_config(model__zero_init_proj=True)
    params = init_params(c.model, jax.random.PRNGKey(0))
    for i, path in enumerate(PROJ):  # as after training
        leaf = _get(params["h"], path)
        _get(params["h"], path[:-1])["kernel"] = 0.01 * jax.random.normal(jax.random.PRNGKey(10 + i), leaf.shape)
    config, back = from_hf(to_hf(c, params, tmp_path / "hf"))
    assert config.model.zero_init_proj is False  # the field is about init: an import needs none
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)), back, params)
    toks = jnp.asarray([[464, 3290, 318, 257]])
    np.testing.assert_array_equal(GPT2(config.model).apply({"params": back}, toks),
                                  GPT2(c.model).apply({"params": params}, toks))


@pytest.mark.parametrize("field,bad", [("logit_softcap", -1.0), ("logit_softcap", float("nan")),
                                       ("logit_softcap", float("inf")), ("logit_softcap", "30"),
                                       ("mlp", "relu"), ("mlp", "relu3"), ("zero_init_proj", 1)])
def test_the_switches_are_validated(field, bad):
    with pytest.raises(ConfigError, match=rf"^config\.model\.{field}: must be"):
        ModelConfig(**{field: bad}).validate()


def test_the_switches_validate_through_the_config():
    c = tiny_config(model__logit_softcap=-0.5)
    with pytest.raises(config_lib.ConfigError, match=r"config\.model\.logit_softcap: must be a finite number >= 0"):
        config_lib.validate(c)
    config_lib.validate(tiny_config(model__mlp="relu2", model__logit_softcap=30.0, model__zero_init_proj=True))
    ModelConfig(logit_softcap=15).validate()  # an int is a number
    assert ModelConfig().logit_softcap == 0.0 and ModelConfig().zero_init_proj is False and ModelConfig().mlp == "gelu"
