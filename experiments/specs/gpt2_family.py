"""The GPT-2 family -- 124M, 355M, 774M, 1.5B (configs/gpt2_*.py, OpenAI's shapes, context 1024) --
on OpenWebText-style data (`gpt2jax-prepare --source='parquet:openwebtext/*.parquet:text'`,
or FineWeb), each trained compute-optimally in Hoffmann et al.'s (Chinchilla) sense:

    tokens = 20 x N (N all parameters, vocabulary padding excluded), steps = ceil(tokens / 524,288)

124M: 2.49B tokens (4,748 steps); 355M: 7.10B (13,536); 774M: 15.5B (29,527); 1.5B: 31.2B (59,419).
Everything else is the configs' (gpt2jax.config.gpt2_config: 512 x 1024-token batches in 16
accumulation steps, AdamW 0.9/0.95, weight decay 0.1, the GPT-3 paper's peak lr per size, cosine to
lr/10), except warmup: 5% of the steps (at most the configs' 2,000). To reproduce nanoGPT's budget
instead (GPT-2 124M for 600,000 steps = 315B tokens, the configs' num_steps), set BUDGET = "nanogpt".

    gpt2jax-sweep experiments/specs/gpt2_family.py --root=runs/gpt2_family --launcher=tpu --dry_run
    gpt2jax-sweep experiments/specs/gpt2_family.py --root=runs/gpt2_family --launcher=slurm --dry_run

Replace the placeholders (<PROJECT>, <ZONE>, <BUCKET>, <REPO_URL>, <PARTITION>,
<SHARED_DIR>) below first. On TPU
every run gets its own slice (sized per run in ACCELERATORS), the parameters and optimizer state
sharded over all its chips (mesh fsdp=-1), bf16 compute, full remat for the two larger sizes.
"""

import math

from gpt2jax.scaling import TPU, Run, Slurm, Sweep, load_config

BUDGET = "chinchilla"  # or "nanogpt"
TOKENS_PER_PARAM = 20
SIZES = {"gpt2-124m": "configs/gpt2_124m.py", "gpt2-355m": "configs/gpt2_355m.py",
         "gpt2-774m": "configs/gpt2_774m.py", "gpt2-1558m": "configs/gpt2_1558m.py"}
# At most 32 chips: the 32 sequences of each accumulation step (512 / 16) must divide over the devices.
ACCELERATORS = {"gpt2-124m": "v4-16", "gpt2-355m": "v4-32", "gpt2-774m": "v4-32", "gpt2-1558m": "v4-64"}


def get_sweep():
    from gpt2jax.model import num_params

    runs = []
    for name, path in SIZES.items():
        cfg = load_config(path)
        overrides = {"model.dtype": "bfloat16", "mesh.data": 1, "mesh.fsdp": -1}
        if cfg.model.n_embd >= 1280:
            overrides["model.remat"] = "full"
        if BUDGET == "chinchilla":
            n = num_params(cfg.model)
            steps = math.ceil(TOKENS_PER_PARAM * n / (cfg.train.batch_size * cfg.model.block_size))
            overrides["train.num_steps"] = steps
            overrides["optim.warmup_steps"] = min(2000, math.ceil(0.05 * steps))
        elif BUDGET != "nanogpt":
            raise ValueError(f"BUDGET must be 'chinchilla' or 'nanogpt', got {BUDGET!r}")
        runs.append(Run(name, path, overrides, tags={"family": "gpt2", "budget": BUDGET}))
    tpu = TPU(name_prefix="sweep", accelerator_types=dict(ACCELERATORS))
    # One 8-GPU node per run; raise nodes for the larger sizes on a cluster that has them.
    slurm = Slurm(nodes=1, ntasks_per_node=8, gpus_per_node=8, cpus_per_task=8, time="72:00:00",
                  data_dir="<SHARED_DIR>/data/openwebtext")
    return Sweep(runs=runs, tpu=tpu, slurm=slurm, name="gpt2_family")
