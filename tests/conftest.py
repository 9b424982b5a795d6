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


@pytest.fixture(scope="session")
def byte_data(tmp_path_factory):
    """A small byte-level corpus (vocabulary 257: a cheap head), prepared once per test session."""
    from gpt2jax.data.prepare import prepare

    d = tmp_path_factory.mktemp("bytes_corpus")
    (d / "a.txt").write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400)))
    out = tmp_path_factory.mktemp("bytes_data")
    prepare(f"text:{d}/a.txt", str(out), split="tail", progress=False, tokenizer="bytes")
    return out


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    return tiny_config


# -- scheduling over the 2 workers of `pytest -n 2 --dist loadfile` -------------------------------------
# xdist hands out whole files, one at a time, to whichever worker runs low; by default it queues them by
# their number of tests, so a slow file with few tests (test_variants: 9 tests, ~6 min) could start last and
# leave one worker idle for minutes. Queued instead longest first (the greedy longest-processing-time
# rule), the last files to start are the short ones. Seconds per file, both workers busy, 2-core AMD EPYC,
# 2026-12-05 (`--durations`); files not listed are short and keep their place after these.
FILE_SECONDS = {
    "test_variants.py": 350, "test_sharding.py": 196, "test_faults.py": 175, "test_coord_check.py": 164,
    "test_misuse2.py": 155, "test_gpu_check.py": 150, "test_misuse.py": 138, "test_train.py": 123,
    "test_slurm.py": 100, "test_checkpoint.py": 95, "test_sweep.py": 89, "test_multihost.py": 80,
    "test_quickstart.py": 75, "test_losses.py": 73, "test_bench.py": 71, "test_branch.py": 70,
    "test_lm_eval.py": 69, "test_house.py": 59, "test_watermark.py": 56, "test_eval.py": 44,
    "test_run_tokenizer.py": 43, "test_wandb_log.py": 43, "test_muon.py": 40, "test_model.py": 32,
}


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # xdist: keep the order collection gives
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    order = {id(it): i for i, it in enumerate(items)}
    items.sort(key=lambda it: (-FILE_SECONDS.get(pathlib.Path(str(it.fspath)).name, 0), order[id(it)]))
