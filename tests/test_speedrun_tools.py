"""The CPU-speedrun ablation's step budget (experiments/cpu_speedrun.py) and the Muon-vs-AdamW ladder's summary
(experiments/muon_ladder.py), on records written here."""

import json

import pytest

from experiments import cpu_speedrun, muon_ladder


def test_equal_wall_time_gives_each_variant_its_share_of_the_budget(tmp_path):
    times = {"base": [0.30, 0.34, 0.32], "muon": [0.48, 0.40, 0.44], "relu2+muon_lr0.05": [0.5, 0.5, 0.5]}
    (tmp_path / "step_times.json").write_text(json.dumps({"cpu": {}, "steps": 40, "repeats": 3, "times": times}))
    assert cpu_speedrun.steps_for(tmp_path, "base") == (1300, {})
    steps, over = cpu_speedrun.steps_for(tmp_path, "muon_lr0.05")  # the median step time, 0.44 s: 1300 x 0.32 / 0.44
    assert steps == 945 and over == {"optim.name": "muon", "optim.muon_lr": 0.05}
    steps, over = cpu_speedrun.steps_for(tmp_path, "relu2+muon_lr0.05")  # a combination is timed as itself
    assert steps == round(1300 * 0.32 / 0.5) and over == {"model.mlp": "relu2", "optim.name": "muon", "optim.muon_lr": 0.05}
    with pytest.raises(KeyError):
        cpu_speedrun.steps_for(tmp_path, "softcap15")  # its step time was never measured


def _run(root, name, loss, steps=3000):
    d = root / name
    d.mkdir()
    (d / "metrics.jsonl").write_text(json.dumps({"step": steps, "loss": loss + 0.1}) + "\n" +
                                     json.dumps({"step": steps, "val_loss": loss}) + "\n")
    (d / "run.json").write_text(json.dumps({"config": {"train": {"batch_size": 16, "seq_len": 128}}}))


def test_ladder_summary_takes_muons_best_rate_per_width(tmp_path):
    for name, loss in [("adamw-w16-lr0.03125", 2.0), ("muon0.01-w16-lr0.03125", 1.99), ("muon0.04-w16-lr0.03125", 1.9),
                       ("adamw-w32-lr0.015625", 1.8), ("muon0.02-w32-lr0.015625", 1.85), ("muon0.04-w32-lr0.015625", 1.7)]:
        _run(tmp_path, name, loss)
    _run(tmp_path, "muon0.02-w64-lr0.01", 1.6)  # no AdamW run at this width: no ratio
    (tmp_path / "sweep.json").write_text("{}")
    rows = muon_ladder.collect(tmp_path)
    assert len(rows) == 7 and all(r["tokens"] == 3000 * 16 * 128 for r in rows)
    s = muon_ladder.summarise(rows)
    assert [(x["width"], x["muon_best_lr"], x["ratio"]) for x in s] == [(16, 0.04, 0.95), (32, 0.04, round(1.7 / 1.8, 4))]
    muon_ladder.main(["--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "muon_vs_adamw.png").stat().st_size > 0
    assert "| 16 | 2.0000 | 1.9900 | - | 1.9000 | 0.9500 |" in (tmp_path / "out" / "table.md").read_text()
