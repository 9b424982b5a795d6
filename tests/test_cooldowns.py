"""Cooldown sweeps (gpt2jax/scaling/cooldowns.py): the runs `cooldowns()` builds (parents first, their
branch points kept, each branch's cooldown where the WSD schedule puts it, tokens = C / (6N)), the
refusal of budgets too small for a cooldown, and the local launcher with branches: a parent stopped
at train.stop_after counts as done, a branch whose parent checkpoint is missing is skipped with a
message. (A real tiny cooldown sweep, 2 shapes x 2 budgets, takes about 100 s on 2 cores, so no test
trains one; tests/test_branch.py trains branches, tests/test_sweep.py a plain local sweep.)"""

import pathlib

import pytest

from gpt2jax.errors import SweepError
from gpt2jax.model import num_params
from gpt2jax.scaling import cooldowns, launch, resolve
from gpt2jax.scaling import spec as spec_lib

TINY = "configs/tiny.py"
SHAPES = [(1, 32), (2, 64)]
B, T = 4, 32


def _flops_per_step(shape, count="total"):
    cfg = spec_lib.model_config(TINY, shape[0], shape[1], 2, T)
    return 6.0 * num_params(cfg.model, non_embedding=count == "non_embedding") * B * T


def _budgets(steps=(5, 10, 20), count="total"):
    """Per shape, budgets of about `steps` steps each (given out of order: cooldowns sorts them)."""
    return {s: [_flops_per_step(s, count) * (k - 0.5) for k in reversed(steps)] for s in SHAPES}


def _cooldowns(budgets=None, tokens=None, decay_fraction=0.2, warmup=1, count="total", prefix="cd"):
    return cooldowns(prefix, TINY, SHAPES, budgets=budgets, tokens=tokens, seq_len=T,
                     batch_size=lambda shape, Ds: B, n_head=lambda shape: 2, lr=lambda shape, Ds: 1e-3,
                     decay_fraction=decay_fraction, warmup=lambda shape, steps: warmup, count=count,
                     overrides={"train.eval_batches": 1})


@pytest.mark.parametrize("count", ["total", "non_embedding"])
def test_parents_branches_and_budgets(count):
    budgets = _budgets(count=count)
    runs = _cooldowns(budgets=budgets, count=count)
    planned = resolve.plan(spec_lib.Sweep(runs=runs), "x")  # every run resolves and validates
    by_name = {p.name: p for p in planned}
    names = [r.name for r in runs]
    parents = [p for p in planned if p.run.tags["role"] == "parent"]
    branches = [p for p in planned if p.run.tags["role"] == "branch"]
    assert len(parents) == 2 and len(branches) == 6 and len(set(names)) == 8
    for b in branches:
        t = b.config.train
        parent = by_name[t.branch_from]
        # the parent comes before its branches, and is the stable WSD run of the same shape
        assert names.index(parent.name) < names.index(b.name)
        assert parent.run.tags["role"] == "parent" and b.run.tags["parent"] == parent.name
        assert (parent.config.model.n_layer, parent.config.model.n_embd) == (b.config.model.n_layer, b.config.model.n_embd)
        assert parent.config.optim.schedule == b.config.optim.schedule == "wsd"
        # the branch starts where its own cooldown begins: the last round(fraction x steps) steps
        n = t.num_steps
        assert t.branch_step == n - int(round(0.2 * n)) and 1 <= t.branch_step < n
        # the parent keeps that step and runs at least to it
        assert t.branch_step in parent.config.checkpoint.steps
        assert t.branch_step <= parent.config.train.stop_after < parent.config.train.num_steps
        # the budget is recorded; tokens = C / (6N) rounded up to whole steps
        C = b.record["budget_flops"]
        assert C in budgets[(b.config.model.n_layer, b.config.model.n_embd)] and isinstance(C, float)
        N = b.record["params" if count == "total" else "params_non_embedding"]
        assert C / (6 * N) <= b.record["tokens"] < C / (6 * N) + B * T
        assert b.record["tokens"] == n * B * T
    for parent in parents:
        mine = [b for b in branches if b.config.train.branch_from == parent.name]
        assert len(mine) == 3
        assert sorted(parent.config.checkpoint.steps) == sorted({b.config.train.branch_step for b in mine})
        longest = max(mine, key=lambda b: b.num_steps)
        assert parent.num_steps == longest.num_steps
        assert parent.config.train.stop_after == longest.config.train.branch_step  # stops before cooling down
        assert parent.record["budget_flops"] is None
        assert [b.num_steps for b in mine] == [5, 10, 20]  # sorted by tokens, whatever the budgets' order


def test_token_counts_instead_of_budgets():
    runs = _cooldowns(tokens={s: [B * T * 10, B * T * 30] for s in SHAPES}, decay_fraction=0.3)
    planned = resolve.plan(spec_lib.Sweep(runs=runs), "x")
    steps = [(p.num_steps, p.config.train.branch_step) for p in planned if p.config.train.branch_from]
    assert steps == [(10, 7), (30, 21)] * 2
    assert all(p.record["budget_flops"] is None for p in planned)


