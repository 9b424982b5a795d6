"""gpt2jax.bench: the shape of its output (nothing about speed is asserted)."""

import json
import math
import os
import subprocess
import sys

from conftest import ROOT

# The tiny config with a small vocabulary, so that compiling it (twice) stays quick.
SMALL = ["--config.model.vocab_size=1000", "--config.train.batch_size=8"]
REQUIRED = ("tokens_per_sec", "mfu", "peak_flops", "step_time_s", "compile_s",
            "forward_tokens_per_sec", "eval_tokens_per_sec")


def _positive(r, key):
    assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (key, r[key])


def test_cli_json_with_torch_reference():
    env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="")  # one CPU device, as a user runs it
    cmd = [sys.executable, "-m", "gpt2jax.bench", f"--config={ROOT}/configs/tiny.py", *SMALL,
           "--steps=2", "--warmup=1", "--matmul_runs=10", "--compare=torch", "--json"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    r = json.loads(lines[-1])  # the last line of stdout is the JSON object
    assert "\n" not in lines[-1]
    for k in REQUIRED + ("torch_tokens_per_sec", "ratio_vs_torch"):
        _positive(r, k)
    assert r["platform"] == "cpu" and r["devices"] == 1
    assert r["cpu"]["model"] and r["cpu"]["cores"] >= 1 and isinstance(r["cpu"]["vector_extensions"], list)
    assert any(line.startswith("host CPU") for line in lines[:-1])
    assert r["step_time"]["n"] == 2 and r["step_time"]["min"] <= r["step_time_s"] <= r["step_time"]["max"]
    B, T = 8, 32
    assert math.isclose(r["tokens_per_sec"], B * T / r["step_time_s"], rel_tol=1e-9)
    assert math.isclose(r["ratio_vs_torch"], r["tokens_per_sec"] / r["torch_tokens_per_sec"], rel_tol=1e-9)
    assert math.isclose(r["mfu"], r["flops_per_token"] * r["tokens_per_sec"] / r["peak_flops"], rel_tol=1e-9)
    assert "2048^3" in r["peak_source"] and "6N" in r["flops_formula"]
    # Both models trained: losses finite and near ln(vocab) at the start.
    for loss in (r["loss_first"], r["torch"]["loss_first"]):
        assert abs(loss - math.log(1000)) < 1.0
    assert r["torch"]["dtype"] == "float32" and r["torch"]["compiled"] is False
    assert r["memory"]["temp_bytes"] > 0
    # The human-readable report comes first.
    assert any(line.startswith("tokens/s") for line in lines[:-1])
    assert any(line.startswith("ratio") for line in lines[:-1])


def test_host_cpu_reads_model_and_vector_extensions(tmp_path):
    from gpt2jax import bench

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu sse avx avx2 fma avx512f "
                    "avx512_bf16 amx_tile\n\nprocessor\t: 1\nmodel name\t: Example CPU 9000\n")
    cpu = bench.host_cpu(str(info))
    assert cpu["model"] == "Example CPU 9000"
    assert cpu["vector_extensions"] == ["avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"]
    assert bench.host_cpu(str(tmp_path / "missing"))["vector_extensions"] == []


def test_run_without_reference_on_a_mesh():
    """In-process, on the 8 simulated devices (batch split over them), no --compare."""
    import jax

    from conftest import tiny_config
    from gpt2jax import bench

    c = tiny_config(model__vocab_size=1000)
    r = bench.run(c, steps=2, warmup=1, matmul_runs=10, progress=False)
    assert r["devices"] == jax.device_count() == 8
    for k in REQUIRED:
        _positive(r, k)
    assert "torch_tokens_per_sec" not in r and "ratio_vs_torch" not in r
    # Requests 16..block_size, every one scored; only real tokens counted.
    assert r["eval"]["requests"] > 0 and 16 * r["eval"]["requests"] <= r["eval"]["tokens"] <= r["eval"]["padded_tokens"]
    assert "tokens/s" in bench.format_report(r)
    json.dumps(r)  # JSON-ready
