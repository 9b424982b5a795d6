"""The committed experiment specs (experiments/specs/): each loads and every run resolves against its config,
as `gpt2jax-sweep SPEC --dry_run` would; the IsoFLOP reproduction's stated rules hold for its runs."""

import math

import pytest

from gpt2jax.scaling import resolve, spec_module
from tests.conftest import ROOT

SPECS = sorted((ROOT / "experiments" / "specs").glob("*.py"))


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_spec_resolves(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # specs name configs and data relative to the checkout
    sweep = resolve.load_spec(str(path))
    planned = resolve.plan(sweep, str(path))
    assert len(planned) == len(sweep.runs) > 0
    assert all(p.num_steps > 0 for p in planned)


def test_chinchilla_cpu3_rules():
    """One batch per budget (4, 8, 16, 32 sequences), at most 4 epochs, tokens = C / (6N) to within a step,
    a 5% warmup, and the learning rate from the committed lr-grid fit (about 0.006 at every size)."""
    c3 = spec_module(str(ROOT / "experiments" / "specs" / "chinchilla_cpu3.py"))
    runs = c3.get_sweep().runs
    assert len(runs) == sum(len(v) for v in c3.GRID.values()) >= 4 * 5
    assert {C: c3.batch(C) for C in c3.GRID} == {3e11: 4, 1e12: 8, 3e12: 16, 1e13: 32}
    assert max(c3.GRID) / min(c3.GRID) >= 10
    for r in runs:
        o, C = r.overrides, r.budget_flops
        n = c3.n_total((o["model.n_layer"], o["model.n_embd"]))
        tokens = o["train.num_steps"] * o["train.batch_size"] * o["train.seq_len"]
        assert o["train.batch_size"] == c3.batch(C)
        assert C / (6 * n) <= tokens < C / (6 * n) + o["train.batch_size"] * o["train.seq_len"]
        assert tokens <= 4 * c3.TRAIN_TOKENS
        assert o["optim.warmup_steps"] == max(20, round(0.05 * o["train.num_steps"]))
        assert 0.005 < o["optim.lr"] < 0.007 and o["optim.schedule"] == "wsd"
        assert o["train.eval_batches"] * o["train.batch_size"] == 512  # the same val windows for every run
    for C, shapes in c3.GRID.items():  # each profile spans its optimum's neighbourhood: >= 5 sizes, >= 4x
        sizes = [c3.n_total(s) for s in shapes]
        assert len(shapes) >= 5 and max(sizes) / min(sizes) >= 4 and math.isfinite(C)
