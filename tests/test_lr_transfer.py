"""experiments/lr_transfer.py: reading a sweep's runs, averaging seeds, placing each curve's optimum."""

import json
import math

import pytest

from experiments import lr_transfer as lt


def _run(root, name, width, param, lr, loss, seed=None):
    d = root / name
    d.mkdir()
    over = {"optim.lr": lr, **({} if seed is None else {"train.seed": seed})}
    (d / "sweep_run.json").write_text(json.dumps({"overrides": over, "tags": {"width": width, "parametrization": param}}))
    (d / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": 9.0}) + "\n" + json.dumps({"step": 10, "val_loss": loss}) + "\n")


def test_parabola_optimum_is_exact_for_a_quadratic():
    # loss = (log2 lr + 5.3)^2 + 4 on a grid of powers of 2: the vertex is 2^-5.3
    pts = [(2.0**k, (k + 5.3) ** 2 + 4) for k in range(-9, -1)]
    lr, interior = lt.fitted_best(pts)
    assert interior and math.log2(lr) == pytest.approx(-5.3, abs=1e-9)
    assert lt.best(pts)[0] == 2.0**-5
    lr, interior = lt.fitted_best(pts[:4])  # the minimum beyond the grid's top: the edge point, flagged
    assert not interior and lr == 2.0**-6


def test_collect_averages_seeds_and_shares_the_base_width(tmp_path, capsys):
    for k in range(-8, -3):
        _run(tmp_path, f"base-{k}-s0", 64, "sp", 2.0**k, (k + 6) ** 2 + 5.0, seed=0)
        _run(tmp_path, f"base-{k}-s1", 64, "sp", 2.0**k, (k + 6) ** 2 + 5.2, seed=1)
        _run(tmp_path, f"mup-{k}", 512, "mup", 2.0**k, (k + 6.5) ** 2 + 4.0)
        _run(tmp_path, f"sp-{k}", 512, "sp", 2.0**k, (k + 4) ** 2 + 4.5)
    (tmp_path / "not-a-run").mkdir()
    rows = lt.collect(str(tmp_path))
    assert len(rows) == 20 and {r["seed"] for r in rows} == {0, 1}
    cs = lt.curves(rows)
    assert set(cs) == {("sp", 64), ("mup", 64), ("sp", 512), ("mup", 512)}
    assert cs[("mup", 64)] == cs[("sp", 64)] and dict(cs[("sp", 64)])[2.0**-6] == pytest.approx(5.1)
    assert math.log2(lt.fitted_best(cs[("mup", 512)])[0]) == pytest.approx(-6.5)
    out = tmp_path / "out"
    from absl import flags

    fv = flags.FlagValues()
    lt.define_flags(fv)
    fv(["prog", f"--root={tmp_path}", f"--out={out}"])
    lt.main(["prog"], fv)
    printed = capsys.readouterr().out
    assert "mup: best lr at width 64 = 0.015625" in printed and "-0.50 grid steps" in printed
    assert "sp: " in printed and "+2.00 grid steps" in printed
    assert (out / "lr_transfer.png").stat().st_size > 10_000
    assert (out / "lr_transfer.csv").read_text().count("\n") == 21


def test_several_roots_a_name_filter_and_a_base_model_of_its_own(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for k in range(-8, -3):
        _run(a, f"base-w16-{k}", 16, "sp", 2.0**k, (k + 6) ** 2 + 5.0)
        _run(a, f"sp-w128-{k}", 128, "sp", 2.0**k, (k + 8) ** 2 + 4.0)
        _run(b, f"tuned-mup-w16-{k}", 16, "mup", 2.0**k, (k + 5) ** 2 + 4.9)
        _run(b, f"tuned-mup-w128-{k}", 128, "mup", 2.0**k, (k + 5) ** 2 + 3.9)
        _run(b, f"other-mup-w128-{k}", 128, "mup", 2.0**k, 0.0)  # filtered out by --match
    rows = lt.collect(str(a), "^(base|sp)-") + lt.collect(str(b), "^tuned-")
    assert len(rows) == 20
    cs = lt.curves(rows, base_is_sp=False)  # the tuned muP base is not SP: width 16 kept apart
    assert dict(cs[("sp", 16)])[2.0**-6] == 5.0 and dict(cs[("mup", 16)])[2.0**-5] == 4.9
    assert lt.curves(rows)[("sp", 16)] != cs[("sp", 16)]  # the default would mix the two base models
    from absl import flags

    fv = flags.FlagValues()
    lt.define_flags(fv)
    fv(["prog", f"--root={a}", f"--root={b}", "--match=^(base|sp|tuned)-", "--nobase_is_sp",
        f"--out={tmp_path / 'out'}"])
    lt.main(["prog"], fv)
    printed = capsys.readouterr().out
    assert "mup: best lr at width 16 = 0.03125" in printed and "+0.00 grid steps" in printed
    assert "sp: best lr at width 16 = 0.015625" in printed and "-2.00 grid steps" in printed
    fv2 = flags.FlagValues()
    lt.define_flags(fv2)
    fv2(["prog", f"--root={a}", "--match=(", f"--out={tmp_path / 'out2'}"])
    from absl import app

    with pytest.raises(app.UsageError, match="not a regular expression"):
        lt.main(["prog"], fv2)


def test_a_committed_csv_stands_in_for_gone_runs(tmp_path, capsys):
    from absl import app, flags

    a = tmp_path / "a"
    a.mkdir()
    for k in range(-8, -3):
        _run(a, f"sp-w16-{k}", 16, "sp", 2.0**k, (k + 6) ** 2 + 5.0)
        _run(a, f"sp-w64-{k}", 64, "sp", 2.0**k, (k + 7) ** 2 + 4.5)
        _run(a, f"mup-w64-{k}", 64, "mup", 2.0**k, (k + 6.25) ** 2 + 4.0)

    def run(*args):
        fv = flags.FlagValues()
        lt.define_flags(fv)
        fv(["prog", *args])
        lt.main(["prog"], fv)
        return capsys.readouterr().out

    first = run(f"--root={a}", f"--out={tmp_path / 'first'}")
    # the runs are gone; the csv the first call wrote gives the same curves, and combines with a root
    again = run(f"--csv={tmp_path / 'first' / 'lr_transfer.csv'}", f"--out={tmp_path / 'again'}")
    assert again.replace("again", "first") == first
    assert "mup width 64: grid best lr 0.015625 (loss 4.0625), parabola optimum 2^-6.25" in first
    assert "-0.25 grid steps from width 16's" in first
    b = tmp_path / "b"
    b.mkdir()
    _run(b, "sp-w32-x", 32, "sp", 2.0**-6, 4.7)
    both = run(f"--csv={tmp_path / 'first' / 'lr_transfer.csv'}", f"--root={b}", "--match=^sp-",
               f"--out={tmp_path / 'both'}")
    assert "sp width 32: grid best lr 0.015625 (loss 4.7000)" in both and "mup width 64" not in both
    with pytest.raises(app.UsageError, match="named twice"):
        run(f"--csv={tmp_path / 'first' / 'lr_transfer.csv'}", f"--root={a}", f"--out={tmp_path / 'x'}")
    (tmp_path / "bad.csv").write_text("name,loss\nx,1.0\n")
    with pytest.raises(app.UsageError, match="needs the columns"):
        run(f"--csv={tmp_path / 'bad.csv'}", f"--out={tmp_path / 'x'}")
    with pytest.raises(app.UsageError, match="give --root"):
        run(f"--out={tmp_path / 'x'}")
