"""Matmul rates of this machine's XLA backend: the 2048^3 reference of `gpt2jax.bench` and the three
LM-head matmuls of the fused cross-entropy at the quickstart shape (512 tokens x 256 -> 50304), each in
fp32 and in bf16 (fp32 accumulation), best of `--runs` after a warm-up.

    python experiments/matmul_rates.py [--runs=10]

The head's three forms: logits = h @ w^T (contracting D), dh = g @ w (contracting V), and
dw = g^T @ h (contracting the token axis, the leading axis of both operands), and dw^T = h^T @ g with
h^T given as a row-major array (what the fused loss does below fp32: gpt2jax/losses.py).
"""

from __future__ import annotations

import argparse
import time


def best_of(f, args, runs: int) -> float:
    f(*args).block_until_ready()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f(*args).block_until_ready()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()

    import jax
    import jax.numpy as jnp

    f32 = jnp.float32
    dims = lambda lhs, rhs: (((lhs,), (rhs,)), ((), ()))  # noqa: E731
    forms = {
        "2048^3 a @ b": ((2048, 2048), (2048, 2048), dims(1, 0)),
        "logits h @ w^T": ((512, 256), (50304, 256), dims(1, 1)),
        "dh g @ w": ((512, 50304), (50304, 256), dims(1, 0)),
        "dw g^T @ h": ((512, 50304), (512, 256), dims(0, 0)),
        "dw^T h^T @ g": ((256, 512), (512, 50304), dims(1, 0)),
    }
    key = jax.random.PRNGKey(0)
    print(f"{jax.devices()[0].platform}, best of {a.runs}")
    print(f"{'matmul':<16} {'dtype':<9} {'ms':>8} {'GFLOP/s':>8}")
    for name, (sa, sb, dn) in forms.items():
        k = sa[dn[0][0][0]]
        flops = 2 * (sa[0] * sa[1] // k) * k * (sb[0] * sb[1] // k)
        for dt in (jnp.float32, jnp.bfloat16):
            x = jax.random.normal(key, sa, f32).astype(dt)
            y = jax.random.normal(key, sb, f32).astype(dt)
            f = jax.jit(lambda x, y, dn=dn: jax.lax.dot_general(x, y, dn, preferred_element_type=f32))
            t = best_of(f, (x, y), a.runs)
            print(f"{name:<16} {jnp.dtype(dt).name:<9} {t * 1e3:8.1f} {flops / t / 1e9:8.0f}", flush=True)


if __name__ == "__main__":
    main()
