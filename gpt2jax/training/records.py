"""What a run records of itself: run.json's contents (config, code version, library versions, devices,
parameter counts, FLOPs per token), its vocabulary and tokenizer, bits per byte, and the metrics file
trimmed back to a restored step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import jax
import numpy as np

from gpt2jax import config as config_lib
from gpt2jax import metrics as metrics_lib
from gpt2jax.data import loader
from gpt2jax.model import count_params


def git_commit() -> str | None:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except Exception:
        return None


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_info(config, params) -> dict:
    m = config.model
    return {
        "config": config_lib.to_dict(config),
        "git_commit": git_commit(),
        "versions": versions(),
        "devices": {
            "count": jax.device_count(),
            "local_count": jax.local_device_count(),
            "process_count": jax.process_count(),
            "kind": jax.devices()[0].device_kind,
            "platform": jax.devices()[0].platform,
        },
        "params": count_params(params, m),
        "params_non_embedding": count_params(params, m, non_embedding=True),
        "flops_per_token": metrics_lib.flops_per_token(m, config_lib.seq_len(config)),
        "command": sys.argv,
    }


def resolve_vocab(config) -> None:
    """model.vocab_size=0 takes the dataset's vocabulary (its meta.json); any other value must equal it, for
    data that records its tokenizer. ConfigError naming both numbers, before anything compiles."""
    vocab, rec = loader.dataset_vocab(config.data.dir)
    m = config.model
    if m.vocab_size == 0:
        if vocab is None:
            raise config_lib.ConfigError(
                f"config.model.vocab_size: 0 takes the dataset's vocabulary, but {config.data.dir}/meta.json "
                "records none (missing, or prepared by an older version): set model.vocab_size")
        m.vocab_size = vocab
    elif vocab is not None and m.vocab_size != vocab:
        raise config_lib.ConfigError(
            f"config.model.vocab_size: {m.vocab_size} is not the vocabulary of the data in {config.data.dir} "
            f"({vocab}, tokenizer {rec.get('name')}): set model.vocab_size={vocab}, or 0 for the dataset's")


def bits_per_byte(loss_nats: float | None, tokens: int, num_bytes: int | None) -> float | None:
    """Bits per UTF-8 byte from a mean loss in nats per token over a split of `tokens` tokens that stand
    for `num_bytes` bytes: loss * tokens / bytes / ln 2 (comparable across vocabularies)."""
    if loss_nats is None or not num_bytes:
        return None
    return float(loss_nats) * tokens / num_bytes / float(np.log(2))


def dataset_bytes(ds, record) -> int | None:
    """The split's UTF-8 bytes: meta.json's count; for local GPT-2 data prepared before it was kept, counted
    from the file with GPT-2's token lengths."""
    if ds.bytes is not None:
        return int(ds.bytes)
    if record or ds.tokens is None:
        return None
    from gpt2jax.data.prepare import split_bytes
    from gpt2jax.tokenizer import get_tokenizer

    try:
        return split_bytes(str(ds.bin_path), get_tokenizer().byte_lengths())
    except IndexError:  # ids beyond GPT-2's (hand-made data): no byte count
        return None


def copy_tokenizer_file(record, data_dir: str, workdir: str) -> None:
    """A BPE dataset's tokenizer.json, copied into the workdir (atomically) so that the run's tools read it
    without the data."""
    import shutil

    name = (record or {}).get("file")
    if not name:
        return
    src, dst = os.path.join(str(data_dir), name), os.path.join(workdir, name)
    if os.path.exists(dst):
        return
    tmp = f"{dst}.{os.getpid()}.tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def truncate_metrics(path: str, last_step: int) -> None:
    """Keep the metrics rows of steps <= last_step (and drop a torn last line)."""
    if not os.path.exists(path):
        return
    keep, changed = [], False
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
                ok = row["step"] <= last_step
            except (ValueError, KeyError, TypeError):
                ok = False
            if ok and line.endswith("\n"):
                keep.append(line)
            else:
                changed = True
    if changed:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)
