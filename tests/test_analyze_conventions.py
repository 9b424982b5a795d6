"""analyze's counting conventions (--params, --flops, --metric) and the columns of cooldown branches."""

import json
import math

import numpy as np
import pytest

from gpt2jax.errors import AnalysisError
from gpt2jax.scaling import analysis, planner, table


def _runs():
    runs = []
    for C in (1e12, 1e13):
        for n in (5e4, 1e5, 2e5, 4e5, 8e5):
            d = C / (6 * n)
            loss = 1.0 + 300 / n ** 0.5 + 400 / d ** 0.5
            runs.append({"name": f"C{C:g}-N{n:g}", "status": "finished", "fields": {}, "curve": None,
                         "val_curve": None, "params": n + 2e4, "params_non_embedding": n, "tokens": d,
                         "loss": loss, "bpb": loss / math.log(2) / 3.0, "budget_flops": C,
                         "flops": 6 * (n + 2e4) * d * 1.1})
    return runs


def test_conventions_change_what_is_fitted():
    base = analysis.run_fits(_runs(), n_boot=0)
    ne = analysis.run_fits(_runs(), n_boot=0, params="non_embedding")
    bpb = analysis.run_fits(_runs(), n_boot=0, metric="bpb")
    att = analysis.run_fits(_runs(), n_boot=0, flops="attention")
    # fits.json always says what N, C and the metric were, the defaults too.
    assert base["convention"] == {"params": "per_law", "flops": "per_law", "metric": "loss"}
    assert ne["convention"] == {"params": "non_embedding", "flops": "per_law", "metric": "loss"}
    assert att["convention"]["flops"] == "attention" and bpb["convention"]["metric"] == "bpb"
    empty = analysis.run_fits([{**_runs()[0], "status": "running"}], n_boot=0)
    assert empty["convention"] == {"params": "per_law", "flops": "per_law", "metric": "loss"}
    # N: all parameters by default, the non-embedding ones with --params=non_embedding.
    assert base["isoflop"]["per_budget"][0]["params"][0] == 7e4
    assert ne["isoflop"]["per_budget"][0]["params"][0] == 5e4
    # The budget label under non-embedding N is 6 N_ne D (here exactly the spec's C).
    assert ne["isoflop"]["per_budget"][0]["budget_flops"] == pytest.approx(1e12)
    assert att["isoflop"]["per_budget"][0]["budget_flops"] > 1e12  # attention + embedding FLOPs counted
    # The metric: bits per byte are the loss / ln 2 / 3 here, so the vertex is the same, its loss is not.
    b0, l0 = bpb["isoflop"]["per_budget"][0], base["isoflop"]["per_budget"][0]
    assert b0["N_opt"] == pytest.approx(l0["N_opt"], rel=1e-6)
    assert b0["loss_opt"] == pytest.approx(l0["loss_opt"] / math.log(2) / 3.0, rel=1e-6)
    # The non-embedding exponent differs from the total one (the constant 2e4 embedding bends the curve).
    assert ne["isoflop"]["a"] != pytest.approx(base["isoflop"]["a"], abs=1e-3)
    with pytest.raises(AnalysisError, match="unknown convention"):
        analysis.run_fits(_runs(), n_boot=0, params="embedding")


def _ladder():
    """A Kaplan-style ladder at one token budget: L = (N_c / N_ne)^0.076 with an embedding of 2e4 per run, and
    FLOPs with attention 10% above 6 N D."""
    runs = []
    for i, n in enumerate((1e4, 3e4, 1e5, 3e5, 1e6)):
        d = 3e5
        runs.append({"name": f"L{i}", "status": "finished", "fields": {}, "curve": None, "val_curve": None,
                     "params": n + 2e4, "params_non_embedding": n, "tokens": d, "budget_flops": None,
                     "loss": (8.8e13 / n) ** 0.076, "flops": 6 * (n + 2e4) * d * 1.1})
    return runs


def test_power_law_and_frontier_follow_an_explicit_convention():
    per_law = analysis.run_fits(_ladder(), n_boot=0, power_law_e0=True)
    total = analysis.run_fits(_ladder(), n_boot=0, power_law_e0=True, params="total")
    six = analysis.run_fits(_ladder(), n_boot=0, power_law_e0=True, flops="6nd")
    # Unset: Kaplan's N (non-embedding) recovers the law; --params=total fits all parameters.
    assert per_law["power_law_n"]["N"] == "params_non_embedding"
    assert per_law["power_law_n"]["alpha"] == pytest.approx(0.076, rel=1e-3)
    assert total["power_law_n"]["N"] == "params"
    assert total["power_law_n"]["alpha"] != pytest.approx(0.076, rel=0.05)  # all parameters: another exponent
    # The frontier: FLOPs with attention unless --flops=6nd.
    assert per_law["frontier"]["C"].startswith("tokens x flops_per_token")
    assert six["frontier"]["C"] == "6 x params x tokens"
    assert six["frontier"]["C_c"] != pytest.approx(per_law["frontier"]["C_c"], rel=1e-3)


