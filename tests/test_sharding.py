"""Sharding on 8 simulated CPU devices: the same run on every mesh, the layouts the rules ask for,
divisibility errors before compile, and the memory planner (1.5B on FSDP x 8 with scan)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gpt2jax import config as config_lib
from gpt2jax import sharding as shd
from gpt2jax.data import loader
from gpt2jax.train import Trainer

from conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
VOCAB, SEQ, BATCH, STEPS = 1000, 32, 8, 6
MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 2, 4)]


def synthetic_tokens(n=40_000, vocab=VOCAB, used=64, seed=0):
    """A learnable stream over `used` of the `vocab` ids: mostly a fixed successor, 10% noise."""
    rng = np.random.default_rng(0)
    ids = rng.choice(vocab, used, replace=False)
    succ = rng.permutation(used)
    rng = np.random.default_rng(seed)
    noise = rng.random(n) < 0.1
    rand = rng.integers(0, used, n)
    x = np.empty(n, np.int64)
    x[0] = 0
    for i in range(1, n):
        x[i] = rand[i] if noise[i] else succ[x[i - 1]]
    return ids[x].astype(np.uint16)


def write_data(d: pathlib.Path) -> str:
    d.mkdir(parents=True, exist_ok=True)
    meta = {"dtype": "uint16", "splits": {}}
    for split, seed in (("train", 0), ("val", 1)):
        t = synthetic_tokens(seed=seed, n=40_000 if split == "train" else 4_000)
        t.tofile(d / f"{split}.bin")
        meta["splits"][split] = {"documents": 1, "tokens": len(t), "max_token_id": int(t.max())}
    (d / "meta.json").write_text(json.dumps(meta))
    return str(d)


def small_config(data_dir, mesh=(1, 1, 1), **model):
    """2 layers x 64 wide, 4 heads (so tensor=4 divides heads), vocabulary 1000 (padded to 1024)."""
    over = {"model__n_head": 4, "model__block_size": SEQ, "model__vocab_size": VOCAB}
    over.update({f"model__{k}": v for k, v in model.items()})
    c = tiny_config(data_dir, "", num_steps=100, batch_size=BATCH, seed=0, log_every=1, eval_every=0, eval_batches=1,
                    optim__lr=1e-2, optim__min_lr=1e-3, optim__warmup_steps=0, checkpoint__every=0, checkpoint__keep=1,
                    **over)
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
    return c


def _flat(tree):
    return {
        "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): x
        for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def run(config, devices):
    """Step-0 loss and gradients, then STEPS train steps; plus the layouts that were used."""
    mesh = shd.make_mesh(config.mesh, devices)
    tr = Trainer(config, mesh)
    params, opt = tr.init_state(0)
    ds = loader.TokenDataset(config.data.dir, "train", SEQ, VOCAB)
    grad_fn = jax.jit(
        jax.value_and_grad(lambda p, b: tr._loss(p, b, None)),
        in_shardings=(tr.param_sharding, tr.batch_sharding),
        out_shardings=(tr.replicated, tr.param_sharding),
    )
    batches = [tr.global_batch(loader.train_batch(ds, s, BATCH, 0, *tr.batch_slice)) for s in range(STEPS)]
    loss0, grads0 = grad_fn(params, batches[0])
    out = {
        "loss0": float(loss0),
        "grads0": {k: np.asarray(v) for k, v in _flat(grads0).items()},
        "params": {k: (v.sharding, v.addressable_shards[0].data.shape) for k, v in _flat(params).items()},
        "opt": {k: (v.sharding, v.addressable_shards[0].data.shape) for k, v in _flat(opt).items()},
        "batch": batches[0].sharding,
    }
    lowered = tr.train_step.lower(params, opt, batches[0], jnp.int32(0))
    out["hlo"] = lowered.as_text()
    step_fn = lowered.compile()
    losses = []
    for s in range(STEPS):
        params, opt, o = step_fn(params, opt, batches[s], jnp.int32(s))
        losses.append(float(o["loss"]))
    out["losses"] = losses
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def reference(data_dir):
    return run(small_config(data_dir), jax.devices()[:1])


@pytest.fixture(scope="module", params=MESHES, ids=lambda m: "mesh%dx%dx%d" % m)
def mesh_run(request, data_dir):
    return request.param, run(small_config(data_dir, request.param), jax.devices())


def assert_same_run(got, ref):
    # Step 0: the loss and every gradient agree to 1e-5 relative (per parameter, relative to
    # that gradient's largest entry, so entries that are ~0 do not demand exact cancellation).
    assert got["loss0"] == pytest.approx(ref["loss0"], rel=1e-5)
    for name, g_ref in ref["grads0"].items():
        g = got["grads0"][name]
        scale = np.abs(g_ref).max()
        assert scale > 0, name
        np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5 * scale, err_msg=name)
    # Steps 1-5 (losses after 1..5 updates): 1e-4 relative.
    np.testing.assert_allclose(got["losses"][1:], ref["losses"][1:], rtol=1e-4)


def test_reference_run_learns(reference):
    assert reference["loss0"] == pytest.approx(reference["losses"][0], rel=1e-6)
    assert reference["losses"][-1] < reference["losses"][0] - 0.3  # the run is not trivially flat


def test_same_run_on_every_mesh(mesh_run, reference):
    _, got = mesh_run
    assert_same_run(got, reference)


def expected_spec(name, mesh):
    """The rules (DEFAULT_RULES) written out by hand; mesh axes of size 1 stay in the spec."""
    d, f, t = "data", "fsdp", "tensor"
    by_name = {
        "wte": P(t, f),
        "wpe": P(None, f),
        "ln_f/scale": P(f),
        "ln_f/bias": P(f),
        "h/attn/c_attn/kernel": P(None, f, None, t, None),
        "h/attn/c_attn/bias": P(None, None, t, None),
        "h/attn/c_proj/kernel": P(None, t, None, f),
        "h/attn/c_proj/bias": P(None, f),
        "h/mlp/c_fc/kernel": P(None, f, t),
        "h/mlp/c_fc/bias": P(None, t),
        "h/mlp/c_proj/kernel": P(None, t, f),
        "h/mlp/c_proj/bias": P(None, f),
    }
    del d
    if name.startswith("h/ln_"):
        return P(None, f)
    return by_name[name]


def test_parameters_and_optimizer_state_are_sharded_as_the_rules_say(mesh_run, data_dir):
    mesh_shape, got = mesh_run
    sizes = dict(zip(("data", "fsdp", "tensor"), mesh_shape))
    c = small_config(data_dir, mesh_shape)
    from gpt2jax.model import param_shapes

    shapes = {k: v for k, v in _flat_shapes(param_shapes(c.model)).items()}
    for name, (sharding, shard_shape) in got["params"].items():
        spec = expected_spec(name, sizes)
        assert tuple(sharding.spec) == tuple(spec), name
        want = tuple(n // (sizes[a] if a else 1) for n, a in zip(shapes[name], tuple(spec) + (None,) * 9))
        assert shard_shape == want, (name, shard_shape, want)
    # Adam's moments: the same layout and shard shapes as their parameters, never a full copy.
    moments = {k: v for k, v in got["opt"].items() if "/mu/" in k or "/nu/" in k}
    assert len(moments) == 2 * len(got["params"])
    for k, (sharding, shard_shape) in moments.items():
        pname = k.split("/mu/")[-1].split("/nu/")[-1]
        assert sharding.spec == got["params"][pname][0].spec and shard_shape == got["params"][pname][1], k
    # All of it: each device holds 1/(fsdp x tensor) of the moments, give or take the small
    # small tensors (biases, LayerNorms) that lack one of the sharded dimensions.
    per_device = sum(np.prod(s) for _, s in moments.values())
    total = 2 * sum(np.prod(shapes[n]) for n in shapes)
    n = mesh_shape[1] * mesh_shape[2]
    assert total / n <= per_device <= total / n * 1.1 + (total if n == 1 else 0)
    # The batch is placed with the batch sharding; activations carry the rules' constraints.
    assert tuple(got["batch"].spec) == (("data", "fsdp"), None)
    assert '[{"data", "fsdp"}, {}, {}]' in got["hlo"]  # residual stream x_BTD (batch, seq, embed)
    assert '[{"data", "fsdp"}, {}, {"tensor"}]' in got["hlo"]  # logits (batch, seq, vocab)


def _flat_shapes(tree):
    return {
        "/".join(str(k.key) for k in path): s
        for path, s in jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, tuple))[0]
    }


def test_unrolled_and_remat_give_the_same_run(data_dir, reference):
    # (remat 'full' with scan, and the others, are compared unsharded in tests/test_model.py.)
    c = small_config(data_dir, (1, 2, 4), scan_layers=False, remat="dots")
    assert_same_run(run(c, jax.devices()), reference)


def test_indivisible_dimension_is_an_error_before_compile(data_dir, monkeypatch):
    def no_compile(*a, **k):
        raise AssertionError("compiled before validating the mesh")

    monkeypatch.setattr(jax, "jit", no_compile)
    c = small_config(data_dir, (4, 1, 2), n_embd=100, n_head=25)
    with pytest.raises(config_lib.ConfigError, match=r"'heads' of size 25 .* mesh axes tensor of size 2"):
        Trainer(c)
    c = small_config(data_dir, (1, 8, 1), n_embd=100, n_head=25)  # 100 over fsdp=8
    with pytest.raises(config_lib.ConfigError, match=r"'embed' of size 100 .* fsdp of size 8"):
        Trainer(c)
    c = small_config(data_dir, (1, 1, 8))  # 4 heads over tensor=8
    with pytest.raises(config_lib.ConfigError, match=r"'heads' of size 4 .* tensor of size 8"):
        Trainer(c)
    # Rules apply in order and a mesh axis is used once per array: with 'mlp' -> (fsdp, tensor)
    # first, the MLP kernels' 'embed' dimension stays whole, so only mlp = 384 must divide by 8.
    c = small_config(data_dir, (1, 4, 2), n_head=2, n_embd=96)
    c.mesh.rules = (("mlp", ("fsdp", "tensor")),) + tuple(r for r in c.mesh.rules if r[0] != "mlp")
    monkeypatch.undo()
    s = Trainer(c).param_sharding
    assert s["h"]["mlp"]["c_fc"]["kernel"].spec == P(None, None, ("fsdp", "tensor"))
    assert s["h"]["attn"]["c_attn"]["kernel"].spec == P(None, "fsdp", None, "tensor", None)


def test_misspelt_rule_is_an_error(data_dir):
    c = small_config(data_dir, (8, 1, 1))
    c.mesh.rules = c.mesh.rules + (("head", "tensor"),)
    with pytest.raises(config_lib.ConfigError, match="unknown logical axis 'head'"):
        Trainer(c)
    c.mesh.rules = (("embed", "fsdpp"),)
    with pytest.raises(config_lib.ConfigError, match="'embed' -> unknown mesh axis 'fsdpp'"):
        Trainer(c)


def test_process_batch_slice_single_process(data_dir):
    c = small_config(data_dir, (2, 2, 2))
    tr = Trainer(c)
    assert tr.batch_slice == (0, 1)


# ------------------------------------------------------------------------------- planner
def gpt2_1558m():
    import importlib.util

    spec = importlib.util.spec_from_file_location("c1558", ROOT / "configs" / "gpt2_1558m.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def test_plan_1558m_fsdp8_scan():
    """The full 1.5B train step (48 layers, scan, 16 micro-batches of 32) compiled ahead of time on
    8 simulated CPU devices with FSDP; nothing is allocated."""
    from gpt2jax.model import param_axes, param_shapes
    from gpt2jax.plan import format_plan, plan

    c = gpt2_1558m()
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 8, 1
    assert c.model.scan_layers
    p = plan(c)
    assert p["num_devices"] == 8 and p["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert 1.55e9 < p["params"] < 1.56e9
    # Parameters: each device holds 1/8 of every tensor with an 'embed' dimension (fsdp) and all of
    # the two bias vectors without one (c_attn and c_fc biases, 0.5M of 1.56G entries).
    shapes = _flat_shapes(param_shapes(c.model))
    axes = _flat_shapes(param_axes(c.model))
    total = 4 * sum(int(np.prod(s)) for s in shapes.values())
    per_device = 4 * sum(int(np.prod(s)) // (8 if "embed" in axes[k] else 1) for k, s in shapes.items())
    assert p["param_bytes_total"] == total
    assert p["param_bytes_per_device"] == per_device
    assert per_device == pytest.approx(total / 8, rel=3e-3)  # = full size / FSDP degree, +0.24%
    # Optimizer state: Adam's two moments laid out like the parameters, plus replicated scalars.
    assert p["opt_bytes_total"] == pytest.approx(2 * total, abs=64)
    assert p["opt_bytes_per_device"] == pytest.approx(2 * per_device, abs=64)
    x = p["xla_memory_per_device"]
    # XLA's arguments: this device's parameters + optimizer state + batch rows.
    assert x["argument"] == pytest.approx(p["param_bytes_per_device"] + p["opt_bytes_per_device"], rel=1e-3)
    assert x["temp"] > 0 and x["peak"] >= x["argument"]
    assert p["flops_xla_per_device"] > 0 and p["flops_analytic_per_device"] == pytest.approx(
        p["flops_analytic_per_step"] / 8
    )
    text = format_plan(p)
    assert "backend 'cpu'" in text and "parameters" in text and "optimizer state" in text
    print("\n" + text)


def test_plan_cli_simulated_devices(tmp_path):
    out = tmp_path / "plan.json"
    cmd = [
        sys.executable, "-m", "gpt2jax.plan", f"--config={ROOT / 'configs' / 'tiny.py'}", "--devices=4",
        "--config.mesh.data=1", "--config.mesh.fsdp=2", "--config.mesh.tensor=2", f"--json={out}",
        "--device_memory_gib=16",
    ]
    env = {**os.environ, "XLA_FLAGS": ""}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    p = json.loads(out.read_text())
    assert p["num_devices"] == 4 and p["mesh"] == {"data": 1, "fsdp": 2, "tensor": 2}
    assert "fits" in r.stdout and "XLA estimates it for backend 'cpu'" in r.stdout
    # An indivisible mesh is one clear error naming the dimension and the mesh axis.
    bad = subprocess.run(cmd[:-1] + ["--config.model.n_head=1"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert bad.returncode != 0 and "'heads' of size 1" in bad.stderr and "tensor of size 2" in bad.stderr
