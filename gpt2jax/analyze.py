"""Collect a sweep's runs, fit scaling laws, draw the plots, and plan a compute budget.

    gpt2jax-analyze --root=DIR --out=OUT     # every run under DIR (one workdir each)
    gpt2jax-analyze --csv=FILE --out=OUT     # a table: params, tokens, loss [, flops, ...]
    gpt2jax-analyze --fits=OUT/fits.json --budget_flops=1e21   # the planner
    (or python -m gpt2jax.analyze)

--root reads DIR/<run>/run.json (gpt2jax-train), metrics.jsonl and sweep_run.json (gpt2jax-sweep) and
writes OUT/runs.csv (gpt2jax/scaling/table.py); both modes write OUT/fits.json (the fits:
gpt2jax/scaling/fits.py and analysis.py) and PNG plots (plots.py); the planner is planner.py.
docs/scaling_laws.md describes the fits and the files. Needs the scaling extra (scipy, matplotlib,
threadpoolctl): pip install -e '.[scaling]'.
"""

from __future__ import annotations

import os

from absl import flags

from gpt2jax.errors import AnalysisError, FlagsError, MissingExtra
from gpt2jax.scaling.table import FLOPS, METRICS, PARAMS

INSTALL_HINT = "install the scaling extra with  pip install -e '.[scaling]'  (or  pip install 'gpt2jax[scaling]')"


def define_flags(fv) -> None:
    flags.DEFINE_string("root", None, "Sweep root: one run workdir per subdirectory.", flag_values=fv)
    flags.DEFINE_string("csv", None, "A table with columns params, tokens, loss (flops optional).", flag_values=fv)
    flags.DEFINE_string("out", None, "Output directory for runs.csv, fits.json and the plots.", flag_values=fv)
    flags.DEFINE_string("fits", None, "Planner: a fits.json written by this tool.", flag_values=fv)
    flags.DEFINE_float("budget_flops", None, "Planner: the compute budget C in FLOPs (C = 6 N D).", flag_values=fv)
    flags.DEFINE_integer("n_boot", 200, "Bootstrap resamples per fit (95% intervals).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the bootstrap.", flag_values=fv)
    flags.DEFINE_enum("power_law_tokens", "fixed", ["fixed", "all"],
                      "power_law_n over the token budget shared by most sizes (fixed) or all runs.", flag_values=fv)
    flags.DEFINE_boolean("power_law_e0", False, "power_law_n with E = 0 (Kaplan's L = (N_c/N)^alpha).", flag_values=fv)
    flags.DEFINE_boolean("frontier_e0", True, "frontier with E = 0 (Kaplan's L = (C_c/C)^alpha).", flag_values=fv)
    flags.DEFINE_float("frontier_skip", 0.1, "Fraction of each run's steps left out of the frontier.", flag_values=fv)
    flags.DEFINE_boolean("plots", True, "Draw the PNG plots.", flag_values=fv)
    flags.DEFINE_enum("params", None, list(PARAMS), "N in every fit: all parameters (Hoffmann et al.) or the "
                      "non-embedding ones (Kaplan et al.). Unset: each law as its paper counted it (chinchilla "
                      "and isoflop: total; power_law_n: non-embedding).", flag_values=fv)
    flags.DEFINE_enum("flops", None, list(FLOPS), "C in every fit: 6 N D, or the FLOPs with attention "
                      "(flops_per_token x tokens). Unset: isoflop on 6 N D, the frontier with attention.",
                      flag_values=fv)
    flags.DEFINE_enum("metric", "loss", list(METRICS), "What the fits fit: val loss (nats/token) or bits per "
                      "byte (val_bpb; compares vocabularies).", flag_values=fv)


def main(argv, fv):
    F = fv
    if len(argv) > 1:
        raise FlagsError(f"unexpected arguments {' '.join(argv[1:])} (see --help)")
    try:
        from gpt2jax.scaling import analysis, planner, table  # scipy, matplotlib, threadpoolctl
    except ImportError as e:
        raise MissingExtra(f"gpt2jax-analyze needs {e.name or 'its fitting and plotting libraries'}: "
                           f"{INSTALL_HINT}") from e
    if F.fits or F.budget_flops is not None:
        if not F.fits or F.budget_flops is None:
            raise AnalysisError("the planner needs both --fits=FILE and --budget_flops=C")
        if not F.budget_flops > 0:
            raise AnalysisError(f"--budget_flops must be > 0, got {F.budget_flops}")
        fits = table.read_json(F.fits)
        if not isinstance(fits, dict) or "chinchilla" not in fits:
            raise AnalysisError(f"{F.fits}: not a fits.json written by gpt2jax-analyze")
        planner.check_fits(fits, F.fits)
        try:
            print(planner.format_plan(planner.plan(fits, F.budget_flops)), flush=True)
        except (KeyError, TypeError, ValueError) as e:
            what = f"the field {e.args[0]!r} is missing" if isinstance(e, KeyError) else "a field has the wrong type"
            raise AnalysisError(f"{F.fits}: not a fits.json this version of gpt2jax-analyze can read ({what}); "
                                "write it again with gpt2jax-analyze --root=... --out=...") from None
        return
    if bool(F.root) == bool(F.csv):
        raise AnalysisError("give one of --root=DIR or --csv=FILE (and --out=DIR), or the "
                            "planner's --fits=FILE --budget_flops=C")
    if not F.out:
        raise AnalysisError("--out=DIR is required")
    if F.n_boot < 0:
        raise AnalysisError(f"--n_boot must be >= 0, got {F.n_boot}")
    if F.root:
        runs = table.collect(F.root)
        columns, rows = table.table_rows(runs)
        os.makedirs(F.out, exist_ok=True)
        table.write_csv(os.path.join(F.out, "runs.csv"), columns, rows)
        source = {"root": os.path.abspath(F.root)}
    else:
        runs = table.read_csv(F.csv)
        source = {"csv": os.path.abspath(F.csv)}
    fits = analysis.analyze(runs, F.out, source, n_boot=F.n_boot, seed=F.seed, plots=F.plots,
                            power_law_tokens=F.power_law_tokens, power_law_e0=F.power_law_e0,
                            frontier_e0=F.frontier_e0, frontier_skip=F.frontier_skip, params=F.params,
                            flops=F.flops, metric=F.metric)
    print(analysis.summarize(fits), flush=True)
    written = (["runs.csv"] if F.root else []) + ["fits.json"] + fits.get("plots", [])
    print(f"wrote {', '.join(os.path.join(F.out, w) for w in written)}", flush=True)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
