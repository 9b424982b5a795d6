"""Fault injection: training subprocesses signalled, killed (-9) at seeded points -- during steps, in
the middle of an asynchronous save, between a save's last write and its commit -- and restarted on
checkpoints with corrupted or truncated files. After every fault, the next plain start must finish
the run with the final parameters and every step's loss bitwise equal to an uninterrupted run.

The children run on one CPU device (XLA_FLAGS="") and share one persistent compilation cache, so only
the first compiles. `python tests/test_faults.py [--seeds N]` runs the larger matrix and prints the
table of docs/fault_tolerance.md.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHILD = ROOT / "tests" / "fault_child.py"
N = 8  # steps of every run; checkpoints every 2, the latest 3 kept


def run(wd, data_dir, cache_dir, fault=None, timeout=300):
    env = {
        **os.environ,
        "XLA_FLAGS": "",  # one CPU device
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # cache every compile: fast restarts
        "PYTHONPATH": str(ROOT),
    }
    env.pop("GPT2JAX_FAULT", None)
    if fault:
        env["GPT2JAX_FAULT"] = fault
    cmd = [
        sys.executable, str(CHILD), f"--config={ROOT / 'configs' / 'tiny.py'}", f"--workdir={wd}",
        f"--config.data.dir={data_dir}", f"--config.train.compile_cache={cache_dir}",
        f"--config.train.num_steps={N}", "--config.train.log_every=1", "--config.train.eval_every=0",
        "--config.train.eval_batches=1", "--config.checkpoint.every=2", "--config.checkpoint.keep=3",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def steps_done(out: str) -> int:
    return max([int(s) for s in re.findall(r"@step (\d+)", out)] or [0])


def resumed_from(out: str) -> int:
    m = re.search(r"resuming from step (\d+)", out)
    return int(m.group(1)) if m else 0


def final_state(wd):
    """(params as numpy, {step: loss}) of a finished run."""
    from gpt2jax.checkpoint import load_params

    _, params = load_params(wd)
    import jax

    rows = [json.loads(x) for x in (pathlib.Path(wd) / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert len(losses) == sum(1 for r in rows if "loss" in r), "a step logged twice"
    return [np.asarray(x) for x in jax.tree.leaves(params)], losses


def same_as(ref, wd) -> bool:
    params, losses = final_state(wd)
    ref_params, ref_losses = ref
    return losses == ref_losses and all(
        a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes() for a, b in zip(params, ref_params)
    )


def _files(step_dir, item):
    fs = [p for p in pathlib.Path(step_dir, item).rglob("*") if p.is_file() and "/d/" in str(p)]
    return sorted(fs, key=lambda p: p.stat().st_size)


def corrupt(wd, step, how):
    """Damage checkpoint `step` of `wd` the way `how` says; returns a description."""
    sd = pathlib.Path(wd) / "checkpoints" / str(step)
    if how == "flip":  # one bit in the middle of the largest parameter data file
        f = _files(sd, "params")[-1]
        b = bytearray(f.read_bytes())
        b[len(b) // 2] ^= 0x04
        f.write_bytes(bytes(b))
    elif how == "truncate":  # the largest optimizer-state data file cut in half
        f = _files(sd, "opt_state")[-1]
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif how == "garbage_meta":
        for f in (sd / "meta").iterdir():
            if f.is_file() and f.name != "commit_success.txt":
                f.write_text("{not json")
    elif how == "delete":  # an array data file gone
        _files(sd, "params")[-1].unlink()
    else:
        raise ValueError(how)


# -- scenarios ------------------------------------------------------------------------------------
def signal_scenario(kind, at, seed, ref, base, data_dir, cache_dir) -> dict:
    wd = base / f"{kind}_{at}_{seed}"
    rc, out = run(wd, data_dir, cache_dir, fault=f"{kind}@{at}:{seed}")
    done = steps_done(out)
    tmp_left = sorted(p.name for p in (wd / "checkpoints").glob("*tmp*"))
    rc2, out2 = run(wd, data_dir, cache_dir)
    start = resumed_from(out2)
    return {
        "scenario": f"{kind} at step {at}" + (f" (seed {seed})" if kind == "sigkill_save" else ""),
        "rc": rc,
        "clean_exit": rc == 0 and "stop requested: saving step" in out,
        "done": done,
        "tmp_left": tmp_left,
        "resumed_from": start,
        "restart_rc": rc2,
        "lost": done - start,
        "exact": rc2 == 0 and same_as(ref, wd),
        "out": out,
        "out2": out2,
    }


def corrupt_scenario(damage: dict, ref_wd, ref, base, data_dir, cache_dir) -> dict:
    """damage: {step: how}, applied to a copy of the finished reference run."""
    name = "+".join(f"{how}@{s}" for s, how in damage.items())
    wd = base / f"corrupt_{name}"
    shutil.copytree(ref_wd, wd)
    for s, how in damage.items():
        corrupt(wd, s, how)
    rc, out = run(wd, data_dir, cache_dir)
    quarantined = sorted(p.name.split(".")[0] for p in (wd / "corrupt_checkpoints").glob("*")) if (
        wd / "corrupt_checkpoints").exists() else []
    refused = rc != 0 and "no intact checkpoint left" in out
    if refused:  # every checkpoint was bad: the start refuses; the next one trains from step 0
        rc, out2 = run(wd, data_dir, cache_dir)
        out += out2
    start = resumed_from(out)
    return {
        "scenario": "corrupt " + ", ".join(f"step {s}: {how}" for s, how in damage.items()),
        "rc": rc,
        "refused": refused,
        "resumed_from": start,
        "lost": N - start if rc == 0 else None,
        "quarantined": quarantined,
        "exact": rc == 0 and same_as(ref, wd),
        "out": out,
    }


# -- tests ----------------------------------------------------------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory, shakespeare_dir):
    base = tmp_path_factory.mktemp("faults")
    cache = base / "xla_cache"
    ref_wd = base / "reference"
    rc, out = run(ref_wd, shakespeare_dir, cache)
    assert rc == 0, out[-3000:]
    return dict(base=base, cache=cache, data=shakespeare_dir, ref_wd=ref_wd, ref=final_state(ref_wd))


def test_one_run_through_repeated_faults_ends_exactly_as_uninterrupted(world):
    """One run hit by four faults in a row; each restart resumes from the latest committed step."""
    base, data, cache = world["base"], world["data"], world["cache"]
    wd = base / "chain"
    ckdir = wd / "checkpoints"
    committed = lambda: sorted(int(p.name) for p in ckdir.iterdir() if p.name.isdigit())  # noqa: E731

    # 1. SIGTERM during step 3: the step finishes, step 3 is saved, exit 0.
    rc, out = run(wd, data, cache, fault="sigterm@3")
    assert rc == 0 and "stop requested: saving step 3" in out, out[-3000:]
    assert committed() == [2, 3]
    # 2. kill -9 when the save of step 4 is fully written but not committed.
    rc, out = run(wd, data, cache, fault="sigkill_commit@4")
    assert rc == -9 and resumed_from(out) == 3, out[-3000:]
    assert committed() == [2, 3] and [p.name for p in ckdir.glob("*tmp*")] == ["4.orbax-checkpoint-tmp"]
    # 3. kill -9 a seeded few milliseconds into the asynchronous save of step 6. The half-written
    #    directory of step 4 is ignored (and cleaned up); step 4 is redone and saved.
    rc, out = run(wd, data, cache, fault="sigkill_save@6:3")
    assert rc == -9 and resumed_from(out) == 3 and "@save 6 started" in out, out[-3000:]
    assert 4 in committed() and max(committed()) in (4, 6)
    # 4. kill -9 right after a seeded step, device work in flight.
    latest = max(committed())
    at = random.Random(1).randint(latest + 1, N - 1)
    rc, out = run(wd, data, cache, fault=f"sigkill@{at}")
    assert rc == -9 and resumed_from(out) == latest and steps_done(out) == at, out[-3000:]
    # 5. A plain start finishes the run; parameters and all N logged losses equal the reference's.
    rc, out = run(wd, data, cache)
    assert rc == 0 and resumed_from(out) >= latest and resumed_from(out) <= at, out[-3000:]
    assert not list(ckdir.glob("*tmp*"))
    assert same_as(world["ref"], wd)


def test_corrupted_and_truncated_checkpoints_fall_back(world):
    # The latest checkpoint with one flipped bit (only the fingerprints see it), the one before with a
    # truncated file: both are moved aside, the run resumes from the third and ends exactly the same.
    r = corrupt_scenario({8: "flip", 6: "truncate"}, world["ref_wd"], world["ref"], world["base"], world["data"],
                         world["cache"])
    assert r["rc"] == 0, r["out"][-3000:]
    assert "array 'h/attn/c_attn/kernel'" in r["out"] or "fingerprint" in r["out"]
    assert r["quarantined"] == ["6", "8"] and r["resumed_from"] == 4
    assert r["exact"]


MH_CONFIG = """
from gpt2jax.config import get_config as base


