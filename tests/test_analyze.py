"""gpt2jax-analyze / gpt2jax.scaling (table, fits, analysis, planner): known laws fitted back, run collection, CSV input, IsoFLOP and frontier
fits, the planner, and the errors a user can cause. No training: run directories are written here in
the formats gpt2jax.train and gpt2jax-sweep writes."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from gpt2jax.errors import AnalysisError
from gpt2jax.scaling import analysis, fits, planner, table
from tests.conftest import ROOT

HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
BESIROGLU = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
NOISE = 0.005  # standard deviation of the noise in log L


def _cli(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "gpt2jax.analyze", *args], capture_output=True,
                          text=True, env=env, cwd=str(ROOT), timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Known laws fitted back
@pytest.fixture(scope="module")
def recoveries():
    """(true values, fit, keys checked) for Chinchilla- and Kaplan-shaped data, two parameter
    sets each, two seeds each."""
    from threadpoolctl import threadpool_limits

    out = []
    n_grid, d_grid = np.meshgrid(np.geomspace(1e7, 1e11, 6), np.geomspace(1e9, 1e13, 5))
    n, d = n_grid.ravel(), d_grid.ravel()
    with threadpool_limits(limits=1, user_api="blas"):
        for li, law in enumerate((HOFFMANN, BESIROGLU)):
            for seed in (0, 1):
                rng = np.random.default_rng(100 * li + seed)
                loss = fits.chinchilla_predict(law, n, d) * np.exp(rng.normal(0, NOISE, n.size))
                f = fits.fit_chinchilla(n, d, loss, n_boot=80, seed=seed)
                out.append(("chinchilla", law, f, ["E", "A", "B", "alpha", "beta"]))
        x = np.geomspace(1e5, 1e9, 10)
        kaplan = [  # L = E + (N_c / N)^alpha_N; E = 0 is Kaplan et al.'s own form
            ({"E": 0.0, "alpha": 0.076, "log_x_c": math.log(8.8e13)}, True),
            ({"E": 0.0, "alpha": 0.095, "log_x_c": math.log(5.4e13)}, True),
            ({"E": 1.5, "alpha": 0.3, "log_x_c": math.log(3e8)}, False),
            ({"E": 1.2, "alpha": 0.5, "log_x_c": math.log(1e7)}, False),
        ]
        for li, (law, e0) in enumerate(kaplan):
            for seed in (0, 1):
                rng = np.random.default_rng(200 + 10 * li + seed)
                loss = fits.power_law_predict(law, x) * np.exp(rng.normal(0, NOISE, x.size))
                f = fits.fit_power_law(x, loss, fixed_e0=e0, n_boot=100, seed=seed)
                out.append(("kaplan", law, f, ["alpha", "log_x_c"] + ([] if e0 else ["E"])))
    return out


def test_exponents_recovered_within_5_percent(recoveries):
    for kind, law, f, _ in recoveries:
        for k in ("alpha", "beta") if kind == "chinchilla" else ("alpha",):
            assert abs(f[k] / law[k] - 1) < 0.05, (kind, law, k, f[k])


def test_bootstrap_intervals_cover_the_true_values(recoveries):
    hits = []
    for _, law, f, keys in recoveries:
        for k in keys:
            lo, hi = f["ci95"][k]
            assert lo <= f[k] <= hi or math.isclose(lo, hi), (k, f[k], lo, hi)
            hits.append(lo <= law[k] <= hi)
    assert len(hits) >= 40
    assert np.mean(hits) >= 0.9, f"{sum(hits)} of {len(hits)} intervals contain the true value"


def test_chinchilla_compute_optimal_allocation():
    co = fits.compute_optimal(HOFFMANN)
    assert co["a"] == pytest.approx(0.28 / 0.62) and co["b"] == pytest.approx(0.34 / 0.62)
    # Chinchilla's own budget: Besiroglu et al.'s refit puts about 70B parameters and 1.4T tokens
    # there, as the Chinchilla model itself was trained (Hoffmann et al.'s published approach-3 values
    # give about 32B and 93 tokens per parameter, the inconsistency Besiroglu et al. pointed out).
    c = 5.76e23
    alloc = fits.optimal_allocation(BESIROGLU, c)
    assert 6 * alloc["N_opt"] * alloc["D_opt"] == pytest.approx(c)
    for f in (0.8, 1.25):  # it is the minimum of L along 6ND = C
        n = alloc["N_opt"] * f
        assert fits.chinchilla_predict(BESIROGLU, n, c / (6 * n)) > alloc["loss"]
    assert 6e10 < alloc["N_opt"] < 8e10 and 15 < alloc["tokens_per_param"] < 25
    assert fits.optimal_allocation(HOFFMANN, c)["tokens_per_param"] > 80


def test_objective_gradient_matches_finite_differences():
    from scipy import optimize

    rng = np.random.default_rng(0)
    ln, ld = np.log(np.geomspace(1e7, 1e10, 12)), np.log(np.geomspace(1e9, 1e12, 12))
    ll = np.log(fits.chinchilla_predict(HOFFMANN, np.exp(ln), np.exp(ld))) + rng.normal(0, 0.01, 12)
    for theta in ([6.0, 6.0, 0.5, 0.34, 0.28], [1.0, 20.0, -1.0, 0.1, 1.5]):
        err = optimize.check_grad(lambda t: fits.chinchilla_objective(t, ln, ld, ll)[0],
                                  lambda t: fits.chinchilla_objective(t, ln, ld, ll)[1], theta)
        assert err < 1e-6


def test_isoflop_and_frontier_recover_synthetic_laws():
    rng = np.random.default_rng(0)
    budget, n, loss = [], [], []
    for c in (1e18, 1e19, 1e20, 1e21):
        n_opt = fits.optimal_allocation(HOFFMANN, c)["N_opt"]
        for m in n_opt * np.geomspace(1 / 8, 8, 7):
            budget.append(c)
            n.append(m)
            loss.append(fits.chinchilla_predict(HOFFMANN, m, c / (6 * m)) * math.exp(rng.normal(0, NOISE)))
    iso = fits.fit_isoflop(budget, n, loss, n_boot=50)
    assert iso["a"] == pytest.approx(0.28 / 0.62, rel=0.05)
    assert iso["b"] == pytest.approx(1 - iso["a"])
    for pb in iso["per_budget"]:
        true = fits.optimal_allocation(HOFFMANN, pb["budget_flops"])["N_opt"]
        assert pb["N_opt"] == pytest.approx(true, rel=0.25) and pb["inside_range"]
    # Too few sizes per budget: skipped with a reason, not a crash.
    few = fits.fit_isoflop([1e18, 1e18, 1e19, 1e19], [1e7, 2e7, 1e8, 2e8], [3.0, 2.9, 2.8, 2.7])
    assert "skipped" in few and few["dropped_budgets"][0]["reason"].startswith("2 model size")
    assert "skipped" in fits.fit_isoflop([math.nan] * 3, [1e7] * 3, [3.0] * 3)

    # With E = 0 the lower envelope of L(N, D) along C = 6ND is exactly C^-(alpha beta/(alpha+beta)).
    law = dict(HOFFMANN, E=0.0)
    curves = []
    for i, m in enumerate(np.geomspace(1e7, 1e10, 12)):
        d = np.geomspace(1e8, 1e12, 60)
        r = np.random.default_rng(i)
        curves.append((6 * m * d, fits.chinchilla_predict(law, m, d) * np.exp(r.normal(0, NOISE, d.size))))
    fr = fits.fit_frontier(curves, n_boot=30)
    assert fr["alpha"] == pytest.approx(0.34 * 0.28 / 0.62, rel=0.05)
    lo, hi = fr["ci95"]["alpha"]
    assert lo <= fr["alpha"] <= hi
    env = fr["envelope"]
    assert all(a <= b for a, b in zip(env["flops"], env["flops"][1:]))
    assert "skipped" in fits.fit_frontier(curves[:1])


def test_chinchilla_skips_what_the_data_cannot_support():
    n = np.geomspace(1e7, 1e9, 8)
    one_budget = fits.fit_chinchilla(n, np.full(8, 1e9), 2 + 100 / n ** 0.3, n_boot=0)
    assert "same token budget" in one_budget["skipped"]
    assert "at least 6 runs" in fits.fit_chinchilla(n[:3], n[:3] * 20, [3, 2.9, 2.8])["skipped"]


# ---------------------------------------------------------------------------------------------
# Run directories in the formats gpt2jax.train and gpt2jax-sweep writes
def _write_run(root, name, n_layer, n_embd, steps, val_losses, train_losses=None, budget=None,
               lr=1e-3, run_json=True, sweep_json=True, tokenizer=None):
    from gpt2jax import config as config_lib
    from gpt2jax import metrics as metrics_lib
    from gpt2jax import model as model_lib

    c = config_lib.get_config()
    c.model.n_layer, c.model.n_embd, c.model.n_head, c.model.block_size = n_layer, n_embd, 2, 32
    c.train.num_steps, c.train.batch_size = steps, 8
    c.optim.lr = lr
    d = root / name
    d.mkdir(parents=True)
    params = model_lib.num_params(c.model)
    params_ne = model_lib.num_params(c.model, non_embedding=True)
    if run_json:
        (d / "run.json").write_text(json.dumps({
            "config": config_lib.to_dict(c), "git_commit": None, "versions": {}, "devices": {},
            "params": params, "params_non_embedding": params_ne,
            "flops_per_token": metrics_lib.flops_per_token(c.model, 32), "command": [],
            **({"tokenizer": tokenizer} if tokenizer else {})}))
    if sweep_json:
        (d / "sweep_run.json").write_text(json.dumps({
            "name": name, "config": "configs/tiny.py", "overrides": {"model.n_embd": n_embd},
            "budget_flops": budget, "tokens": steps * 8 * 32, "params": params,
            "params_non_embedding": params_ne, "tags": ["test"]}))
    rows = []
    for i, l in enumerate(train_losses or []):
        step = (i + 1) * steps // len(train_losses)
        rows.append({"step": step, "loss": l, "lr": lr, "grad_norm": 1.0, "tokens": step * 8 * 32,
                     "tokens_per_sec": 1000.0, "mfu": None, "skipped_steps": 0})
    for step, v in val_losses:
        rows.append({"step": step, "val_loss": v})
    if run_json:
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"params": params, "params_ne": params_ne,
            "fpt": metrics_lib.flops_per_token(c.model, 32)}


def test_collect_root_writes_runs_csv(tmp_path):
    root = tmp_path / "sweep"
    a = _write_run(root, "w64", 2, 64, 40, [(20, 5.0), (40, 4.5)], [6.0, 5.5, 5.0, 4.8])
    b = _write_run(root, "w128", 2, 128, 40, [(20, 4.9), (40, 4.6)], [5.9, 5.4, 4.9, 4.6], lr=2e-3)
    _write_run(root, "w96", 2, 96, 40, [(40, 4.4), (20, 4.3)])  # rows out of order; best != final
    _write_run(root, "running", 2, 64, 40, [(20, 5.1)], [6.0, 5.6])  # val only half-way
    _write_run(root, "no_val", 2, 64, 40, [], [6.0])  # no val_loss yet
    _write_run(root, "queued", 2, 64, 40, [], run_json=False)  # sweep_run.json only
    _write_run(root, "diverged", 2, 64, 40, [(20, 5.0), (40, math.nan)])
    (root / "not_a_run").mkdir()

    out = tmp_path / "out"
    res = _cli(f"--root={root}", f"--out={out}", "--n_boot=5")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in csv.DictReader((out / "runs.csv").read_text().splitlines())}
    assert set(rows) == {"w64", "w128", "w96", "running", "no_val", "queued", "diverged"}
    cols = list(next(iter(rows.values())).keys())
    assert cols[:9] == ["name", "params", "params_non_embedding", "tokens", "flops_6nd", "flops",
                        "budget_flops", "loss", "best_loss"]
    assert "model.n_embd" in cols and "optim.lr" in cols and "model.vocab_size" not in cols
    r = rows["w64"]
    assert int(r["params"]) == a["params"] and int(r["params_non_embedding"]) == a["params_ne"]
    assert int(r["tokens"]) == 40 * 8 * 32
    assert float(r["flops_6nd"]) == pytest.approx(6 * a["params"] * 40 * 8 * 32)
    assert float(r["flops"]) == pytest.approx(a["fpt"] * 40 * 8 * 32)
    assert float(r["loss"]) == 4.5 and float(r["best_loss"]) == 4.5 and r["status"] == "finished"
    assert float(rows["w128"]["optim.lr"]) == 2e-3 and int(rows["w128"]["params"]) == b["params"]
    assert float(rows["w96"]["loss"]) == 4.4 and float(rows["w96"]["best_loss"]) == 4.3
    assert rows["running"]["status"].startswith("unfinished: last val_loss at step 20 of 40")
    assert rows["no_val"]["status"] == "unfinished: no val_loss yet" and rows["no_val"]["loss"] == ""
    assert "not started" in rows["queued"]["status"]
    assert rows["diverged"]["status"] == "left out: val_loss is nan at step 40"

    f = json.loads((out / "fits.json").read_text())
    assert f["n_finished"] == 3 and set(f["unfinished"]) == {"running", "no_val", "queued", "diverged"}
    assert "left out of the fits: running" in res.stdout
    assert "at least 6 runs" in f["chinchilla"]["skipped"]  # skipped with a reason, not crashed
    assert "skipped" in f["isoflop"] and "skipped" in f["power_law_n"]
    for png in ("loss_vs_params.png", "loss_vs_compute.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_unit_follows_the_runs_tokenizer(tmp_path):
    """Plots label the loss nats/byte when every run read bytes (run.json's tokenizer record), nats/token
    otherwise or when a run has no record, and bits/byte for the bpb metric."""
    from gpt2jax.scaling import plots

    root = tmp_path / "sweep"
    byte_rec = {"name": "bytes", "hash": "x", "vocab_size": 257, "eot": 256}
    _write_run(root, "b1", 2, 64, 40, [(40, 2.0)], tokenizer=byte_rec)
    _write_run(root, "b2", 2, 96, 40, [(40, 1.9)], tokenizer=byte_rec)
    runs = table.collect(str(root))
    assert {r["tokenizer"] for r in runs} == {"bytes"}
    assert plots._unit(runs) == "nats/byte"
    assert plots._unit(runs, {"convention": {"metric": "bpb"}}) == "bits/byte"
    _write_run(root, "gpt2", 2, 32, 40, [(40, 4.0)])  # no record: GPT-2's BPE
    assert plots._unit(table.collect(str(root))) == "nats/token"


def test_isoflop_sweep_end_to_end_and_planner(tmp_path):
    from gpt2jax.scaling import synthetic

    root = tmp_path / "iso"
    synthetic.write_sweep(str(root), "isoflop", seed=0)
    out = tmp_path / "out"
    analysis.analyze(table.collect(str(root)), str(out), {"root": str(root)}, n_boot=20)
    f = json.loads((out / "fits.json").read_text())
    assert f["n_finished"] == 20
    assert f["isoflop"]["a"] == pytest.approx(0.28 / 0.62, rel=0.1)
    assert f["chinchilla"]["alpha"] == pytest.approx(0.34, rel=0.1)
    assert f["count_basis"] == {"vocab_size": 50257, "block_size": 1024}
    for png in ("loss_vs_params.png", "loss_vs_compute.png", "isoflop.png", "residuals.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    res = _cli(f"--fits={out / 'fits.json'}", "--budget_flops=1e21")
    assert res.returncode == 0, res.stderr
    want = fits.optimal_allocation(f["chinchilla"], 1e21)
    line = next(s for s in res.stdout.splitlines() if s.startswith("chinchilla law"))
    assert f"N_opt = {want['N_opt']:.4g} parameters" in line and f"D_opt = {want['D_opt']:.4g}" in line
    shape = planner.nearest_shape(want["N_opt"], f["count_basis"])
    assert f"n_layer={shape['n_layer']}, n_embd={shape['n_embd']}, n_head={shape['n_head']}" in res.stdout
    assert abs(math.log(shape["params"] / want["N_opt"])) < math.log(1.1)
    pred = fits.chinchilla_predict(f["chinchilla"], shape["params"], 1e21 / (6 * shape["params"]))
    assert f"predicted loss: {pred:.4f}" in res.stdout


def test_nearest_shape_finds_gpt2_124m():
    s = planner.nearest_shape(124_439_808)
    assert (s["n_layer"], s["n_embd"], s["n_head"]) == (12, 768, 12)
    assert s["params"] == 124_439_808


def test_planner_without_a_chinchilla_fit():
    iso = {"a": 0.5, "log_k": math.log(0.1)}  # N_opt = 0.1 sqrt(C)
    fr = {"E": 0.0, "alpha": 0.05, "log_C_c": math.log(2e22)}
    p = planner.plan({"chinchilla": {"skipped": "one budget"}, "isoflop": iso, "frontier": fr}, 1e20)
    assert p["law"] == "isoflop" and p["N_opt"] == pytest.approx(1e9)
    assert p["D_opt"] == pytest.approx(1e20 / 6e9)
    assert p["loss"] == pytest.approx((2e22 / 1e20) ** 0.05) and "frontier" in p["loss_from"]
    with pytest.raises(AnalysisError, match="no law for the compute-optimal size"):
        planner.plan({"chinchilla": {"skipped": "x"}, "isoflop": {"skipped": "y"}}, 1e20)


def test_csv_input(tmp_path):
    # A Kaplan-shaped table at one token budget: power_law_n fits, chinchilla is skipped (one D).
    n = np.geomspace(1e5, 1e9, 9)
    rng = np.random.default_rng(3)
    loss = (8.8e13 / n) ** 0.076 * np.exp(rng.normal(0, NOISE, n.size))
    path = tmp_path / "published.csv"
    with open(path, "w") as fh:
        fh.write("params,tokens,loss,note\n")
        for x, l in zip(n, loss):
            fh.write(f"{x:.6g},2e10,{l:.6f},from a table\n")
    runs = table.read_csv(str(path))
    f = analysis.run_fits(runs, n_boot=20, power_law_e0=True)
    assert f["n_finished"] == 9
    assert f["power_law_n"]["alpha"] == pytest.approx(0.076, rel=0.05)
    assert f["power_law_n"]["N"].startswith("params ")  # no params_non_embedding column: said so
    assert "same token budget" in f["chinchilla"]["skipped"]
    assert f["frontier"]["curves"] == "final loss of each run"
    assert runs[0]["flops_6nd"] == pytest.approx(6 * float(f"{n[0]:.6g}") * 2e10)


# ---------------------------------------------------------------------------------------------
# Errors a user can cause: one line naming the file, non-zero exit, no traceback
def test_errors_name_the_file(tmp_path):
    with pytest.raises(AnalysisError, match="no such directory"):
        table.collect(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnalysisError, match="no runs"):
        table.collect(str(tmp_path / "empty"))
    bad = tmp_path / "bad.csv"
    bad.write_text("params,loss\n1e6,3.0\n")
    with pytest.raises(AnalysisError, match=r"bad.csv: missing column\(s\) tokens"):
        table.read_csv(str(bad))
    bad.write_text("params,tokens,loss\n1e6,lots,3.0\n")
    with pytest.raises(AnalysisError, match=r"bad.csv:2: column 'tokens' is not a number"):
        table.read_csv(str(bad))
    root = tmp_path / "garbage"
    _write_run(root, "r", 2, 64, 40, [(40, 4.5)])
    with open(root / "r" / "metrics.jsonl", "a") as fh:
        fh.write("{not json\n")
    with pytest.raises(AnalysisError, match=r"r/metrics.jsonl:2: not valid JSON"):
        table.collect(str(root))
    (root / "r" / "run.json").write_text("{\"params\": ")
    with pytest.raises(AnalysisError, match=r"r/run.json: not valid JSON"):
        table.collect(str(root))

    res = _cli(f"--root={root}", f"--out={tmp_path / 'o'}")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "run.json" in res.stderr
    (tmp_path / "fits.json").write_text("[1, 2")
    res = _cli(f"--fits={tmp_path / 'fits.json'}", "--budget_flops=1e20")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().startswith("error: ") and "fits.json: not valid JSON" in res.stderr


def test_help():
    res = _cli("--help")  # absl exits 1 after printing the help
    for flag in ("--root", "--csv", "--out", "--fits", "--budget_flops", "--n_boot"):
        assert flag in res.stdout


def test_planner_names_a_malformed_fits_json(tmp_path):
    bad = tmp_path / "fits.json"
    bad.write_text(json.dumps({"chinchilla": {"skipped": "x"}, "isoflop": {"a": "x", "log_k": 1}}))
    res = _cli(f"--fits={bad}", "--budget_flops=1e20")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"error: {bad}: isoflop.a should be a finite number, got 'x'"
    bad.write_text(json.dumps({"chinchilla": {"alpha": 0.3, "beta": 0.3, "E": 1.0, "A": 2.0}}))
    res = _cli(f"--fits={bad}", "--budget_flops=1e20")
    assert res.stderr.strip().splitlines()[-1] == f"error: {bad}: chinchilla.B should be a finite number, got missing"
