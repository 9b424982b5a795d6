"""The accelerator check behind experiments/gpu_check.sh: correctness first, then benchmarks, all
results in one JSON file. Exits non-zero, naming the check, on any mismatch.

    python experiments/gpu_check.py --out results.json            # one NVIDIA GPU
    python experiments/gpu_check.py --cpu_smoke --out results.json  # the same steps, tiny, on CPU

Checks (tolerances are stated in the results file next to each measured difference):
  1. bf16 vs fp32 training: the same model, init and batch trained for a few steps with
     model.dtype float32 and bfloat16 (parameters fp32 in both); every step's loss must agree within
     LOSS_RTOL (relative). bf16 keeps 8 mantissa bits (relative rounding 2^-9 = 0.2%); over a few
     steps the trajectories drift by well under 1% on a falling loss.
  2. attention: jax.nn.dot_product_attention with implementation='cudnn' against 'xla' on the
     same bf16 q, k, v (causal), each compared with an fp32 XLA result: max |difference| within
     ATTN_ATOL (outputs are O(1); bf16's spacing there is 2^-8). And the whole model's logits
     with model.attention 'cudnn' vs 'xla': max |difference| within LOGITS_ATOL. On CPU (no cuDNN)
     the pair is 'xla' vs an explicit einsum-softmax-einsum, and the model-level check is skipped.
  3. blockwise and fused cross-entropy (gpt2jax.losses, what train.loss_block > 0 and
     train.loss_rows > 0 train with) against the dense logits' loss on the same parameters and
     batch: relative difference within CE_RTOL (fp32).
Benchmarks (gpt2jax.bench.run): GPT-2 124M at T = 1024 (bf16, cuDNN attention) against the
transformers reference (bf16 autocast, torch.compile), and GPT-2 1.5B at T = 1024 with scan over
layers and remat (dots_no_batch), ours only. --cpu_smoke runs both on the tiny config (a 1000-token
vocabulary, 4 layers for the "large" one) with 2 timed steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback

LOSS_RTOL = 1e-2
ATTN_ATOL = 2e-2
LOGITS_ATOL = 1e-1
CE_RTOL = 1e-4


class Mismatch(AssertionError):
    pass


def _tiny(root):
    spec = importlib.util.spec_from_file_location("tiny", os.path.join(root, "configs", "tiny.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    c.model.vocab_size = 1000
    return c


def _gpt2(size: str, batch: int, dtype: str):
    from gpt2jax.config import gpt2_config

    shapes = {"124m": (12, 768, 12, 6e-4), "1558m": (48, 1600, 25, 2e-4)}
    L, D, H, lr = shapes[size]
    c = gpt2_config(n_layer=L, n_embd=D, n_head=H, lr=lr)
    c.train.batch_size, c.optim.accum_steps = batch, 1
    c.model.dtype = dtype
    return c


def _set(c, **kw):
    c = c.copy_and_resolve_references()
    for k, v in kw.items():
        section, key = k.split("__")
        c[section][key] = v
    return c


def check_bf16_vs_fp32(base, steps: int) -> dict:
    """Train the same init on one fixed batch in fp32 and bf16 compute; compare losses per step."""
    import jax.numpy as jnp

    from gpt2jax import bench
    from gpt2jax.train import Trainer

    traj = {}
    for dt in ("float32", "bfloat16"):
        c = _set(base, model__dtype=dt, model__attention="xla", optim__warmup_steps=1)
        tr = Trainer(c)
        p, o = tr.init_state(0)
        batch = tr.global_batch(bench.local_rows(tr, bench.synthetic_rows(c)))
        losses = []
        for s in range(steps):
            p, o, out = tr.train_step(p, o, batch, jnp.asarray(s, jnp.int32))
            losses.append(float(out["loss"]))
        traj[dt] = losses
        del p, o
    rel = [abs(a - b) / abs(a) for a, b in zip(traj["float32"], traj["bfloat16"])]
    res = {"fp32": traj["float32"], "bf16": traj["bfloat16"], "max_rel_diff": max(rel), "rtol": LOSS_RTOL}
    if not traj["float32"][-1] < traj["float32"][0]:
        raise Mismatch(f"bf16_vs_fp32: the fp32 loss did not fall over {steps} steps: {traj['float32']}")
    if max(rel) > LOSS_RTOL:
        raise Mismatch(f"bf16_vs_fp32: losses differ by {max(rel):.3g} relative (> {LOSS_RTOL}): {res}")
    return res


def _einsum_attention(q, k, v):
    import jax
    import jax.numpy as jnp

    T, K = q.shape[1], q.shape[-1]
    s = jnp.einsum("bthk,bshk->bhts", q, k).astype(jnp.float32) / jnp.sqrt(jnp.float32(K))
    s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s, -1e9)
    return jnp.einsum("bhts,bshk->bthk", jax.nn.softmax(s, -1).astype(v.dtype), v)


def check_attention(on_gpu: bool, shape, model_cfgs=None) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (jax.random.normal(kk, shape, jnp.float32) for kk in ks)
    ref = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla"))(q, k, v)
    qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q, k, v))
    if on_gpu:
        names = ("cudnn", "xla")
        fa = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn"))
    else:
        names = ("xla", "einsum")
        fa = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla"))
    fb = (jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla"))
          if on_gpu else jax.jit(_einsum_attention))
    a = np.asarray(fa(qb, kb, vb).astype(jnp.float32))
    b = np.asarray(fb(qb, kb, vb).astype(jnp.float32))
    r = np.asarray(ref)
    res = {
        "pair": names, "shape": list(shape), "atol": ATTN_ATOL,
        f"max_abs_{names[0]}_vs_{names[1]}": float(np.abs(a - b).max()),
        f"max_abs_{names[0]}_vs_fp32": float(np.abs(a - r).max()),
        f"max_abs_{names[1]}_vs_fp32": float(np.abs(b - r).max()),
    }
    worst = max(v for key, v in res.items() if key.startswith("max_abs"))
    if not np.isfinite(worst) or worst > ATTN_ATOL:
        raise Mismatch(f"attention: {names[0]} vs {names[1]} differ by {worst:.3g} (> {ATTN_ATOL}): {res}")
    if model_cfgs is not None:  # whole-model logits, cudnn vs xla attention, same parameters
        from gpt2jax.model import GPT2, init_params

        c_cudnn, c_xla = model_cfgs
        params = jax.jit(lambda key: init_params(c_xla, key))(jax.random.PRNGKey(0))
        tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 1024), 0, c_xla.vocab_size)
        la = jax.jit(lambda p, t: GPT2(c_cudnn).apply({"params": p}, t))(params, tokens)
        lb = jax.jit(lambda p, t: GPT2(c_xla).apply({"params": p}, t))(params, tokens)
        real = c_xla.vocab_size
        d = float(jnp.abs(la[..., :real] - lb[..., :real]).max())
        res["model_logits_max_abs_cudnn_vs_xla"], res["logits_atol"] = d, LOGITS_ATOL
        if not np.isfinite(d) or d > LOGITS_ATOL:
            raise Mismatch(f"attention: model logits with cudnn vs xla differ by {d:.3g} (> {LOGITS_ATOL})")
    return res


def check_blockwise_loss(base) -> dict:
    """The loss through gpt2jax.losses (hidden states after the final norm, the head matrix) against
    the dense logits' cross-entropy, on the same parameters and batch, fp32."""
    import jax
    import jax.numpy as jnp

    from gpt2jax import bench
    from gpt2jax.losses import blockwise_cross_entropy, fused_cross_entropy
    from gpt2jax.losses import cross_entropy
    from gpt2jax.model import GPT2, head_weight, init_params

    c = _set(base, model__dtype="float32", model__attention="xla")
    model = GPT2(c.model)
    m = model.config
    block = base.train.loss_block or 2048
    rows = jnp.asarray(bench.synthetic_rows(c))
    x, y = rows[:, :-1], rows[:, 1:]
    params = jax.jit(lambda k: init_params(c.model, k))(jax.random.PRNGKey(0))

    @jax.jit
    def both(p):
        dense = cross_entropy(model.apply({"params": p}, x), y)
        h = model.apply({"params": p}, x, return_hidden=True)
        w = head_weight(p, m)
        fused_grad = jax.value_and_grad(lambda h: fused_cross_entropy(h, w, y, m.vocab_size, rows=256))(h)[0]
        return dense, blockwise_cross_entropy(h, w, y, m.vocab_size, block=block), fused_grad

    dense, blk, fused = (float(v) for v in both(params))
    rel = max(abs(dense - blk), abs(dense - fused)) / abs(dense)
    res = {"dense": dense, "blockwise": blk, "block": block, "fused": fused, "rows": 256, "rel_diff": rel,
           "rtol": CE_RTOL}
    if not rel <= CE_RTOL:
        raise Mismatch(f"blockwise_loss: {res}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu_smoke", action="store_true", help="the same steps on the tiny config on CPU")
    ap.add_argument("--out", required=True, help="the JSON results file")
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--budget_s", type=float, default=510.0, help="skip benchmarks that would start after this")
    args = ap.parse_args(argv)
    t0 = time.time()

    import jax

    from gpt2jax import bench

    dev = jax.devices()[0]
    results = {"mode": "cpu_smoke" if args.cpu_smoke else "gpu", "device": dev.device_kind,
               "platform": dev.platform, "jax": jax.__version__, "checks": {}, "bench": {}, "ok": False}

    def write():
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, args.out)

    def log(msg):
        print(f"[gpu_check {time.time() - t0:6.1f}s] {msg}", flush=True)

    try:
        if args.cpu_smoke:
            small = _set(_tiny(args.root), model__scan_layers=True)
            large = _set(small, model__n_layer=4, model__remat="dots_no_batch")
            check_base, attn_shape, model_cfgs, steps, warmup, train_steps = small, (2, 32, 2, 32), None, 2, 1, 3
            scorer_buckets = None
        else:
            if dev.platform != "gpu":
                raise Mismatch(f"no GPU: jax's default device is {dev.platform} ({dev.device_kind}); "
                               "this check needs jax with CUDA (use --cpu_smoke on CPU)")
            small = _set(_gpt2("124m", 16, "bfloat16"), model__attention="cudnn")
            large = _set(_gpt2("1558m", 8, "bfloat16"), model__attention="cudnn", model__scan_layers=True,
                         model__remat="dots_no_batch")
            check_base = _set(_gpt2("124m", 8, "float32"), train__seq_len=256)
            attn_shape = (4, 1024, 12, 64)
            model_cfgs = (_set(small, model__attention="cudnn").model, _set(small, model__attention="xla").model)
            steps, warmup, train_steps = 10, 2, 6
            scorer_buckets = (256, 1024)  # two scorer compiles per model, not six

        log("check 1: bf16 vs fp32 loss")
        results["checks"]["bf16_vs_fp32"] = check_bf16_vs_fp32(check_base, train_steps)
        write()
        log(f"  ok: max relative loss difference {results['checks']['bf16_vs_fp32']['max_rel_diff']:.2e}")
        log("check 2: attention implementations")
        results["checks"]["attention"] = check_attention(not args.cpu_smoke, attn_shape, model_cfgs)
        write()
        log(f"  ok: {results['checks']['attention']}")
        log("check 3: blockwise cross-entropy vs dense")
        results["checks"]["blockwise_loss"] = check_blockwise_loss(check_base)
        write()
        log(f"  ok: {results['checks']['blockwise_loss']}")

        for name, cfg, compare, buckets in (("small", small, "torch", scorer_buckets), ("large", large, "", scorer_buckets)):
            if time.time() - t0 > args.budget_s:
                results["bench"][name] = {"skipped": f"time budget ({args.budget_s:.0f} s) spent"}
                log(f"bench {name}: skipped (time budget)")
                continue
            log(f"bench {name}: {cfg.model.n_layer} x {cfg.model.n_embd}, batch {cfg.train.batch_size}, "
                f"compare={compare or 'none'}")
            r = bench.run(cfg, steps=steps, warmup=warmup, compare=compare, eval_buckets=buckets, progress=False)
            results["bench"][name] = r
            write()
            log("  " + bench.format_report(r).replace("\n", "\n  "))
            jax.clear_caches()
            if compare:
                try:
                    import torch

                    torch.cuda.empty_cache() if torch.cuda.is_available() else None
                except ImportError:
                    pass
        results["ok"] = True
        results["seconds"] = time.time() - t0
        write()
        log(f"all checks passed; results in {args.out}")
        return 0
    except Mismatch as e:
        results["error"] = str(e)
        write()
        print(f"GPU CHECK FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception as e:  # anything else is a failure too, with its traceback in the file
        results["error"] = f"{type(e).__name__}: {e}"
        results["traceback"] = traceback.format_exc()
        write()
        print(f"GPU CHECK FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
