"""experiments/gpu_check.sh --cpu_smoke: the accelerator check's steps, on the tiny config on CPU."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_cpu_smoke_runs_every_step(tmp_path):
    out = tmp_path / "results.json"
    env = dict(os.environ, GPU_CHECK_OUT=str(out), XLA_FLAGS="", PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_check.sh"), "--cpu_smoke"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["ok"] is True and r["mode"] == "cpu_smoke" and "error" not in r
    c = r["checks"]
    assert c["bf16_vs_fp32"]["max_rel_diff"] <= c["bf16_vs_fp32"]["rtol"]
    assert len(c["bf16_vs_fp32"]["fp32"]) == len(c["bf16_vs_fp32"]["bf16"]) >= 2
    assert tuple(c["attention"]["pair"]) == ("xla", "einsum")
    for name in ("small", "large"):
        assert r["bench"][name]["tokens_per_sec"] > 0
    assert r["bench"]["small"]["ratio_vs_torch"] > 0
    assert r["bench"]["large"]["shape"]["remat"] == "dots_no_batch"


def test_refuses_a_missing_wheels_dir(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_check.sh"), str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "GPU CHECK FAILED" in proc.stderr and "nope" in proc.stderr


def test_gpu_mode_installs_offline_then_refuses_cpu(tmp_path):
    """The real mode: installs the project (no network, empty WHEELS_DIR: nothing else is missing
    here) into a temporary target, imports it from there, and fails loudly without a GPU."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    out = tmp_path / "gpu.json"
    env = dict(os.environ, GPU_CHECK_OUT=str(out), XLA_FLAGS="", PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    proc = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_check.sh"), str(wheels)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "GPU CHECK FAILED: no GPU" in proc.stderr
    imported_from = proc.stdout.split("gpt2jax from ")[1].split()[0]
    # the installed copy, unless the offline build was impossible here (then it says so)
    assert not imported_from.startswith(str(ROOT)) or "building gpt2jax offline failed" in proc.stdout
    r = json.loads(out.read_text())
    assert r["ok"] is False and "no GPU" in r["error"]
