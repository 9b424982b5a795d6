"""Benchmark of the real train step, the forward pass and the zero-shot scorer, optionally against
a PyTorch / transformers GPT-2 of the same shape in the same process.

    python -m gpt2jax.bench --config=configs/shakespeare.py [--config.train.batch_size=8 ...]
        [--steps=10] [--compare=torch] [--json]

What is timed:
  * train step: the Trainer's jitted step (its shardings, its buffer donation), compiled ahead of
    time (compile_s; the persistent compilation cache is not used), `--warmup` steps, then `--steps`
    timed steps, each waited for. Median and spread (min, max, interquartile range) of step time.
  * tokens/s = batch x seq_len / median step time.
  * FLOPs per token: gpt2jax.metrics.flops_per_token, the PaLM appendix-B count 6 N + 12 L D T
    (N: matmul parameters, the tied head counted once; forward + backward; no recompute counted).
  * MFU = FLOPs/token x tokens/s / (peak FLOP/s x devices). The peak comes from the device table in
    gpt2jax.metrics for the compute dtype; on CPU it is the rate of a jitted 2048^3 fp32 jnp.matmul
    timed here (best of --matmul_runs after warm-up), so "MFU" on CPU reads "fraction of the
    machine's big-matmul rate".
  * memory: the compiled step's XLA memory analysis (arguments, outputs, temporaries) and, where the
    backend reports it (GPU, TPU), the device's peak bytes in use.
  * forward tokens/s: the Trainer's eval step (forward + loss, no gradient) on the same batch.
  * eval tokens/s: gpt2jax.eval.scoring.Scorer.loglikelihood over requests of lengths 16..block_size
    (--eval_batch rows per bucket, so batches are full), unpadded input tokens per second, timed on
    a second pass so compilation is excluded.
  * --compare=torch: transformers' GPT2LMHeadModel of the same shape (dropout 0, SDPA attention,
    the unpadded vocabulary), torch.optim.AdamW with the same betas, eps, weight decay on matrices,
    and the same global-norm clipping; fp32 eager with all CPU cores on CPU, bf16 autocast and
    torch.compile on GPU. Its steps alternate with ours (one each, in turn) so machine noise hits
    both; ratio_vs_torch = our tokens/s / its tokens/s.

--json prints one JSON object on one line, the last line of stdout.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

KEYS_REQUIRED = (
    "tokens_per_sec", "mfu", "peak_flops", "step_time_s", "compile_s",
    "forward_tokens_per_sec", "eval_tokens_per_sec",
)


def _summary(times: list[float]) -> dict:
    a = np.asarray(times, np.float64)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "min": float(a.min()), "max": float(a.max()), "iqr": float(q3 - q1), "n": len(a)}


def cpu_matmul_flops(n: int = 2048, runs: int = 10) -> float:
    """FLOP/s of a jitted n^3 fp32 matmul on the default device: best of `runs` after warm-up."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    f(a, b).block_until_ready()
    best = math.inf
    for _ in range(runs):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def synthetic_rows(config, seed: int = 0) -> np.ndarray:
    """A global batch of random token ids, [train.batch_size, T + 1], the same for a seed."""
    from gpt2jax import config as config_lib

    T = config_lib.seq_len(config)
    rng = np.random.default_rng(seed)
    return rng.integers(0, config.model.vocab_size, (config.train.batch_size, T + 1), dtype=np.int32)


def local_rows(trainer, rows: np.ndarray) -> np.ndarray:
    """This process's rows of a global batch (what Trainer.global_batch expects from each process)."""
    idx, count = trainer.batch_slice
    n = rows.shape[0] // count
    return rows[idx * n : (idx + 1) * n]


def _eval_requests(block_size: int, per_bucket: int, buckets, vocab_size: int, seed: int = 0):
    """(context, continuation) requests whose model inputs are 16..block_size tokens long:
    `per_bucket` of them in each of the scorer's length buckets, lengths uniform within it."""
    rng = np.random.default_rng(seed)
    reqs, lo = [], 16
    for b in buckets:
        if b < lo:
            continue
        for _ in range(per_bucket):
            n_in = int(rng.integers(lo, b + 1))  # model input length; the window is n_in + 1 tokens
            toks = rng.integers(0, vocab_size, n_in + 1).tolist()
            n_cont = int(rng.integers(1, min(8, n_in) + 1))
            reqs.append((toks[:-n_cont], toks[-n_cont:]))
        lo = b + 1
    return reqs


