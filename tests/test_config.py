import importlib.util
import pathlib

import jax
import pytest

from gpt2jax import config as config_lib
from gpt2jax.model import count_params, init_params

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


@pytest.mark.parametrize(
    "name,shape,params",
    [
        ("gpt2_124m", (12, 768, 12), 124_439_808),
        ("gpt2_355m", (24, 1024, 16), 354_823_168),
        ("gpt2_774m", (36, 1280, 20), 774_030_080),
        ("gpt2_1558m", (48, 1600, 25), 1_557_611_200),
    ],
)
def test_gpt2_sizes_match_published_counts(name, shape, params):
    c = load(name)
    config_lib.validate(c)
    assert (c.model.n_layer, c.model.n_embd, c.model.n_head, c.model.block_size) == (*shape, 1024)
    shapes = jax.eval_shape(lambda k: init_params(c.model, k), jax.random.PRNGKey(0))
    assert count_params(shapes, c.model) == params
    assert shapes["wte"].shape == (config_lib.padded_vocab(c.model), c.model.n_embd)
    assert config_lib.padded_vocab(c.model) == 50304


@pytest.mark.parametrize("name", ["tiny", "shakespeare"])
def test_small_configs_validate(name):
    c = load(name)
    config_lib.validate(c)
    assert c.model.vocab_size == 50257


def _bad(**changes):
    c = config_lib.get_config()
    for path, value in changes.items():
        section, key = path.split("__")
        c[section][key] = value
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(c)
    return str(e.value)


def test_validation_names_the_field():
    assert "model.n_embd" in _bad(model__n_embd=100)  # 100 % 12 != 0
    assert "train.batch_size" in _bad(train__batch_size=10, optim__accum_steps=4)
    assert "train.seq_len" in _bad(train__seq_len=2048)
    assert "model.dtype" in _bad(model__dtype="float8")
    assert "model.attention" in _bad(model__attention="cudnn")  # fp32 + cudnn
    assert "model.remat" in _bad(model__remat="sometimes")
    assert "optim.min_lr" in _bad(optim__min_lr=1.0)
    assert "mesh" in _bad(mesh__data=-1, mesh__fsdp=-1)


def test_unknown_key_is_refused():
    c = config_lib.get_config()
    with pytest.raises(AttributeError):
        c.model.n_layers = 3  # misspelt: the config is locked
    with pytest.raises(config_lib.ConfigError, match="model.n_layers"):
        config_lib.from_dict({"model": {"n_layers": 3}})


def test_dict_round_trip():
    c = load("gpt2_355m")
    c2 = config_lib.from_dict(config_lib.to_dict(c))
    assert c2 == c
    assert c2.mesh.rules == c.mesh.rules
