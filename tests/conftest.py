"""Test setup: 8 simulated CPU devices (set before jax is imported) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import pathlib  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shakespeare_dir(tmp_path_factory):
    """The real default corpus, prepared once per test session."""
    from gpt2jax.data.prepare import prepare

    out = tmp_path_factory.mktemp("shakespeare")
    prepare("shakespeare", str(out), progress=False)
    return out


def write_spec(tmp_path, body: str, name: str = "spec.py") -> str:
    """A sweep spec file in tmp_path: `from gpt2jax.scaling import *` and then body."""
    path = tmp_path / name
    path.write_text("from gpt2jax.scaling import *\n\n" + body)
    return str(path)


def tiny_config(data_dir=None, cache_dir="", **overrides):
    """configs/tiny.py (2 layers x 64, 2 heads, context 32) -- the one tiny config of the tests -- with
    data.dir / train.compile_cache set and overrides as `section__key=value` (a bare key is in `train`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny", ROOT / "configs" / "tiny.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    if data_dir is not None:
        c.data.dir = str(data_dir)
    c.train.compile_cache = str(cache_dir)
    for k, v in overrides.items():
        section, key = k.split("__") if "__" in k else ("train", k)
        c[section][key] = v
    return c


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    return tiny_config
