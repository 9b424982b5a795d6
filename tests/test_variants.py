"""One declaration per parameter, and the model variants: derived trees equal the hand-written layout, init is
bitwise the same as before, and every variant trains on a 2x2x2 mesh, checkpoints, samples with the KV cache,
evaluates, counts its parameters and FLOPs, and converts (or is refused) like the default."""

import importlib
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2jax import checkpoint as ckpt_lib
from gpt2jax import config as config_lib
from gpt2jax import metrics
from gpt2jax.data import loader
from gpt2jax.eval.scoring import Scorer
from gpt2jax.losses import cross_entropy
from gpt2jax.model import (
    GPT2, ModelConfig, abstract_params, init_params, matmul_params, num_params, param_axes,
    param_shapes, param_specs,
)
from gpt2jax.optim import decay_mask, lr_scales
from gpt2jax.sample import generate
from gpt2jax.train import train

import legacy_layout
from conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if not p.stem.startswith("_"))

VARIANTS = {
    "rmsnorm": dict(norm="rmsnorm"),
    "no_bias": dict(bias=False),
    "rope": dict(position="rope"),
    "no_position": dict(position="none"),
    # The NanoGPT speedrun's switches together (one end-to-end run for three). A cap of 1, not the speedrun's 30:
    # this tiny model's logits are a fraction of 1 at init, where 30 would be the identity. Before swiglu: "all"
    # below merges the entries in order, so its MLP stays SwiGLU (relu2 has GELU's shapes) and it gains the rest.
    "speedrun": dict(mlp="relu2", logit_softcap=1.0, zero_init_proj=True),
    "swiglu": dict(mlp="swiglu"),
    "untied": dict(tie_embeddings=False),
    "qk_norm": dict(qk_norm=True),
    "parallel": dict(parallel_block=True),
    "mup": dict(parametrization="mup", mup_base_width=32),
}


def _config(name):
    return importlib.import_module(f"configs.{name}").get_config()


def _leaves(tree):
    return jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))[0]


# -- one declaration ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONFIGS)
def test_derived_trees_equal_the_hand_written_layout(name):
    m = _config(name).model
    assert param_shapes(m) == legacy_layout.param_shapes(m)
    assert param_axes(m) == legacy_layout.param_axes(m)
    shapes = jax.tree.map(lambda s: tuple(s.shape), abstract_params(m))
    assert shapes == legacy_layout.param_shapes(m)


def test_init_bitwise_as_before():
    m = _config("tiny").model
    key = jax.random.PRNGKey(7)
    new = jax.jit(lambda k: init_params(m, k))(key)
    old = jax.jit(lambda k: legacy_layout.legacy_init(m, k))(key)
    assert jax.tree.structure(new) == jax.tree.structure(old)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old)):
        assert a.dtype == b.dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_model_config_is_a_hashable_static_value():
    c = _config("tiny").model
    mc = ModelConfig.of(c)
    assert hash(mc) == hash(ModelConfig.of(c)) and mc == ModelConfig.of(c)
    assert GPT2(c).config == mc  # a ConfigDict is converted
    f = jax.jit(lambda x, cfg: x * cfg.n_layer, static_argnums=1)
    assert int(f(jnp.int32(3), mc)) == 3 * c.n_layer
    assert mc.replace(n_layer=5).n_layer == 5 and mc.n_layer == c.n_layer


def test_decay_mask_and_counts_follow_the_declarations():
    m = _config("gpt2_124m").model
    mask = decay_mask(m)
    assert mask["wte"] and mask["wpe"] and mask["h"]["attn"]["c_attn"]["kernel"]
    assert not mask["h"]["attn"]["c_attn"]["bias"] and not mask["ln_f"]["scale"]
    L, D, V = m.n_layer, m.n_embd, m.vocab_size
    assert matmul_params(m) == L * (12 * D * D + 13 * D) + 2 * D + V * D  # PaLM's N: the old formula
    assert num_params(m) == 124_439_808 and num_params(m, non_embedding=True) == 85_056_000
    assert metrics.flops_per_token(m, 1024) == pytest.approx(0.855e9, rel=2e-3)


# -- counts per variant ---------------------------------------------------------------------------
def _hand_count(m):
    """Parameters of a variant counted by hand (vocabulary padding excluded)."""
    L, D, V, P, K = m.n_layer, m.n_embd, m.vocab_size, m.block_size, m.n_embd // m.n_head
    bias, ln_bias = m.bias, m.bias and m.norm == "layernorm"
    glu = m.mlp == "swiglu"  # gelu and relu2: GPT-2's 4x MLP
    F = math.ceil(8 * D / 3 / 32) * 32 if glu else 4 * D
    norm = D * (1 + ln_bias)
    attn = 3 * D * D + D * D + bias * (3 * D + D) + m.qk_norm * 2 * K
    mlp = (3 if glu else 2) * D * F + bias * ((2 if glu else 1) * F + D)
    layer = attn + mlp + norm * (1 if m.parallel_block else 2)
    total = V * D + (P * D if m.position == "learned" else 0) + L * layer + norm
    head = 0 if m.tie_embeddings else V * D
    return total + head


