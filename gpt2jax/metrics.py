"""FLOPs/MFU arithmetic and the metric writers (JSONL, TensorBoard; the console bar lives in train).

FLOPs per token follow the PaLM paper's appendix B: 6 N + 12 n_layer n_embd T, where N counts the
parameters that do matmuls (gpt2jax.model.matmul_params, from the parameter declarations: everything but
lookup tables -- the position table, an untied token table -- and padding; a tied LM head counted once) and the second term is attention's score and value matmuls (forward + backward). For GPT-2 124M
at T = 1024 this is 0.855 GFLOPs per token.
"""

from __future__ import annotations

import json
import os

import jax


# Dense bf16 peak TFLOP/s per device, by substrings of jax's device_kind (vendor data sheets).
PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("TPU v6", 918.0),
    ("TPU v5p", 459.0),
    ("TPU v5 lite", 197.0),
    ("TPU v5e", 197.0),
    ("TPU v4", 275.0),
    ("TPU v3", 123.0),
)


def flops_per_token(model_cfg, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token."""
    from gpt2jax.model import matmul_params

    return 6.0 * matmul_params(model_cfg) + 12.0 * model_cfg.n_layer * model_cfg.n_embd * seq_len


def peak_flops_per_device(train_cfg=None) -> float | None:
    """Peak FLOP/s of one device, or None when unknown (e.g. CPU): then MFU is not reported."""
    if train_cfg is not None and train_cfg.peak_tflops > 0:
        return train_cfg.peak_tflops * 1e12
    kind = jax.devices()[0].device_kind
    for key, tf in PEAK_TFLOPS:
        if key.lower() in kind.lower():
            return tf * 1e12
    return None


class Writer:
    """metrics.jsonl (one JSON object per row) plus TensorBoard events, from process 0 only."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tb"))
        except ImportError:  # pragma: no cover - tensorboardX is a dependency
            self._tb = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps(row) + "\n")
        if self._tb is not None:
            step = row["step"]
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and v is not None:
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._jsonl:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]

