"""Fingerprint of the compiled train step of a config: XLA's optimised HLO with instruction names and source
metadata stripped, so two checkouts that build the same program print the same hash.

    python experiments/step_hlo.py shakespeare [SECTION.KEY=VALUE ...] [--out=OUT.txt]    (a config's name or path)

Used to show that a refactor leaves the default model's program unchanged (run it in both checkouts). Overrides
are parsed to each field's type as `--config.a.b=v` would be, e.g. `train.loss_rows=0 model.dtype=float32`.
"""

import hashlib
import os
import re
import sys

sys.path.insert(0, os.getcwd())


def normalized_hlo(config_path: str, overrides=()) -> list[str]:
    import jax
    import jax.numpy as jnp

    from gpt2jax.scaling.overrides import apply_overrides, load_config
    from gpt2jax.train import Trainer

    # the same loading and typed overrides as a sweep's runs (`--config.a.b=v` semantics)
    c = apply_overrides(load_config(config_path), dict(item.split("=", 1) for item in overrides), "step_hlo")
    c.train.compile_cache = ""
    tr = Trainer(c)
    params, opt = tr.init_state(0)
    T = c.train.seq_len or c.model.block_size
    batch = jax.ShapeDtypeStruct((c.train.batch_size, T + 1), jnp.int32, sharding=tr.batch_sharding)
    step = jax.ShapeDtypeStruct((), jnp.int32, sharding=tr.replicated)
    text = tr.train_step.lower(params, opt, batch, step).compile().as_text()
    out = []
    for line in text.splitlines():
        if " = " not in line or re.match(r'^\d+ "', line):  # instructions only, not the source tables
            continue
        line = re.sub(r", metadata=\{[^}]*\}", "", line)
        line = re.sub(r"%[\w.\-]+", "%", line)
        out.append(re.sub(r", (origin|stack_frame_id|frontend_attributes)=[^,}]*", "", line))
    return out


if __name__ == "__main__":
    args = sys.argv[2:]
    out = [a.removeprefix("--out=") for a in args if a.startswith("--out=")]
    lines = normalized_hlo(sys.argv[1], [a for a in args if not a.startswith("--out=")])
    print(hashlib.sha256("\n".join(lines).encode()).hexdigest(), f"{len(lines)} instructions")
    if out:
        with open(out[0], "w") as f:
            f.write("\n".join(lines) + "\n")
