"""The detectability study's helpers (experiments/detectability.py): the AUROC, its bootstrap interval, and the
batched scores of a continuation against gpt2jax.detect's per-text scores."""

import jax
import numpy as np
import pytest

from experiments.detectability import DETECTORS, auroc, auroc_interval, batch_scores
from gpt2jax import detect
from gpt2jax.model import init_params

from conftest import tiny_config


def _brute_auroc(m, h):
    m, h = np.asarray(m, float), np.asarray(h, float)
    return ((m[:, None] > h[None, :]).sum() + 0.5 * (m[:, None] == h[None, :]).sum()) / (m.size * h.size)


def test_auroc_is_the_mann_whitney_probability_with_ties():
    rng = np.random.default_rng(0)
    for m, h in ((rng.normal(1, 1, 50), rng.normal(0, 1, 40)), (rng.integers(0, 4, 30), rng.integers(0, 4, 25))):
        assert auroc(m, h) == pytest.approx(_brute_auroc(m, h), abs=1e-12)
    assert auroc([2, 3], [0, 1]) == 1.0 and auroc([0, 1], [2, 3]) == 0.0 and auroc([1, 1], [1, 1]) == 0.5


def test_auroc_interval_brackets_the_estimate_and_narrows_with_samples():
    rng = np.random.default_rng(1)
    small = (rng.normal(0.5, 1, 30), rng.normal(0, 1, 30))
    big = (rng.normal(0.5, 1, 600), rng.normal(0, 1, 600))
    lo_s, hi_s = auroc_interval(*small, n_boot=300)
    lo_b, hi_b = auroc_interval(*big, n_boot=300)
    assert lo_s <= auroc(*small) <= hi_s and lo_b <= auroc(*big) <= hi_b
    assert hi_b - lo_b < 0.5 * (hi_s - lo_s)
    assert lo_b < 0.638 < hi_b  # the true AUROC of N(0.5, 1) against N(0, 1): Phi(0.5 / sqrt(2))


def test_batch_scores_equal_the_detectors_scores_of_the_continuation():
    c = tiny_config(model__vocab_size=257, model__vocab_multiple=1)
    params = init_params(c.model, jax.random.PRNGKey(0))
    ids = np.random.default_rng(2).integers(0, 257, (3, 20)).astype(np.int32)
    first = 6
    got = batch_scores(c.model, params, ids, first, batch=2)  # a padded last batch too
    for b in range(3):
        logits = detect.next_token_logits(c.model, params, ids[b])  # predicts ids[1:]
        st = detect.position_stats(logits[first - 1:], ids[b, first:])
        want = detect.scores_from_stats(st)
        for k in DETECTORS:  # fast_detectgpt: a difference of sums over a small sqrt(sum var) amplifies the
            # float32 difference between a forward over 20 tokens and one over detect's padded 32
            tol = 1e-3 if k == "fast_detectgpt" else 1e-5
            assert got[k][b] == pytest.approx(want[k], rel=tol, abs=1e-5), k
        assert got["loss"][b] == pytest.approx(-np.mean(st["logp"]), rel=1e-6)


def test_generators_are_the_finished_runs_that_no_branch_starts_from(tmp_path):
    import json

    from experiments.detectability import generators
    from gpt2jax.errors import AnalysisError
    from test_analyze import _write_run

    root = tmp_path / "sweep"
    _write_run(root, "big", 2, 128, 40, [(40, 4.0)])
    _write_run(root, "small", 2, 64, 40, [(40, 4.5)])
    _write_run(root, "parent", 2, 96, 40, [(40, 4.4)])
    _write_run(root, "branch", 2, 96, 40, [(40, 4.2)])
    _write_run(root, "unfinished", 2, 32, 40, [(20, 5.0)])
    info = json.loads((root / "branch" / "run.json").read_text())
    info["branch"] = {"parent": str(root / "parent"), "step": 32}
    (root / "branch" / "run.json").write_text(json.dumps(info))
    got = generators(str(root))
    assert [g["name"] for g in got] == ["small", "branch", "big"]  # smallest first; no parent, nothing unfinished
    assert got[1]["workdir"] == str(root / "branch") and got[1]["val_loss"] == pytest.approx(4.2)
    _write_run(tmp_path / "cut", "unfinished", 2, 32, 40, [(20, 5.0)])
    with pytest.raises(AnalysisError, match="no finished runs"):
        generators(str(tmp_path / "cut"))


def test_settings_are_pure_then_each_top_k_and_refuse_nonsense():
    from experiments.detectability import settings_of

    assert settings_of("40,5") == [("pure", 0), ("top_k40", 40), ("top_k5", 5)]
    assert settings_of("") == [("pure", 0)] and settings_of("5,5") == [("pure", 0), ("top_k5", 5)]
    for bad in ("0", "-3", "4.5", "k"):
        with pytest.raises(ValueError, match="--top_k"):
            settings_of(bad)