@pytest.mark.parametrize("variant", list(VARIANTS) + ["all"])
def test_counts_per_variant(variant):
    c = tiny_config()
    for k, v in (VARIANTS[variant].items() if variant != "all" else
                 {k: v for d in VARIANTS.values() for k, v in d.items() if k not in ("position",)}.items()):
        c.model[k] = v
    config_lib.validate(c)
    m = c.model
    params = init_params(m, jax.random.PRNGKey(0))
    pad = (m.vocab_multiple * math.ceil(m.vocab_size / m.vocab_multiple) - m.vocab_size) * m.n_embd
    heads = 1 + (not m.tie_embeddings)
    assert num_params(m) == sum(x.size for x in jax.tree.leaves(params)) - heads * pad == _hand_count(m)
    wte, wpe = m.vocab_size * m.n_embd, (m.block_size * m.n_embd if m.position == "learned" else 0)
    assert num_params(m, non_embedding=True) == num_params(m) - wte - wpe
    # FLOPs' N: everything but the lookup tables (wpe; wte too when the head is untied)
    assert matmul_params(m) == num_params(m) - wpe - (0 if m.tie_embeddings else wte)
    # the padded vocabulary rows of every vocab table start at zero
    for path, spec in jax.tree_util.tree_flatten_with_path(param_specs(m), is_leaf=lambda x: hasattr(x, "vocab_rows"))[0]:
        if spec.vocab_rows:
            arr = params[path[0].key]
            assert not np.asarray(arr[m.vocab_size:]).any()


# -- every variant end to end ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("xla_cache_variants")


def _greedy_full_forward(model, params, prompt, n):
    """Greedy decoding by full forward passes, each over the whole padded window (one compiled function: in a
    causal model the logits at position t depend on tokens <= t only, so the padding after t changes nothing)."""
    fwd = jax.jit(lambda toks: model.apply({"params": params}, toks))
    b, t0 = prompt.shape
    toks = np.zeros((b, t0 + n), np.int32)
    toks[:, :t0] = prompt
    for t in range(t0, t0 + n):
        toks[:, t] = np.asarray(jnp.argmax(fwd(jnp.asarray(toks))[:, t - 1], -1))
    return toks


# End to end, two variants share a run where they touch different code (every variant is in one): each run costs
# a compile of its own, and six runs test the ten variants' paths as ten did.
E2E = ("rmsnorm+no_bias", "rope+qk_norm", "no_position+parallel", "swiglu+untied", "speedrun", "mup")


def test_every_variant_runs_end_to_end():
    assert sorted(v for group in E2E for v in group.split("+")) == sorted(VARIANTS)


@pytest.mark.parametrize("group", E2E)
def test_variant_trains_shards_checkpoints_samples_and_evaluates(group, shakespeare_dir, cache_dir, tmp_path):
    over = {f"model__{k}": v for name in group.split("+") for k, v in VARIANTS[name].items()}
    c = tiny_config(
        shakespeare_dir, cache_dir, num_steps=4, log_every=2, eval_every=0, eval_batches=2,
        checkpoint__every=0, mesh__data=2, mesh__fsdp=2, mesh__tensor=2, **over,
    )
    wd = tmp_path / "run"
    summary = train(c, str(wd), progress=False)  # on the 2 x 2 x 2 mesh of 8 simulated devices
    assert summary["step"] == 4 and np.isfinite(summary["val_loss"])

    # The checkpoint holds the trained parameters: unsharded, on one device, they give the val loss the
    # sharded run reported.
    config, params = ckpt_lib.load_params(wd)
    assert jax.tree.map(lambda x: x.shape, params) == jax.tree.map(lambda x: x.shape, abstract_params(c.model))
    model = GPT2(c.model)
    val = loader.TokenDataset(c.data.dir, "val", c.model.block_size)
    loss_of = jax.jit(lambda b: cross_entropy(model.apply({"params": params}, b[:, :-1]), b[:, 1:]))
    losses = [float(loss_of(jnp.asarray(loader.eval_batch(val, i, c.train.batch_size, 0, 1)))) for i in range(2)]
    assert np.mean(losses) == pytest.approx(summary["val_loss"], rel=1e-5, abs=1e-5)

    # KV-cache sampling equals greedy decoding with full forward passes.
    prompt = np.array([[464, 3290, 318, 257], [40, 588, 257, 1492]])
    got = np.asarray(generate(c.model, params, prompt, 6, temperature=0.0))
    np.testing.assert_array_equal(got, _greedy_full_forward(model, params, prompt, 6))

    # The zero-shot scorer gives the full forward pass's log-likelihood.
    ctx, cont = [464, 3290, 318], [257, 1492, 13]
    (ll, _), = Scorer(c.model, params, batch_size=2, progress=False).loglikelihood([(ctx, cont)])
    logits = model.apply({"params": params}, jnp.asarray([ctx + cont[:-1]]))
    logp = jax.nn.log_softmax(logits[0], -1)
    want = sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
    assert ll == pytest.approx(want, rel=1e-5, abs=1e-4)


