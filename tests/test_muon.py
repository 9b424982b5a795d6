"""optim.name='muon': Muon (optax.contrib's Newton-Schulz) on the hidden matrices that ParamSpec.matrix declares,
AdamW on the rest. The update of each matrix is checked against a Newton-Schulz iteration written out here, per
layer and per q/k/v projection; the run trains on the 2x2x2 mesh with accumulation, resumes bitwise, and plan
counts its state; the muP interplay is tested where it applies."""

import json
import math
import pathlib
import re

import jax
import numpy as np
import optax
import pytest

from gpt2jax import checkpoint as ckpt_lib
from gpt2jax import config as config_lib
from gpt2jax.errors import ConfigError
from gpt2jax.model import init_params, param_specs
from gpt2jax.optim import decay_mask, lr_scales, make_optimizer, muon_labels, schedule
from gpt2jax.plan import plan
from gpt2jax.train import train

from conftest import tiny_config

NS = (3.4445, -4.7750, 2.0315)  # the quintic's coefficients (Jordan et al. 2024)
KERNELS = (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj"))  # the hidden matrices


def newton_schulz(g, steps=5):
    """Five steps of X <- aX + (bA + cA^2)X, A = X X^T, on the wide orientation of g / ||g||_F."""
    x = np.asarray(g, np.float64)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / (np.linalg.norm(x) + 1e-8)
    a, b, c = NS
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if tall else x


def matrices(w, path):
    """One layer's (and for c_attn one projection's) matrices of a stacked kernel, as 2-D arrays [fan_in, fan_out]."""
    w = np.asarray(w)
    if path == ("attn", "c_attn"):  # [L, D, 3, H, K]: q, k and v are three matrices
        L, D, _, H, K = w.shape
        return [w[l, :, c].reshape(D, H * K) for l in range(L) for c in range(3)]
    if path == ("attn", "c_proj"):  # [L, H, K, D]
        L, H, K, D = w.shape
        return [w[l].reshape(H * K, D) for l in range(L)]
    return [w[l] for l in range(w.shape[0])]  # [L, D, F] / [L, F, D]


def _cfg(**kw):
    base = dict(optim__name="muon", optim__warmup_steps=0, optim__grad_clip=0.0, num_steps=10)
    base.update(kw)
    return tiny_config(**base)


def _grads(params, seed):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(tree, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


# -- the update ---------------------------------------------------------------------------------------------
def test_muon_update_of_each_matrix_is_newton_schulz_of_its_momentum():
    c = _cfg(optim__muon_lr=0.05, optim__muon_weight_decay=0.1, optim__muon_nesterov=False, optim__muon_momentum=0.9)
    params = init_params(c.model, jax.random.PRNGKey(0))
    opt = make_optimizer(c)
    g1, g2 = _grads(params, 1), _grads(params, 2)
    lr = float(schedule(c.optim, c.train.num_steps)(1)) * 0.05 / c.optim.lr  # update 2's rate, Muon's peak
    state = opt.init(params)
    _, state = opt.update(g1, state, params)
    u2, _ = jax.jit(opt.update)(g2, state, params)
    beta = 0.9
    for path in KERNELS:
        got = matrices(_get(u2["h"], path + ("kernel",)), path)
        # Momentum without Nesterov: m2 = beta (1 - beta) g1 + (1 - beta) g2, and the iteration is scale-free.
        mom = [beta * a + b for a, b in zip(matrices(_get(g1["h"], path + ("kernel",)), path),
                                              matrices(_get(g2["h"], path + ("kernel",)), path))]
        w = matrices(_get(params["h"], path + ("kernel",)), path)
        assert len(got) == len(mom) == (6 if path == ("attn", "c_attn") else 2)
        for u, m, p in zip(got, mom, w):
            fan_in, fan_out = m.shape
            want = -lr * (math.sqrt(max(1.0, fan_out / fan_in)) * newton_schulz(m) + 0.1 * p)
            np.testing.assert_allclose(u, want, rtol=2e-4, atol=2e-6)
    # q, k and v are three matrices: orthogonalising c_attn as one [D, 3D] matrix gives another update.
    D = c.model.n_embd
    joint = newton_schulz(np.asarray(g2["h"]["attn"]["c_attn"]["kernel"][0]).reshape(D, -1) +
                          beta * np.asarray(g1["h"]["attn"]["c_attn"]["kernel"][0]).reshape(D, -1))
    q_only = np.asarray(u2["h"]["attn"]["c_attn"]["kernel"][0, :, 0]).reshape(D, -1)
    assert not np.allclose(q_only, -lr * joint[:, :D], rtol=1e-2)


def test_first_nesterov_update_is_newton_schulz_of_the_gradient_and_the_rest_is_adamw():
    c = _cfg(model__tie_embeddings=False)  # an untied head too: it is AdamW's, not a hidden matrix
    params = init_params(c.model, jax.random.PRNGKey(0))
    g = _grads(params, 3)
    opt = make_optimizer(c)
    u, _ = jax.jit(opt.update)(g, opt.init(params), params)
    lr = c.optim.muon_lr  # update 1 of a cosine schedule without warmup: the peak
    for path in KERNELS:
        for got, m in zip(matrices(_get(u["h"], path + ("kernel",)), path), matrices(_get(g["h"], path + ("kernel",)), path)):
            fan_in, fan_out = m.shape
            np.testing.assert_allclose(got, -lr * math.sqrt(max(1.0, fan_out / fan_in)) * newton_schulz(m),
                                       rtol=2e-4, atol=2e-6)
    # Everything else gets exactly the update optax.adamw gives it alone (masked decay as under AdamW).
    labels, mask = muon_labels(c.model), decay_mask(c.model)
    adam = optax.adamw(c.optim.lr, b1=c.optim.b1, b2=c.optim.b2, eps=c.optim.eps, weight_decay=c.optim.weight_decay,
                       mask=mask)
    want, _ = adam.update(g, adam.init(params), params)
    is_adam = jax.tree.leaves(jax.tree.map(lambda l: l == "adamw", labels))
    checked = 0
    for a, b, adam_leaf in zip(jax.tree.leaves(u), jax.tree.leaves(want), is_adam):
        if adam_leaf:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
            checked += 1
    assert checked == len(is_adam) - 4  # all but the four hidden kernels (stacked over layers)


# -- the declaration ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [{}, {"mlp": "swiglu", "tie_embeddings": False, "qk_norm": True, "bias": False}])
def test_muons_matrices_are_the_declared_hidden_matrices(model):
    c = _cfg(**{f"model__{k}": v for k, v in model.items()})
    flat = jax.tree_util.tree_flatten_with_path(param_specs(c.model), is_leaf=lambda x: hasattr(x, "matrix"))[0]
    labels = jax.tree.leaves(muon_labels(c.model))
    names = {"/".join(str(k.key) for k in p): l for (p, _), l in zip(flat, labels)}
    for (path, spec), label in zip(flat, labels):
        assert (label == "muon") == (spec.mup == "hidden") == bool(spec.matrix)
        assert label == "adamw" or spec.decay
    muon = sorted(n for n, l in names.items() if l == "muon")
    want = ["h/attn/c_attn/kernel", "h/attn/c_proj/kernel", "h/mlp/c_fc/kernel", "h/mlp/c_proj/kernel"]
    assert muon == sorted(want + (["h/mlp/c_gate/kernel"] if model else []))
    assert names["wte"] == "adamw" and names.get("lm_head", "adamw") == "adamw"


def test_plan_counts_muons_state():
    ca, cm = tiny_config(), _cfg()
    pa, pm = plan(ca, compile=False), plan(cm, compile=False)
    specs = jax.tree.leaves(param_specs(cm.model), is_leaf=lambda x: hasattr(x, "matrix"))
    n_muon = sum(math.prod(s.shape) for s in specs if s.matrix)
    n_all = sum(math.prod(s.shape) for s in specs)
    # AdamW: two fp32 moments per parameter; Muon: one momentum per matrix entry (and a few scalars).
    assert pa["opt_bytes_total"] - 4 * 2 * n_all < 64
    assert 0 <= pm["opt_bytes_total"] - 4 * (2 * (n_all - n_muon) + n_muon) < 128


def test_optimizer_fields_are_validated():
    for field, value, words in [("name", "sgd", "one of"), ("muon_momentum", 1.0, "[0, 1)"),
                                ("muon_ns_steps", 0, ">= 1"), ("muon_lr", 0.0, "> 0"), ("muon_rms", -1.0, ">= 0")]:
        c = _cfg(**{f"optim__{field}": value})
        with pytest.raises(ConfigError, match=rf"optim\.{field}: .*{re.escape(words)}"):
            config_lib.validate(c)


# -- muP ----------------------------------------------------------------------------------------------------
def test_mup_with_muon():
    """At the base width muP + Muon is SP + Muon exactly. At twice the base width muP's 1/width_mult does not touch
    Muon's matrices with Muon's own width scaling (muon_rms=0), and does with muon_rms > 0 (AdamW's RMS); the
    AdamW group keeps muP's rules either way."""
    sp = _cfg()
    D = sp.model.n_embd
    at_base = _cfg(model__parametrization="mup", model__mup_base_width=D)
    params = init_params(sp.model, jax.random.PRNGKey(0))
    g = _grads(params, 4)
    upd = lambda c: jax.jit(make_optimizer(c).update)(g, make_optimizer(c).init(params), params)[0]  # noqa: E731
    for a, b in zip(jax.tree.leaves(upd(sp)), jax.tree.leaves(upd(at_base))):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()

    labels = jax.tree.leaves(muon_labels(sp.model))
    for rms in (0.0, 0.2):
        s = _cfg(optim__muon_rms=rms)
        m = _cfg(model__parametrization="mup", model__mup_base_width=D // 2, optim__muon_rms=rms)
        scales = jax.tree.leaves(lr_scales(m.model, m.optim))
        for label, scale in zip(labels, scales):
            assert scale == ((0.5 if rms else 1.0) if label == "muon" else 1.0)
        # The same parameters and gradients through both optimizers: Muon's matrices get SP's update (rms 0)
        # or half of it (rms 0.2), the AdamW group its own (muP's vector rules: unchanged here).
        for a, b, label in zip(jax.tree.leaves(upd(s)), jax.tree.leaves(upd(m)), labels):
            want = np.asarray(a) * (0.5 if (rms and label == "muon") else 1.0)
            np.testing.assert_allclose(np.asarray(b), want, rtol=1e-6, atol=1e-9)
    # AdamW under muP at twice the base width does scale the hidden matrices.
    adam_m = tiny_config(model__parametrization="mup", model__mup_base_width=D // 2)
    assert {s for s, l in zip(jax.tree.leaves(lr_scales(adam_m.model, adam_m.optim)), labels) if l == "muon"} == {0.5}


# -- end to end ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("muon_xla_cache")


def _losses(wd):
    rows = [json.loads(x) for x in (pathlib.Path(wd) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"], r["lr"]) for r in rows if "loss" in r]


def test_muon_trains_on_the_mesh_with_accumulation_and_resumes_bitwise(byte_data, cache, tmp_path):
    kw = dict(model__vocab_size=0, num_steps=6, batch_size=8, log_every=1, eval_every=0, eval_batches=2,
              checkpoint__every=0, optim__name="muon", optim__warmup_steps=2, optim__lr=3e-3, optim__muon_lr=0.03,
              optim__muon_weight_decay=0.01, optim__accum_steps=2)
    mesh = dict(mesh__data=2, mesh__fsdp=2, mesh__tensor=2)
    full = train(tiny_config(byte_data, cache, **kw, **mesh), str(tmp_path / "full"), progress=False)
    half = train(tiny_config(byte_data, cache, stop_after=3, **kw, **mesh), str(tmp_path / "split"), progress=False)
    assert half["step"] == 3 and half["stopped_early"]
    resumed = train(tiny_config(byte_data, cache, **kw, **mesh), str(tmp_path / "split"), progress=False)
    assert resumed["resumed_from"] == 3 and resumed["step"] == 6
    assert _losses(tmp_path / "full") == _losses(tmp_path / "split")  # every step's loss, grad norm, lr: exactly
    (_, a), (_, b) = ckpt_lib.load_params(tmp_path / "full"), ckpt_lib.load_params(tmp_path / "split")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
    # The 8-device run with accumulation is the one-device run without it, to rounding; and it learns.
    one = train(tiny_config(byte_data, cache, **{**kw, "optim__accum_steps": 1}), str(tmp_path / "one"), progress=False)
    la, lo = _losses(tmp_path / "full"), _losses(tmp_path / "one")
    np.testing.assert_allclose([r[1] for r in la], [r[1] for r in lo], rtol=2e-4)
    assert la[-1][1] < la[0][1] - 0.5 and one["val_loss"] == pytest.approx(full["val_loss"], rel=1e-3)
    # Muon is not AdamW: the same run under AdamW ends elsewhere.
    adam = train(tiny_config(byte_data, cache, **{**kw, "optim__name": "adamw", "optim__accum_steps": 1}),
                 str(tmp_path / "adam"), progress=False)
    assert abs(adam["val_loss"] - one["val_loss"]) > 1e-3
