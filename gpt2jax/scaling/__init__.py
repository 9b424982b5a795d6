"""The scaling tools: sweeps of training runs, reading them back, scaling-law fits, plots, the planner.

What a sweep spec imports (`from gpt2jax.scaling import Sweep, Run, ladder`):

    Run, Sweep, TPU, Slurm            what a spec declares                      spec.py
    grid, ladder, isoflop, kaplan_lr  the usual shapes of a scaling study       spec.py
    cooldowns                         WSD parents and their cooldown branches   cooldowns.py
    load_config, model_config         a config as gpt2jax-train builds it       overrides.py, spec.py
    spec_module                       another spec file's helpers, by path      resolve.py
    SweepError                        a spec's mistake (gpt2jax.errors)

The modules, in the order data flows (each imports only those above it):

    overrides.py   a config file plus `--config.a.b=v` overrides, typed as the command line types them
    spec.py        Run / Sweep / TPU / Slurm and the helpers that build runs
    cooldowns.py   cooldown sweeps (one stable WSD parent per shape, one branch per budget)
    resolve.py     a spec file -> validated runs and their records (sweep_run.json)
    launch.py      what the launchers share: records, train command lines, where a run stands, branch order
    local.py, tpu.py, slurm.py   the launchers
    table.py       run directories (or a CSV table) -> records and runs.csv
    fits.py        the scaling-law fits with bootstrap intervals (numpy + scipy)
    analysis.py    records -> fits.json and a summary
    plots.py       the PNG plots (matplotlib)
    planner.py     a compute budget -> N, D, the nearest shape, the predicted loss
    synthetic.py   fake sweeps from a known law, to check the analysis end to end

The command-line tools over them are gpt2jax/sweep.py (gpt2jax-sweep) and gpt2jax/analyze.py
(gpt2jax-analyze). fits, analysis, plots, planner and synthetic need the scaling extra (scipy,
matplotlib, threadpoolctl: pip install -e '.[scaling]'); a spec and the sweep do not.
"""

from gpt2jax.errors import SweepError
from gpt2jax.scaling.cooldowns import cooldowns
from gpt2jax.scaling.overrides import apply_overrides, load_config
from gpt2jax.scaling.resolve import spec_module
from gpt2jax.scaling.spec import TPU, Run, Slurm, Sweep, grid, isoflop, kaplan_lr, ladder, model_config

__all__ = [
    "TPU", "Run", "Slurm", "Sweep", "SweepError", "apply_overrides", "cooldowns", "grid", "isoflop",
    "kaplan_lr", "ladder", "load_config", "model_config", "spec_module",
]