# -- muP --------------------------------------------------------------------------------------------
def test_mup_at_the_base_width_is_sp():
    sp = tiny_config().model
    mup = tiny_config(model__parametrization="mup", model__mup_base_width=sp.n_embd).model
    key = jax.random.PRNGKey(1)
    a, b = init_params(sp, key), init_params(mup, key)
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    toks = jax.random.randint(key, (2, 16), 0, 50257)
    np.testing.assert_array_equal(GPT2(sp).apply({"params": a}, toks), GPT2(mup).apply({"params": b}, toks))
    assert set(jax.tree.leaves(lr_scales(mup))) == {1.0}


def test_mup_scales_with_width():
    base = 32
    m = ModelConfig.of(tiny_config(model__parametrization="mup", model__mup_base_width=base).model)  # width 64
    scales = lr_scales(m)
    assert scales["h"]["attn"]["c_attn"]["kernel"] == scales["h"]["mlp"]["c_proj"]["kernel"] == base / 64
    assert scales["wte"] == scales["h"]["ln_1"]["scale"] == scales["h"]["mlp"]["c_fc"]["bias"] == 1.0
    sp = ModelConfig.of(tiny_config().model)
    key = jax.random.PRNGKey(0)
    p_mup, p_sp = init_params(m, key), init_params(sp, key)
    k_mup, k_sp = p_mup["h"]["mlp"]["c_fc"]["kernel"], p_sp["h"]["mlp"]["c_fc"]["kernel"]
    np.testing.assert_allclose(k_mup, k_sp / math.sqrt(64 / base), rtol=1e-6)  # hidden init std ~ 1/sqrt(fan_in)
    np.testing.assert_array_equal(p_mup["wte"], p_sp["wte"])  # input weights unchanged
    # logits scaled by 1/width_mult; attention scores by sqrt(K0)/K (= 1/sqrt(K) at the base width)
    from gpt2jax.model import attention_scale, output_multiplier

    assert output_multiplier(m) == base / 64
    assert attention_scale(m) == pytest.approx(math.sqrt(base / m.n_head) / m.head_dim)
    # The ablation switches: SP's score scale, and a multiplier on the non-hidden groups' learning rates
    m2 = ModelConfig.of(tiny_config(model__parametrization="mup", model__mup_base_width=base,
                                    model__mup_attention="sqrt", model__mup_vector_lr=0.25).model)
    assert attention_scale(m2) is None  # jax's default, 1/sqrt(K)
    s2 = lr_scales(m2)
    assert s2["wte"] == s2["h"]["ln_1"]["scale"] == s2["h"]["mlp"]["c_fc"]["bias"] == 0.25
    assert s2["h"]["attn"]["c_attn"]["kernel"] == base / 64
    assert set(jax.tree.leaves(lr_scales(ModelConfig.of(tiny_config(model__mup_vector_lr=0.25).model)))) == {1.0}
    assert attention_scale(sp) is None
    # TP5's output multiplier, a base hyperparameter: the logits scale by it at every width; SP ignores it
    m4 = ModelConfig.of(tiny_config(model__parametrization="mup", model__mup_base_width=base,
                                    model__mup_output_mult=4.0).model)
    assert output_multiplier(m4) == 4.0 * base / 64
    assert output_multiplier(ModelConfig.of(tiny_config(model__mup_output_mult=4.0).model)) == 1.0
    toks = jnp.asarray([[1, 5, 9, 2, 7]])
    l1 = GPT2(m).apply({"params": p_mup}, toks)[..., : m.vocab_size]
    l4 = GPT2(m4).apply({"params": p_mup}, toks)[..., : m.vocab_size]
    np.testing.assert_allclose(l4, 4.0 * l1, rtol=1e-5, atol=1e-6)
    # and the hidden matrices' init multiplier, another: it scales their std, nothing else
    p3 = init_params(ModelConfig.of(tiny_config(model__parametrization="mup", model__mup_base_width=base,
                                                model__mup_hidden_init=3.0).model), key)
    np.testing.assert_allclose(p3["h"]["mlp"]["c_fc"]["kernel"], 3.0 * k_mup, rtol=1e-6)
    np.testing.assert_array_equal(p3["wte"], p_mup["wte"])