class TorchReference:
    """transformers GPT2LMHeadModel train step of the same shape and optimizer as a gpt2jax config."""

    def __init__(self, config, rows: np.ndarray):
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        self.torch = torch
        m, o = config.model, config.optim
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        if not self.cuda:
            torch.set_num_threads(os.cpu_count() or 1)
        hf = GPT2Config(
            vocab_size=m.vocab_size, n_positions=m.block_size, n_embd=m.n_embd, n_layer=m.n_layer,
            n_head=m.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            attn_implementation="sdpa", bos_token_id=m.vocab_size - 1, eos_token_id=m.vocab_size - 1,
        )
        torch.manual_seed(0)
        self.model = GPT2LMHeadModel(hf).to(self.device).train()
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=(o.b1, o.b2), eps=o.eps,
        )
        self.clip = o.grad_clip
        batch = torch.from_numpy(rows.astype(np.int64)).to(self.device)
        self.x, self.y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
        self.forward = self.model
        if self.cuda:
            self.forward = torch.compile(self.model)
        self.settings = {
            "torch": torch.__version__,
            "device": str(self.device),
            "dtype": "bfloat16 autocast" if self.cuda else "float32",
            "compiled": self.cuda,
            "threads": torch.get_num_threads(),
            "attention": "sdpa",
        }

    def step(self) -> float:
        torch = self.torch
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
            logits = self.forward(self.x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), self.y.view(-1))
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.cuda:
            torch.cuda.synchronize()
        return float(loss.detach())


