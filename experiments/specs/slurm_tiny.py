"""A small sweep for trying the SLURM launcher on any cluster, down to a one-node cluster on a laptop (the
shape tests/test_slurm.py submits): two learning rates of a 2 x 64 byte-level model, and a WSD parent with
one cooldown branch, 400 steps each, a few minutes on 2 CPU cores. Set `partition` (and `setup`, the line
that puts the project's python on PATH in a job) for your cluster.

    gpt2jax-prepare --source=shakespeare --split=tail --tokenizer=bytes --out_dir=data/shakespeare_bytes
    gpt2jax-sweep experiments/specs/slurm_tiny.py --root=runs/slurm_tiny --launcher=slurm --dry_run
    gpt2jax-sweep experiments/specs/slurm_tiny.py --root=runs/slurm_tiny --launcher=slurm
    gpt2jax-sweep experiments/specs/slurm_tiny.py --root=runs/slurm_tiny --launcher=slurm --status
"""

from gpt2jax.scaling import Run, Slurm, Sweep, cooldowns

COMMON = {"model.vocab_size": 257, "model.vocab_multiple": 1, "data.dir": "data/shakespeare_bytes",
          "train.eval_batches": 4, "train.log_every": 50, "train.eval_every": 0, "model.scan_layers": False}


def get_sweep():
    runs = [Run(f"lr{lr:g}", "configs/tiny.py", {**COMMON, "optim.lr": lr, "train.num_steps": 400,
                                                  "checkpoint.every": 100}, tags={"lr": lr})
            for lr in (1e-3, 4e-3)]
    runs += cooldowns("wsd", "configs/tiny.py", [(2, 64)], tokens={(2, 64): [400 * 8 * 32]}, seq_len=32,
                      batch_size=lambda shape, Ds: 8, n_head=lambda shape: 2, lr=lambda shape, Ds: 2e-3,
                      warmup=lambda shape, steps: 20, overrides=COMMON)
    slurm = Slurm(partition="debug", nodes=1, ntasks_per_node=1, gpus_per_node=0, cpus_per_task=1,
                  time="00:20:00")
    return Sweep(runs=runs, slurm=slurm, name="tiny")