# -- conversion ------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["untied", "no_bias"])
def test_hf_export_of_what_gpt2lmheadmodel_holds(variant, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from gpt2jax.convert import from_hf, to_hf

    c = tiny_config(**{f"model__{k}": v for k, v in VARIANTS[variant].items()})
    params = init_params(c.model, jax.random.PRNGKey(2))
    if variant == "untied":  # make the head visibly different from the embedding
        params["lm_head"] = params["lm_head"] * 3.0
    out = to_hf(c, params, tmp_path / "hf")
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    toks = np.array([[464, 3290, 318, 257, 1492, 13]])
    with torch.no_grad():
        want = hf(torch.tensor(toks)).logits.numpy()
    got = np.asarray(GPT2(c.model).apply({"params": params}, jnp.asarray(toks)))[..., : c.model.vocab_size]
    np.testing.assert_allclose(got, want, atol=1e-4)
    if variant == "untied":  # and back in: an untied head imports as one
        config, back = from_hf(out)
        assert config.model.tie_embeddings is False
        np.testing.assert_array_equal(back["lm_head"], np.asarray(params["lm_head"]))


@pytest.mark.parametrize("variant", ["rmsnorm", "rope", "no_position", "speedrun", "swiglu", "qk_norm", "parallel",
                                     "mup"])
def test_hf_export_refuses_what_gpt2lmheadmodel_cannot_hold(variant, tmp_path):
    from gpt2jax.convert import ConversionError, to_hf

    over = VARIANTS[variant]
    c = tiny_config(**{f"model__{k}": v for k, v in over.items()})
    params = jax.tree.map(np.zeros_like, abstract_params(c.model))
    field = next(iter(over))
    with pytest.raises(ConversionError, match=f"model.{field}="):
        to_hf(c, params, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_variant_fields_are_validated():
    for field, bad in (("norm", "batchnorm"), ("position", "alibi"), ("mlp", "relu"), ("parametrization", "ntk"),
                       ("rope_base", 0.5), ("mup_base_width", 0), ("mup_attention", "linear"),
                       ("mup_vector_lr", 0.0), ("mup_output_mult", -1.0), ("mup_hidden_init", 0.0)):
        c = tiny_config(**{f"model__{field}": bad})
        with pytest.raises(config_lib.ConfigError, match=f"config.model.{field}"):
            config_lib.validate(c)


def test_capture_returns_layer_outputs_and_attention_without_changing_logits():
    c = tiny_config()
    m = c.model
    params = init_params(m, jax.random.PRNGKey(0))
    toks = jax.random.randint(jax.random.PRNGKey(1), (2, 12), 0, m.vocab_size)
    model = GPT2(m)
    plain = model.apply({"params": params}, toks)
    logits, state = model.apply({"params": params}, toks, capture=True, mutable=["intermediates"])
    np.testing.assert_allclose(logits, plain, atol=1e-5)
    inter = state["intermediates"]
    (out,), (probs,) = inter["h/out"], inter["h/attn_probs"]
    assert out.shape == (m.n_layer, 2, 12, m.n_embd) and probs.shape == (m.n_layer, 2, m.n_head, 12, 12)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert float(jnp.abs(jnp.triu(probs, 1)).max()) == 0.0  # causal
    # the last layer's output, through the final norm and head, gives the logits
    h = model.apply({"params": params}, toks, return_hidden=True)
    from gpt2jax.model import head_weight, norm

    np.testing.assert_allclose(norm(out[-1], params["ln_f"], ModelConfig.of(m)), h, atol=1e-5)
    np.testing.assert_allclose(
        jnp.where(jnp.arange(plain.shape[-1]) < m.vocab_size, h @ head_weight(params, m).T, -1e9), plain, atol=1e-4
    )


@pytest.mark.parametrize("variant", ["untied", "swiglu", "rope"])
def test_planner_counts_each_variant(variant):
    from gpt2jax.plan import plan

    c = tiny_config(**{f"model__{k}": v for k, v in VARIANTS[variant].items()})
    out = plan(c, compile=False)
    assert out["params"] == num_params(c.model)
    assert out["flops_analytic_per_step"] == metrics.flops_per_token(c.model, 32) * c.train.batch_size * 32