def get_config():
    c = base()
    c.model.n_layer, c.model.n_embd, c.model.n_head, c.model.block_size = 2, 64, 4, 32
    c.model.vocab_size = 1000
    c.data.dir = {data!r}
    c.train.num_steps, c.train.batch_size, c.train.log_every, c.train.eval_batches = 200, 8, 1, 1
    c.train.compile_cache = {cache!r}
    c.checkpoint.every, c.checkpoint.dir = 0, {ckpt!r}
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, 2, 2
    return c
"""


def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
    """Two processes (4 CPU devices each, gloo): SIGTERM reaches process 1 only. Through JAX's
    preemption service and Orbax's sync point both stop after the same step, save it together and
    exit 0 (a local flag would stop one and leave the other waiting in a collective)."""
    import signal
    import socket
    import time

    data = tmp_path / "data"
    data.mkdir()
    tokens = np.random.default_rng(0).integers(0, 1000, 20_000).astype(np.uint16)
    meta = {"dtype": "uint16", "splits": {}}
    for split in ("train", "val"):
        tokens.tofile(data / f"{split}.bin")
        meta["splits"][split] = {"documents": 1, "tokens": len(tokens), "max_token_id": int(tokens.max())}
    (data / "meta.json").write_text(json.dumps(meta))
    cfg = tmp_path / "mh.py"
    cfg.write_text(MH_CONFIG.format(data=str(data), cache=str(tmp_path / "cache"), ckpt=str(tmp_path / "shared")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(ROOT)}
    logs = [open(tmp_path / f"out{i}", "w+") for i in range(2)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "gpt2jax.train", f"--config={cfg}", f"--workdir={tmp_path / 'run'}",
         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=ROOT, env=env, stdout=logs[i], stderr=subprocess.STDOUT) for i in range(2)]
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.time() + 240
        while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert all(p.poll() is None for p in procs), [(tmp_path / f"out{i}").read_text()[-2000:] for i in range(2)]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        rcs = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = [(tmp_path / f"out{i}").read_text() for i in range(2)]
    assert rcs == [0, 0], [o[-3000:] for o in outs]
    stops = [re.findall(r"stop requested: saving step (\d+)", o) for o in outs]
    assert len(stops[0]) == 1 and stops[0] == stops[1], stops  # the same step on both
    step = int(stops[0][0])
    assert 2 <= step < 200
    assert sorted(int(p.name) for p in (tmp_path / "shared" / "checkpoints").iterdir() if p.name.isdigit()) == [step]


# -- the matrix of docs/fault_tolerance.md ---------------------------------------------------------
def main(seeds: int) -> None:
    import tempfile

    from gpt2jax.data.prepare import prepare

    base = pathlib.Path(tempfile.mkdtemp(prefix="gpt2jax_faults_"))
    data = base / "shakespeare"
    prepare("shakespeare", str(data), progress=False)
    cache = base / "xla_cache"
    ref_wd = base / "reference"
    rc, out = run(ref_wd, data, cache)
    assert rc == 0, out[-3000:]
    ref = final_state(ref_wd)
    rng = random.Random(0)
    rows = []
    for kind in ("sigterm", "sigint"):
        for _ in range(seeds):
            rows.append(signal_scenario(kind, rng.randint(1, N - 1), 0, ref, base, data, cache))
    for _ in range(2 * seeds):
        rows.append(signal_scenario("sigkill", rng.randint(1, N - 1), 0, ref, base, data, cache))
    for seed in range(2 * seeds):
        rows.append(signal_scenario("sigkill_save", rng.choice([2, 4, 6]), seed, ref, base, data, cache))
    for at in (2, 4, 6):
        rows.append(signal_scenario("sigkill_commit", at, 0, ref, base, data, cache))
    for damage in ({8: "flip"}, {8: "truncate"}, {8: "garbage_meta"}, {8: "delete"}, {8: "flip", 6: "truncate"},
                   {8: "flip", 6: "flip", 4: "flip"}):
        rows.append(corrupt_scenario(damage, ref_wd, ref, base, data, cache))
    print("| scenario | fault run | steps done | restart resumed from | steps lost | final params & losses bitwise = uninterrupted |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        fault = ("exit 0 after saving" if r.get("clean_exit") else f"rc {r['rc']}") if "done" in r else (
            f"quarantined {', '.join(r['quarantined']) or '-'}"
            + ("; start refused (no intact checkpoint), the next from step 0" if r.get("refused") else ""))
        done = r.get("done", N)
        print(f"| {r['scenario']} | {fault} | {done} | {r['resumed_from']} | {r['lost']} | {'yes' if r['exact'] else 'NO'} |")
    print(f"\n{len(rows)} scenarios, {sum(r['exact'] for r in rows)} exact; workdirs in {base}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    main(ap.parse_args().seeds)