VECTOR_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def host_cpu(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The host CPU's model name, core count and vector extensions (from /proc/cpuinfo where it exists):
    machines of one name differ, so every benchmark row says what it ran on."""
    import os
    import platform as _platform

    model, found = _platform.processor() or _platform.machine(), set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and value.strip():
                    model = value.strip()
                elif key in ("flags", "features"):
                    found.update(value.split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "vector_extensions": [f for f in VECTOR_FLAGS if f in found]}


def run(config, *, steps: int = 10, warmup: int = 2, compare: str = "", matmul_runs: int = 10,
        eval_batch: int = 0, eval_buckets=None, progress: bool = True) -> dict:
    """Run the benchmark and return its results (see the module docstring)."""
    import jax
    import jax.numpy as jnp

    from gpt2jax import config as config_lib
    from gpt2jax import metrics as metrics_lib
    from gpt2jax.eval.scoring import Scorer
    from gpt2jax.train import Trainer
    from gpt2jax.training.records import git_commit as _git_commit, versions as _versions

    if compare not in ("", "torch"):
        raise ValueError(f"--compare: '' or 'torch', got {compare!r}")
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)
    commit = _git_commit()  # now: the code this run imported (the checkout may move while it runs)
    config_lib.validate(config)
    m = config.model
    B, T = config.train.batch_size, config_lib.seq_len(config)
    dev = jax.devices()[0]
    platform = dev.platform
    n_dev = jax.device_count()

    say(f"bench: {m.n_layer} layers x {m.n_embd}, batch {B} x {T}, {n_dev} x {dev.device_kind}")
    trainer = Trainer(config)
    params, opt_state = trainer.init_state(config.train.seed)
    rows = synthetic_rows(config)
    batch = trainer.global_batch(local_rows(trainer, rows))
    step0 = jnp.asarray(0, jnp.int32)

    t0 = time.perf_counter()
    compiled = trainer.train_step.lower(params, opt_state, batch, step0).compile()
    compile_s = time.perf_counter() - t0
    mem = {}
    try:
        ma = compiled.memory_analysis()
        mem = {
            "argument_bytes": int(ma.argument_size_in_bytes),
            "output_bytes": int(ma.output_size_in_bytes),
            "temp_bytes": int(ma.temp_size_in_bytes),
            "alias_bytes": int(ma.alias_size_in_bytes),
        }
    except Exception:  # not every backend implements it
        pass

    ref = None
    if compare == "torch":
        say("bench: building the transformers reference")
        ref = TorchReference(config, rows)

    def jax_step(i):
        nonlocal params, opt_state
        t = time.perf_counter()
        params, opt_state, out = compiled(params, opt_state, batch, jnp.asarray(i, jnp.int32))
        jax.block_until_ready((params, opt_state, out))
        return time.perf_counter() - t, out

    cpu_times, torch_cpu_times = [], []

    for i in range(warmup):
        jax_step(i)
        if ref is not None:
            ref.step()
    jax_times, torch_times, losses, torch_losses = [], [], [], []
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="bench", unit="step", file=sys.stderr, leave=False)
    for i in it:
        c0 = time.process_time()
        dt, out = jax_step(warmup + i)
        cpu_times.append(time.process_time() - c0)
        jax_times.append(dt)
        losses.append(float(out["loss"]))
        if ref is not None:
            c0, t = time.process_time(), time.perf_counter()
            torch_losses.append(ref.step())
            torch_times.append(time.perf_counter() - t)
            torch_cpu_times.append(time.process_time() - c0)

    step_stats = _summary(jax_times)
    tps = B * T / step_stats["median"]
    fpt = metrics_lib.flops_per_token(m, T)
    dtype = m.dtype
    if platform == "cpu":
        say("bench: timing the 2048^3 fp32 matmul")
        peak = cpu_matmul_flops(runs=matmul_runs)
        peak_source = f"2048^3 fp32 jnp.matmul, best of {matmul_runs}"
        peak_total = peak  # all CPU cores are one jax device (or share the cores when simulated)
    else:
        peak = metrics_lib.device_peak_flops(dev.device_kind, dtype)
        peak_source = f"device table ({dev.device_kind}, {dtype})" if peak else None
        peak_total = peak * n_dev if peak else None
    mfu = fpt * tps / peak_total if peak_total else None

    # Forward only: the Trainer's eval step (forward + loss) on the same batch.
    fwd = trainer.eval_step.lower(params, batch).compile()
    fwd(params, batch).block_until_ready()
    f_times = []
    for _ in range(max(3, steps // 2)):
        t = time.perf_counter()
        fwd(params, batch).block_until_ready()
        f_times.append(time.perf_counter() - t)
    fwd_tps = B * T / float(np.median(f_times))

    # The zero-shot scorer on the same parameters.
    eb = eval_batch or B
    sharding = trainer.batch_sharding if eb % max(n_dev, 1) == 0 and n_dev > 1 else None
    scorer = Scorer(m, params, batch_size=eb, buckets=eval_buckets, batch_sharding=sharding, progress=False)
    reqs = _eval_requests(m.block_size, eb, scorer.buckets, m.vocab_size)
    scorer.loglikelihood(reqs)  # compiles every bucket
    scorer.loglikelihood(reqs)
    st = scorer.last_stats
    eval_tps = st.tokens_per_s

    peak_mem = None
    try:
        ms = dev.memory_stats()
        if ms:
            peak_mem = int(ms.get("peak_bytes_in_use", 0)) or None
    except Exception:
        pass

    res = {
        "device": dev.device_kind,
        "cpu": host_cpu(),
        "platform": platform,
        "devices": n_dev,
        "shape": {"n_layer": m.n_layer, "n_embd": m.n_embd, "n_head": m.n_head, "vocab_size": m.vocab_size,
                  "batch": B, "seq_len": T, "dtype": dtype, "scan_layers": bool(m.scan_layers), "remat": m.remat},
        "steps": steps,
        "warmup": warmup,
        "step_time_s": step_stats["median"],
        "step_time": step_stats,
        "tokens_per_sec": tps,
        # This process's CPU time per step (all threads): on a shared machine it does not count time
        # spent descheduled, so it varies less than wall time (it does count worker threads spinning).
        "step_cpu_s": float(np.median(cpu_times)),
        "flops_per_token": fpt,
        "flops_formula": "PaLM appendix B: 6N + 12 n_layer n_embd T (gpt2jax.metrics.flops_per_token)",
        "model_flops_per_sec": fpt * tps,
        "peak_flops": peak_total,
        "peak_source": peak_source,
        "mfu": mfu,
        "compile_s": compile_s,
        "memory": mem,
        "peak_memory_bytes": peak_mem,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "forward_tokens_per_sec": fwd_tps,
        "eval_tokens_per_sec": eval_tps,
        "eval": {"requests": st.requests, "tokens": st.tokens, "padded_tokens": st.padded_tokens,
                 "batch": eb, "buckets": list(scorer.buckets), "seconds": st.seconds, "vs_forward": eval_tps / fwd_tps},
        "commit": commit,
        "versions": _versions(),
        "command": " ".join(["python -m gpt2jax.bench"] + sys.argv[1:]),
    }
    if ref is not None:
        ts = _summary(torch_times)
        res["torch"] = {**ref.settings, "step_time": ts, "step_cpu_s": float(np.median(torch_cpu_times)),
                        "loss_first": torch_losses[0], "loss_last": torch_losses[-1]}
        res["torch_tokens_per_sec"] = B * T / ts["median"]
        res["ratio_vs_torch"] = tps / res["torch_tokens_per_sec"]
        res["cpu_time_ratio_vs_torch"] = res["torch"]["step_cpu_s"] / res["step_cpu_s"]
        try:
            from importlib import metadata

            res["versions"]["transformers"] = metadata.version("transformers")
            res["versions"]["torch"] = metadata.version("torch")
        except Exception:
            pass
    return res


def format_report(r: dict) -> str:
    s, st = r["shape"], r["step_time"]
    g = lambda x: "n/a" if x is None else f"{x:.3g}"  # noqa: E731
    lines = [
        f"device        {r['devices']} x {r['device']} ({r['platform']})",
        f"host CPU      {r['cpu']['model']}, {r['cpu']['cores']} cores, {' '.join(r['cpu']['vector_extensions']) or '-'}",
        f"shape         {s['n_layer']} layers x {s['n_embd']} ({s['n_head']} heads), batch {s['batch']} x "
        f"{s['seq_len']}, {s['dtype']}, scan={s['scan_layers']}, remat={s['remat']}",
        f"step time     median {st['median'] * 1e3:.1f} ms (min {st['min'] * 1e3:.1f}, max {st['max'] * 1e3:.1f}, "
        f"IQR {st['iqr'] * 1e3:.1f}) over {st['n']} steps after {r['warmup']} warm-up",
        f"tokens/s      {r['tokens_per_sec']:,.0f} (CPU time per step {r['step_cpu_s'] * 1e3:.1f} ms)",
        f"FLOPs/token   {r['flops_per_token'] / 1e9:.3f} G ({r['flops_formula']})",
        f"model FLOP/s  {r['model_flops_per_sec'] / 1e9:.1f} G",
        f"peak FLOP/s   {g(r['peak_flops'] and r['peak_flops'] / 1e9)} G ({r['peak_source']})",
        f"MFU           {g(r['mfu'] and 100 * r['mfu'])} %",
        f"compile       {r['compile_s']:.1f} s",
        f"memory        {r['memory'] or 'n/a'}; device peak {r['peak_memory_bytes'] or 'n/a'}",
        f"forward       {r['forward_tokens_per_sec']:,.0f} tokens/s (eval step: forward + loss)",
        f"scorer        {r['eval_tokens_per_sec']:,.0f} tokens/s ({r['eval']['requests']} requests, "
        f"{r['eval']['tokens']} unpadded tokens; {100 * r['eval']['vs_forward']:.0f}% of forward)",
    ]
    if "torch" in r:
        t = r["torch"]
        lines += [
            f"torch         {r['torch_tokens_per_sec']:,.0f} tokens/s (median {t['step_time']['median'] * 1e3:.1f} ms; "
            f"{t['dtype']}, compiled={t['compiled']}, threads={t['threads']}, torch {t['torch']})",
            f"ratio         {r['ratio_vs_torch']:.2f}x torch (by CPU time per step: "
            f"{r['cpu_time_ratio_vs_torch']:.2f}x, torch {t['step_cpu_s'] * 1e3:.1f} ms)",
        ]
    return "\n".join(lines)


def main(argv, fv):
    if len(argv) > 1:
        from absl import app

        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    r = run(fv.config, steps=fv.steps, warmup=fv.warmup, compare=fv.compare, matmul_runs=fv.matmul_runs,
            eval_batch=fv.eval_batch, progress=not fv.json)
    print(format_report(r), flush=True)
    if fv.json:
        print(json.dumps(r, separators=(",", ":")), flush=True)


def define_flags(fv) -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file (a path, or a shipped config's name: tiny, "
                                    "shakespeare, gpt2_124m, ...).", flag_values=fv, lock_config=True)
    flags.DEFINE_integer("steps", 10, "Timed train steps (after --warmup).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("warmup", 2, "Untimed train steps after compilation.", lower_bound=0, flag_values=fv)
    flags.DEFINE_enum("compare", "", ["", "torch"], "Also time a transformers GPT-2 reference, alternated.",
                      flag_values=fv)
    flags.DEFINE_bool("json", False, "Print the results as one JSON line, the last line of stdout.", flag_values=fv)
    flags.DEFINE_integer("matmul_runs", 10, "CPU only: runs of the 2048^3 matmul (the best is the peak).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("eval_batch", 0, "Scorer rows per batch (0 = train.batch_size).", lower_bound=0,
                         flag_values=fv)
    flags.mark_flags_as_required(["config"], flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
