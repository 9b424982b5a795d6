"""An IsoFLOP sweep around the GPT-2 family (Hoffmann et al. 2022, approach 2): for each compute
budget C, nine shapes from 6 x 512 to 48 x 1600 (the four GPT-2 shapes among them), each trained on
tokens = C / (6 N) with N all parameters (vocabulary padding excluded). Runs shorter than 500 steps
of 524,288 tokens, or outside 1 to 250 tokens per parameter, are left out (the compute-optimal ~20
lies well inside, so every budget's parabola has points on both sides of its minimum): 28 runs, 5 or
6 per budget, 255B tokens in all. Each run records its budget_flops = C, so
`gpt2jax-analyze` fits a parabola in log N per budget and a power law through the
minima.

Budgets 1e18, 3e18, 1e19, 3e19 and 1e20 FLOPs (GPT-2 124M at 20 tokens per parameter is 1.9e18,
1.5B at 20 tokens per parameter 2.9e20). Heads of 64 as GPT-2; peak learning rate from Kaplan et al.
2020 eq. D.1 (0.003239 - 0.0001395 ln N_non-embedding: 6.9e-4 for 124M, 2.9e-4 for 1.5B, close to the
GPT-3 table's 6e-4 and 2e-4), cosine to lr/10 after a warmup of 5% of the steps; batches and optimizer
as configs/gpt2_124m.py (512 x 1024 tokens in 16 accumulation steps, OpenWebText-style data).

    gpt2jax-sweep experiments/specs/isoflop.py --root=runs/isoflop --launcher=tpu --dry_run

On TPU the runs share `slices` slices (runs of one slice go one after another), data and
checkpoints in the buckets below; replace the placeholders first.
"""

from gpt2jax.scaling import TPU, Slurm, Sweep, isoflop

BUDGETS = [1e18, 3e18, 1e19, 3e19, 1e20]
SHAPES = [(6, 512), (8, 640), (12, 768), (16, 896), (24, 1024), (24, 1280), (36, 1280), (40, 1536), (48, 1600)]


def get_sweep():
    runs = isoflop(
        "iso",
        "configs/gpt2_124m.py",
        BUDGETS,
        SHAPES,
        batch_size=512,
        seq_len=1024,
        count="total",
        head_dim=64,
        lr="kaplan",
        warmup_fraction=0.05,
        min_steps=500,
        tokens_per_param=(1.0, 250.0),
        overrides={
            "model.dtype": "bfloat16",
            "model.remat": "full",
            "mesh.data": 1,
            "mesh.fsdp": -1,
            "train.eval_every": 500,
            "checkpoint.every": 1000,
        },
    )
    tpu = TPU(name_prefix="iso", accelerator_type="v4-32", slices=4)
    slurm = Slurm(nodes=1, time="48:00:00", max_parallel=8, data_dir="<SHARED_DIR>/data/openwebtext")
    return Sweep(runs=runs, tpu=tpu, slurm=slurm, name="isoflop")
