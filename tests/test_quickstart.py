"""The README quickstart's main job (`make quickstart`), shortened: prepare -> train -> sample."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_quickstart_pipeline_shortened(tmp_path):
    venv = pathlib.Path(sys.prefix)
    args = " ".join([
        "--config.train.num_steps=3", "--config.train.log_every=1", "--config.train.eval_batches=2",
        f"--config.train.compile_cache={tmp_path / 'xla'}",
    ])
    cmd = [
        "make", "-C", str(ROOT), "quickstart",
        # Use the running environment as it is: no install step.
        f"VENV={venv}", "-o", f"{venv}/.installed", "-o", f"{venv}/bin/python",
        f"WORKDIR={tmp_path / 'run'}", f"DATA={tmp_path / 'data'}", f"TRAIN_ARGS={args}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "XLA_FLAGS": ""}, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["split_rule"] == "tail_tokens" and meta["splits"]["train"]["documents"] == 42
    total = meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"]
    assert meta["splits"]["val"]["tokens"] == round(0.05 * total)
    assert "final val_loss" in out.stdout
    assert (tmp_path / "run" / "checkpoints" / "3").is_dir()
    # The sample is printed last and starts with the prompt.
    assert "ROMEO." in out.stdout.split("final val_loss")[-1]
