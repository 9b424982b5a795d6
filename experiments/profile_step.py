"""Where the train step's time goes: the step and its parts timed separately, alternated.

    python experiments/profile_step.py --config=shakespeare [--config.*=...] [--rounds=8]
        [--trace_dir=DIR]

Parts (each jitted on its own, at the config's batch and shape, timed round-robin so that machine
noise hits all of them; wall time and this process's CPU time, medians over --rounds):
  step        the Trainer's train step (forward, backward, clipping, AdamW)
  grad        value_and_grad of the Trainer's loss (no optimizer)
  forward     the Trainer's eval step (forward + loss)
  head        final hidden states -> loss, forward + backward wrt hidden states and head matrix
              (dense, or blockwise when train.loss_block > 0)
  blocks      the n_layer transformer blocks, forward + backward (loss = sum of outputs)
  attention   causal dot_product_attention alone, n_layer times, forward + backward
  optimizer   clipping + AdamW update + apply, on gradient-shaped inputs
CPU time is the better measure on a shared machine (it does not count time spent descheduled),
but it includes the worker threads' spinning. With --trace_dir, three steps are also traced with
jax.profiler and the events of XLA's CPU threads are summed by name.
"""

from __future__ import annotations

import collections
import glob
import os
import time

import numpy as np


def main(argv, F):
    del argv
    import jax
    import jax.numpy as jnp
    import optax

    from gpt2jax import bench
    from gpt2jax import config as config_lib
    from gpt2jax.losses import blockwise_cross_entropy, cross_entropy, lm_loss
    from gpt2jax.model import block as model_block, head_weight, NEG_INF
    from gpt2jax.train import Trainer

    c = F.config
    config_lib.validate(c)
    B, T = c.train.batch_size, config_lib.seq_len(c)
    tr = Trainer(c)
    m = tr.model.config
    params, opt = tr.init_state(0)
    batch = tr.global_batch(bench.local_rows(tr, bench.synthetic_rows(c)))
    D, H = m.n_embd, m.n_head
    key = jax.random.PRNGKey(0)
    h_BTD = jax.random.normal(key, (B, T, D), jnp.float32)
    y_BT = batch[:, 1:]

    def head_loss(h, w):
        if c.train.loss_block:
            return blockwise_cross_entropy(h, w, y_BT, m.vocab_size, block=c.train.loss_block)
        logits = jnp.einsum("btd,vd->btv", h, w)
        return cross_entropy(jnp.where(jnp.arange(w.shape[0]) < m.vocab_size, logits, NEG_INF), y_BT)

    def blocks_loss(hp, x):
        for i in range(m.n_layer):
            x = model_block(jax.tree.map(lambda a: a[i], hp), x, cfg=m, positions_T=jnp.arange(T))
        return x.sum()

    q = jax.random.normal(key, (B, T, H, D // H), jnp.float32)

    def attn_loss(q, k, v):
        tot = 0.0
        for _ in range(m.n_layer):
            tot = tot + jax.nn.dot_product_attention(q, k, v, is_causal=True).sum()
        return tot

    grads_like = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)

    def opt_update(g, o, p):
        u, o = tr.optimizer.update(g, o, p)
        return optax.apply_updates(p, u), o

    step_c = tr.train_step.lower(params, opt, batch, jnp.int32(0)).compile()
    state = {"p": params, "o": opt}

    def run_step():
        state["p"], state["o"], out = step_c(state["p"], state["o"], batch, jnp.int32(1))
        return state["p"], out

    grad_f = jax.jit(jax.value_and_grad(lambda p, b: lm_loss(tr.model, p, b, config=c, mesh=tr.mesh)))
    head_f = jax.jit(jax.value_and_grad(head_loss, argnums=(0, 1)))
    blocks_f = jax.jit(jax.value_and_grad(blocks_loss, argnums=(0, 1)))
    attn_f = jax.jit(jax.value_and_grad(attn_loss, argnums=(0, 1, 2)))
    opt_f = jax.jit(opt_update)
    parts = {
        "step": run_step,
        "grad": lambda: grad_f(state["p"], batch),
        "forward": lambda: tr.eval_step(state["p"], batch),
        "head": lambda: head_f(h_BTD, head_weight(state["p"], m)),
        "blocks": lambda: blocks_f(state["p"]["h"], h_BTD),
        "attention": lambda: attn_f(q, q, q),
        "optimizer": lambda: opt_f(grads_like, opt_f_state["o"], opt_f_state["p"]),
    }
    opt_f_state = {"p": jax.tree.map(jnp.copy, params), "o": jax.tree.map(jnp.copy, opt)}
    for f in parts.values():  # compile + warm up
        jax.block_until_ready(f())
        jax.block_until_ready(f())
    wall = collections.defaultdict(list)
    cpu = collections.defaultdict(list)
    for _ in range(F.rounds):
        for name, f in parts.items():
            c0, t0 = time.process_time(), time.perf_counter()
            jax.block_until_ready(f())
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    print(f"{m.n_layer} layers x {D}, batch {B} x {T}, vocab {m.vocab_size}, loss_block {c.train.loss_block}, "
          f"{jax.devices()[0].device_kind}; medians of {F.rounds} rounds")
    ref = np.median(cpu["step"])
    print(f"{'part':10s} {'wall ms':>9s} {'cpu ms':>9s} {'cpu % of step':>14s}")
    for name in parts:
        w, cc = np.median(wall[name]), np.median(cpu[name])
        print(f"{name:10s} {1e3 * w:9.1f} {1e3 * cc:9.1f} {100 * cc / ref:13.0f}%")

    if F.trace_dir:
        os.makedirs(F.trace_dir, exist_ok=True)
        jax.profiler.start_trace(F.trace_dir)
        for _ in range(3):
            jax.block_until_ready(run_step())
        jax.profiler.stop_trace()
        path = sorted(glob.glob(os.path.join(F.trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
        pd = jax.profiler.ProfileData.from_file(path)
        tot = collections.Counter()
        for plane in pd.planes:
            for line in plane.lines:
                if line.name == "python":
                    continue
                for e in line.events:
                    tot[e.name] += e.duration_ns
        print(f"trace {path}: time summed over XLA's threads, 3 steps, by event name")
        all_ns = sum(v for k, v in tot.items() if not k.startswith("ThunkExecutor") and not k.startswith("Threadpool"))
        for name, ns in tot.most_common(25):
            print(f"  {ns / 3e6:9.1f} ms/step  {100 * ns / max(all_ns, 1):5.1f}%  {name}")


def define_flags(fv) -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Config file (a path, or a shipped config's name).",
                                    flag_values=fv, lock_config=True)
    flags.DEFINE_integer("rounds", 8, "Round-robin timing rounds.", flag_values=fv)
    flags.DEFINE_string("trace_dir", "", "Also trace 3 steps with jax.profiler into this directory.", flag_values=fv)
    flags.mark_flags_as_required(["config"], flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
