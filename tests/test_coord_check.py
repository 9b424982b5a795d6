"""The muP coordinate check, numerically, at small widths: under muP the hidden states and logits keep their
size as the width doubles; under SP they grow."""

from experiments.coord_check import growth, run


def test_mup_activations_stay_flat_and_sp_ones_grow(shakespeare_dir):
    rows = run([32, 64], ["sp", "mup"], base_width=32, steps=3, lr=1e-2, data_dir=shakespeare_dir, progress=False)
    for q in ("layer_0", "layer_1", "logits"):
        assert 0.7 < growth(rows, "mup", q, 3) < 1.4, q
    for q in ("layer_0", "layer_1"):
        assert growth(rows, "sp", q, 3) > 1.8, q
    # at init (step 0) both are alike: the difference is in how the updates scale
    assert 0.6 < growth(rows, "sp", "layer_1", 0) < 1.6