def test_branch_and_bpb_columns(tmp_path):
    run = tmp_path / "iso-C1e12-L2-D32"
    run.mkdir()
    cfg = {"train": {"batch_size": 4, "seq_len": 8, "num_steps": 10}, "model": {"block_size": 8}}
    (run / "run.json").write_text(json.dumps({"config": cfg, "params": 100, "params_non_embedding": 80,
                                              "flops_per_token": 600,
                                              "branch": {"parent": str(tmp_path / "iso-L2-D32-stable"), "step": 8,
                                                         "fingerprint": "0" * 16}}))
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"step": 10, "loss": 2.0, "tokens": 320}, {"step": 10, "val_loss": 2.1, "val_bpb": 2.9})) + "\n")
    rec = table.read_run(str(run))
    assert (rec["branch_of"], rec["branch_step"], rec["bpb"], rec["tokens"]) == ("iso-L2-D32-stable", 8, 2.9, 320.0)
    cols, rows = table.table_rows([rec])
    assert {"bpb", "branch_of", "branch_step"} <= set(cols) and rows[0]["branch_of"] == "iso-L2-D32-stable"


def test_fits_json_records_the_default_convention(tmp_path):
    analysis.analyze(_runs(), str(tmp_path), {"test": True}, n_boot=0, plots=False)
    saved = json.loads((tmp_path / "fits.json").read_text())
    assert saved["convention"] == {"params": "per_law", "flops": "per_law", "metric": "loss"}


def test_planner_counts_n_as_the_fits_did():
    """Under --params=non_embedding the laws are in non-embedding N: the planner matches the shape and
    evaluates the lr law, D and the loss at the shape's non-embedding parameters, not its total."""
    lr_fit = {"x": 0.5, "log_k": math.log(3.0)}  # lr_opt = 3 N^-0.5
    iso = {"a": 0.5, "log_k": math.log(0.1)}  # N_opt = 0.1 sqrt(C)
    base = {"chinchilla": {"skipped": "x"}, "isoflop": iso, "lr": lr_fit}
    c = 1e18  # N_opt = 1e8
    total = planner.plan({**base, "convention": {"params": "total", "flops": "6nd", "metric": "loss"}}, c)
    ne = planner.plan({**base, "convention": {"params": "non_embedding", "flops": "6nd", "metric": "loss"}}, c)
    old = planner.plan(base, c)  # a fits.json from before the convention was recorded: total
    s = ne["shape"]
    assert s["params_non_embedding"] < s["params"]
    assert ne["lr"] == pytest.approx(3.0 * s["params_non_embedding"] ** -0.5)
    assert ne["lr"] != pytest.approx(3.0 * s["params"] ** -0.5, rel=1e-3)
    assert ne["D_shape"] == pytest.approx(c / (6 * s["params_non_embedding"]))
    assert abs(math.log(s["params_non_embedding"] / 1e8)) < math.log(1.1)  # the shape matched on N_ne
    t = total["shape"]
    assert total["lr"] == pytest.approx(3.0 * t["params"] ** -0.5) and old["lr"] == total["lr"]
    assert abs(math.log(t["params"] / 1e8)) < math.log(1.1)
    assert (s["n_layer"], s["n_embd"]) != (t["n_layer"], t["n_embd"])
    text = planner.format_plan(ne)
    assert f"at the shape's N = {s['params_non_embedding']:,})" in text and "non-embedding parameters" in text


def test_isoflop_leaves_unbracketed_minima_out_of_the_power_law():
    """A budget whose sizes all lie above its optimum has an extrapolated vertex: it is reported, marked, and
    left out of N_opt ~ C^a (which then comes from the bracketed budgets alone)."""
    from gpt2jax.scaling import fits

    def loss(n, c):
        return 1.0 + 300 / n ** 0.34 + 400 / (c / (6 * n)) ** 0.28

    budget, n, l = [], [], []
    # optima (from the law): 8.1e5 at 1e14, 2.3e6 at 1e15, 6.4e6 at 1e16, 1.8e7 at 1e17
    for c, sizes in ((1e15, (3e5, 1e6, 3e6, 1e7, 3e7)), (1e16, (1e6, 3e6, 1e7, 3e7, 1e8)),
                     (1e17, (3e6, 1e7, 3e7, 1e8, 3e8)), (1e14, (3e6, 1e7, 3e7, 1e8, 3e8))):
        for s in sizes:
            budget.append(c), n.append(s), l.append(loss(s, c))
    f = fits.fit_isoflop(budget, n, l, n_boot=0)
    per = {e["budget_flops"]: e for e in f["per_budget"]}
    assert not per[1e14]["inside_range"] and "below the sizes tried" in per[1e14]["left_out"]
    assert all(per[c]["inside_range"] and "left_out" not in per[c] for c in (1e15, 1e16, 1e17))
    assert f["n_budgets"] == 3
    with_all = fits.fit_isoflop(budget[:15], n[:15], l[:15], n_boot=0)
    assert f["a"] == pytest.approx(with_all["a"])  # the unbracketed budget changed nothing
