"""The learning-rate fit recovers a known law lr_opt = k N^-x from synthetic sweeps (seeds averaged)."""

import math

import numpy as np
import pytest

from gpt2jax.scaling import analysis, fits, planner, plots


def _sweep(k=2.0, x=0.3, seeds=2, noise=0.002, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    size, lr, loss = [], [], []
    for n in (1e5, 3e5, 1e6, 3e6, 1e7):
        opt = k * n ** -x
        for g in opt * 2.0 ** np.arange(-3, 4) * 2.0 ** rng.uniform(-0.5, 0.5):  # the grid off the optimum
            for _ in range(seeds):
                size.append(n)
                lr.append(g)
                loss.append(3.0 + 0.05 * math.log2(g / opt) ** 2 + noise * rng.standard_normal())
    return size, lr, loss


def test_recovers_a_known_lr_law_within_5_percent():
    f = fits.fit_lr(*_sweep(), n_boot=100)
    assert f["x"] == pytest.approx(0.3, rel=0.05)
    assert f["k"] == pytest.approx(2.0, rel=0.05 * 2.0 + 0.1)  # k is the intercept at N = 1: loose
    assert fits.lr_at(f, 1e6) == pytest.approx(2.0 * 1e6 ** -0.3, rel=0.05)
    lo, hi = f["ci95"]["x"]
    assert lo <= 0.3 <= hi and f["n_sizes"] == 5


def test_edge_optima_are_flagged_and_left_out():
    size, lr, loss = _sweep()
    keep = [i for i in range(len(size)) if not (size[i] == 1e7 and lr[i] > 2.0 * 1e7 ** -0.3 * 0.7)]
    f = fits.fit_lr([size[i] for i in keep], [lr[i] for i in keep], [loss[i] for i in keep], n_boot=20)
    edge = [p for p in f["per_size"] if p.get("edge")]
    assert len(edge) == 1 and edge[0]["size"] == 1e7 and f["n_sizes"] == 4


def test_seed_average_and_parabola():
    o = fits.lr_optimum([1, 2, 4, 1, 2, 4], [3.2, 3.0, 3.2, 3.0, 3.0, 3.0])
    # means 3.1, 3.0, 3.1: symmetric neighbours -> the vertex at lr 2
    assert o["lr_opt"] == pytest.approx(2.0) and not o["edge"] and o["n_seeds"] == 2


def test_analyze_fits_lr_from_a_grid_and_the_planner_prints_it(tmp_path):
    size, lr, loss = _sweep()
    runs = [{"name": f"r{i}", "status": "finished", "fields": {"optim.lr": g}, "curve": None, "val_curve": None,
             "params": n, "params_non_embedding": n, "tokens": 20 * n * 2.0 ** (i % 3), "loss": l}
            for i, (n, g, l) in enumerate(zip(size, lr, loss))]
    out = analysis.analyze(runs, str(tmp_path), {"test": True}, n_boot=20, plots=False)
    assert out["lr"]["x"] == pytest.approx(0.3, rel=0.05)
    assert plots.plot_lr(out["lr"], str(tmp_path)) == "lr_opt_vs_params.png"
    assert (tmp_path / "lr_opt_vs_params.png").stat().st_size > 1000
    text = planner.format_plan(planner.plan({**out, "isoflop": {"a": 0.5, "log_k": math.log(0.1)}}, 1e15))
    assert "predicted learning rate" in text
