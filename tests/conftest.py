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