@pytest.mark.parametrize("kw, why", [
    # 2 steps: round(0.2 x 2) = 0 cooldown steps
    ({"budgets": {s: [_flops_per_step(s) * 1.5] for s in SHAPES}}, r"its cooldown, round\(decay_fraction=0.2 x 2\), is 0 steps"),
    # 1 step, the whole run a cooldown: no stable step to branch at
    ({"budgets": {s: [_flops_per_step(s) * 0.5] for s in SHAPES}, "decay_fraction": 0.6}, "before any stable step"),
    # 10 steps, cooldown from step 8, warmup 9
    ({"tokens": {s: [B * T * 10] for s in SHAPES}, "warmup": 9}, "inside the warmup of 9 steps"),
])
def test_too_small_a_budget_is_refused_naming_the_run(kw, why):
    with pytest.raises(SweepError, match=r"run 'cd-[CT]\de\d+-L1-D32' \(\d+ steps\) is too short for a cooldown branch") as e:
        _cooldowns(**kw)
    assert e.match(why)


# -- the local launcher ---------------------------------------------------------------------------
def _planned(overrides_a: dict, overrides_b: dict):
    runs = [spec_lib.Run("p", TINY, {"train.num_steps": 8, **overrides_a}),
            spec_lib.Run("b", TINY, {"train.num_steps": 8, "train.branch_from": "p", "train.branch_step": 4,
                                     **overrides_b})]
    return resolve.plan(spec_lib.Sweep(runs=runs), "x")


def test_a_run_is_done_at_its_stop_after():
    p, b = _planned({"train.stop_after": 4}, {})
    assert launch.target_step(p) == 4 and launch.target_step(b) == 8
    assert launch.is_done(p, 4) and launch.is_done(p, 6) and not launch.is_done(p, 3)
    assert not launch.is_done(p, None) and not launch.is_done(b, 4) and launch.is_done(b, 8)


def test_branches_run_after_their_parents_whatever_the_spec_order():
    runs = [spec_lib.Run("b1", TINY, {"train.num_steps": 8, "train.branch_from": "p", "train.branch_step": 4}),
            spec_lib.Run("x", TINY, {"train.num_steps": 8, "train.branch_from": "/elsewhere/q", "train.branch_step": 4}),
            spec_lib.Run("p", TINY, {"train.num_steps": 8}),
            spec_lib.Run("bb", TINY, {"train.num_steps": 8, "train.branch_from": "b1", "train.branch_step": 6})]
    planned = resolve.plan(spec_lib.Sweep(runs=runs), "x")
    assert [p.name for p in launch.ordered(planned)] == ["x", "p", "b1", "bb"]
    assert launch.branch_depths(planned) == {"b1": 1, "x": 0, "p": 0, "bb": 2}
    cyc = [spec_lib.Run("a", TINY, {"train.num_steps": 8, "train.branch_from": "c", "train.branch_step": 4}),
           spec_lib.Run("c", TINY, {"train.num_steps": 8, "train.branch_from": "a", "train.branch_step": 4})]
    with pytest.raises(SweepError, match="cycle"):
        launch.ordered(resolve.plan(spec_lib.Sweep(runs=cyc), "x"))


def _fake_checkpoints(workdir: pathlib.Path, steps) -> None:
    """Committed-looking Orbax step directories (what Checkpointer.all_steps lists)."""
    for s in steps:
        d = workdir / "checkpoints" / str(s)
        d.mkdir(parents=True)
        (d / "_CHECKPOINT_METADATA").write_text("{}")


def test_a_branch_without_its_parent_checkpoint_is_skipped(tmp_path, monkeypatch, capsys):
    """The parent is done (at its stop_after) but lacks the branch point: the branch is not started,
    a message says why, the sweep ends with status 1; nothing is trained."""
    from gpt2jax.scaling import local

    p, b = _planned({"train.stop_after": 6}, {})
    root = tmp_path / "r"
    _fake_checkpoints(root / "p", [2, 6])
    assert launch.parent_steps(str(root / "p")) == [2, 6]
    assert launch.latest_step(p, str(root / "p")) == 6
    assert local.branch_blocker(b, str(root / "b"), None) is not None
    monkeypatch.setattr(local.subprocess, "Popen", lambda *a, **k: pytest.fail(f"started {a}"))
    assert local.launch_local([p, b], str(root), dry_run=False, progress=False) == 1
    out, err = capsys.readouterr()
    assert "p: done to train.stop_after=6 (checkpoint at step 6; num_steps 8), skipped" in out
    assert (f"b: skipped, not started: its parent {root / 'p'} has no checkpoint at train.branch_step=4 "
            "(checkpoints at steps [2, 6]); run the parent to that step first") in err
    assert "1/2 runs finished; not yet: b (its parent's checkpoint is missing)" in out
    # no parent at all: the same, naming no checkpoints
    assert "(no checkpoints)" in local.branch_blocker(b, str(tmp_path / "other" / "b"), None)
    # with the branch point there, the branch may start; a branch with checkpoints of its own resumes
    _fake_checkpoints(root / "p", [4])
    assert local.branch_blocker(b, str(root / "b"), None) is None
    assert local.branch_blocker(b, str(tmp_path / "other" / "b"), 5) is None
