"""How detectable is generated text, against the generator's size? And what does the watermark buy, at what cost?

    gpt2jax-sweep experiments/specs/detect_ladder.py --root=runs/detect_ladder
    python -m experiments.detectability --root=runs/detect_ladder --data_dir=data/shakespeare_bytes \
        --out=experiments/results/detectability

The question of OpenAI's GPT-2 release report (Solaiman et al. 2019, section "Detecting synthetic text"), asked
of the models trained here: every finished run under --root is a generator (a stable WSD parent, cut before its
cooldown, is left out); by default the five sizes of experiments/specs/detect_ladder.py, trained on the same
3.2M bytes of Shakespeare so that the larger is the better, as GPT-2's sizes were on WebText. Human text: --n
windows of the val split (the held-out tail), each --prompt_len bytes of prompt and the --new bytes that follow.
Machine text: each generator's continuation of the same prompts, --new bytes, by pure sampling (temperature 1)
and by top-k for each k in --top_k (default 40, the release report's setting, and 5: 40 of 257 bytes truncates
almost nothing, 40 of GPT-2's 50,257 tokens a great deal); sample i is drawn with PRNGKey(seed + i).

Detectors (gpt2jax/detect.py, each over the continuation's bytes only, conditioned on the prompt): the zero-shot
scores log_likelihood, log_rank, entropy and fast_detectgpt, scored twice: by a fixed model (--scorer: the
largest generator by default) and by the generator itself (the white-box setting of DetectGPT and
Fast-DetectGPT). Each score is oriented so that higher means "machine" (log_rank and entropy negated) and
summarized by its AUROC, human against machine, with a 95% bootstrap interval (--boot resamples of both sets).
An AUROC under 0.5 is separation the other way round (machine text *less* likely than human text); the csv's
`separability` = max(AUROC, 1 - AUROC) is what a detector that learned its direction would reach.

The watermark (gpt2jax/watermark.py, Kirchenbauer et al. 2023, gamma 0.25, context 1): the largest generator
samples the same prompts with delta in --deltas; reported per delta: z of the continuation's first L bytes for
L in --lengths (median), the fraction with z > 4 at the full length, the false-positive rate of z > 4 on the
human continuations (with the same key), and the perplexity cost: the fixed scorer's mean log-loss of the
continuation (nats/byte) against delta 0. The null: the human texts' z under --null_keys other keys, counting
every (previous, current) byte pair and each pair once.

Writes detectability.csv (one row per generator, setting, scorer and detector), watermark.csv,
detectability.json (everything, with the command and the host CPU) and two plots: auroc_vs_size.png and
watermark.png.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time

import numpy as np
from absl import flags

from gpt2jax.errors import AnalysisError, DetectionError

DETECTORS = ("log_likelihood", "log_rank", "entropy", "fast_detectgpt")
SIGN = {"log_likelihood": 1.0, "log_rank": -1.0, "entropy": -1.0, "fast_detectgpt": 1.0}  # higher = machine


# -- scores ---------------------------------------------------------------------------------------------
def auroc(machine, human) -> float:
    """P(machine score > human score) + 0.5 P(tie): the area under the ROC curve, from the ranks of the pooled
    scores (the Mann-Whitney U statistic over n_machine x n_human)."""
    from scipy.stats import rankdata

    m, h = np.asarray(machine, np.float64), np.asarray(human, np.float64)
    ranks = rankdata(np.concatenate([m, h]))  # ties get their average rank
    u = ranks[:m.size].sum() - m.size * (m.size + 1) / 2
    return float(u / (m.size * h.size))


def auroc_interval(machine, human, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the AUROC, both sets resampled."""
    rng = np.random.default_rng(seed)
    m, h = np.asarray(machine), np.asarray(human)
    vals = [auroc(m[rng.integers(0, m.size, m.size)], h[rng.integers(0, h.size, h.size)]) for _ in range(n_boot)]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def batch_scores(model_cfg, params, ids_BT, first: int, batch: int = 64) -> dict:
    """{detector: [B] scores} of each row's tokens first..T-1 (each conditioned on the tokens before it), and
    'loss' (mean -log p over them, nats per token). Rows are whole texts of at most block_size tokens."""
    from gpt2jax.detect import _forward, position_stats, scores_from_stats
    from gpt2jax.model import ModelConfig

    cfg = ModelConfig.of(model_cfg)
    ids = np.asarray(ids_BT, np.int32)
    B, T = ids.shape
    if T > cfg.block_size:
        raise DetectionError(f"texts of {T} tokens are longer than the scorer's context of {cfg.block_size}")
    out = {k: [] for k in (*DETECTORS, "loss")}
    for i in range(0, B, batch):
        chunk = ids[i:i + batch]
        pad = np.zeros((batch - len(chunk), T), np.int32)
        logits = np.asarray(_forward(params, np.concatenate([chunk, pad]), model_cfg=cfg))[:len(chunk)]
        for row, lg in zip(chunk, logits):
            st = position_stats(lg[first - 1:T - 1, :cfg.vocab_size], row[first:])
            s = scores_from_stats(st)
            for k in DETECTORS:
                out[k].append(s[k])
            out["loss"].append(float(-np.mean(st["logp"])))
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def settings_of(top_k: str) -> list[tuple[str, int]]:
    """The sampling settings: ("pure", 0), then ("top_kK", K) for each K of the comma-separated --top_k."""
    ks = []
    for part in filter(None, (p.strip() for p in top_k.split(","))):
        if not part.isdigit() or int(part) < 1:
            raise DetectionError(f"--top_k={top_k}: each entry must be a whole number >= 1, got {part!r}")
        ks.append(int(part))
    return [("pure", 0)] + [(f"top_k{k}", k) for k in dict.fromkeys(ks)]


# -- inputs ---------------------------------------------------------------------------------------------
def generators(root: str) -> list[dict]:
    """The finished runs under root that are no branch's parent (a ladder's rungs, a sweep's cooldown branches;
    a stable WSD parent, cut before its cooldown, is left out), smallest first: name, workdir, parameters."""
    from gpt2jax.scaling import table

    rows = table.collect(root)
    parents = {r.get("branch_of") for r in rows}
    rows = [r for r in rows if r["status"] == "finished" and r["name"] not in parents]
    if not rows:
        raise AnalysisError(f"--root={root}: no finished runs (other than cooldown parents) to use as generators")
    rows.sort(key=lambda r: (r["params"], r.get("budget_flops") or 0))
    return [{"name": r["name"], "workdir": os.path.join(root, r["name"]), "params": int(r["params"]),
             "budget_flops": r.get("budget_flops"), "val_loss": r["loss"]} for r in rows]


def human_windows(data_dir: str, n: int, length: int, seed: int, vocab_size: int) -> np.ndarray:
    """[n, length] token windows of the val split at distinct random offsets."""
    from gpt2jax.data import loader

    val = loader.TokenDataset(data_dir, "val", length - 1, vocab_size=vocab_size)
    tokens = np.asarray(val.tokens)
    if tokens.size < n * length:
        raise DetectionError(f"{data_dir}: the val split has {tokens.size} tokens, fewer than {n} x {length}")
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.choice(tokens.size - length, size=n, replace=False))
    return np.stack([tokens[s:s + length] for s in starts]).astype(np.int32)


def sample(model_cfg, params, prompts, new: int, seed: int, top_k: int = 0, watermark=None) -> np.ndarray:
    import jax

    from gpt2jax.sample import generate

    keys = jax.numpy.stack([jax.random.PRNGKey(seed + i) for i in range(len(prompts))])
    return np.asarray(generate(model_cfg, params, prompts, new, keys=keys, temperature=1.0, top_k=top_k,
                               watermark=watermark))


# -- the study ------------------------------------------------------------------------------------------
def run(fv) -> dict:
    from tqdm.auto import tqdm

    from gpt2jax import watermark as wm
    from gpt2jax.detect import load

    settings = settings_of(fv.top_k)
    gens = generators(fv.root)
    if fv.generators:
        wanted = fv.generators.split(",")
        missing = sorted(set(wanted) - {g["name"] for g in gens})
        if missing:
            raise DetectionError(f"--generators: no finished run named {', '.join(missing)} under {fv.root}")
        gens = [g for g in gens if g["name"] in wanted]
    scorer_dir = fv.scorer or gens[-1]["workdir"]
    s_cfg, s_params, s_tok, _ = load(workdir=scorer_dir)
    human = human_windows(fv.data_dir, fv.n, fv.prompt_len + fv.new, fv.seed, int(s_cfg.vocab_size))
    prompts, first = human[:, :fv.prompt_len], fv.prompt_len
    human_fixed = batch_scores(s_cfg, s_params, human, first)
    rows, t0 = [], time.perf_counter()
    for g in tqdm(gens, desc="generators", disable=not fv.progress):
        cfg, params, tok, _ = load(workdir=g["workdir"])
        if tok.vocab_hash != s_tok.vocab_hash:
            raise DetectionError(f"{g['workdir']}: its tokenizer is not the scorer's ({scorer_dir})")
        human_self = batch_scores(cfg, params, human, first)
        for setting, k in settings:
            text = sample(cfg, params, prompts, fv.new, fv.seed, top_k=k)
            for scorer, (sc_cfg, sc_params, hum) in {"fixed": (s_cfg, s_params, human_fixed),
                                                     "self": (cfg, params, human_self)}.items():
                mach = batch_scores(sc_cfg, sc_params, text, first)
                for d in DETECTORS:
                    a = auroc(SIGN[d] * mach[d], SIGN[d] * hum[d])
                    lo, hi = auroc_interval(SIGN[d] * mach[d], SIGN[d] * hum[d], fv.boot, seed=fv.seed)
                    rows.append({"generator": g["name"], "params": g["params"], "budget_flops": g["budget_flops"],
                                 "generator_val_loss": g["val_loss"], "setting": setting, "scorer": scorer,
                                 "detector": d, "auroc": a, "auroc_lo": lo, "auroc_hi": hi,
                                 "separability": max(a, 1.0 - a),
                                 "machine_mean": float(np.mean(mach[d])), "human_mean": float(np.mean(hum[d]))})
    gen_seconds = time.perf_counter() - t0

    # The watermark, on the largest generator.
    big = gens[-1]
    cfg, params, _, _ = load(workdir=big["workdir"])
    V = int(cfg.vocab_size)
    wm_rows = []

    def z_at(ids_BT, L, ignore_repeated=False, key=fv.watermark_key):
        return np.asarray([wm.score(r[first - 1:first + L], key, vocab_size=V, gamma=0.25, context=1,
                                    ignore_repeated=ignore_repeated)["watermark_z"] for r in ids_BT])

    human_z, human_z_once = z_at(human, fv.new), z_at(human, fv.new, True)
    # The null over keys: with one key, z of human text need not have mean 0 (a frequent byte pair is green or
    # not for the whole text); over keys it should. Human z under --null_keys other keys.
    null_summary = {"keys": fv.null_keys}
    for suffix, once in (("", False), ("_once", True)):
        null = np.stack([z_at(human, fv.new, once, key=fv.watermark_key + 1 + j) for j in range(fv.null_keys)])
        null_summary.update({f"mean{suffix}": float(null.mean()), f"sd{suffix}": float(null.std()),
                             f"per_key_mean_min{suffix}": float(null.mean(1).min()),
                             f"per_key_mean_max{suffix}": float(null.mean(1).max()),
                             f"false_positive_z_gt_4{suffix}": float(np.mean(null > 4))})
    for delta in [0.0] + [float(d) for d in fv.deltas.split(",")]:
        mark = wm.Watermark(fv.watermark_key, gamma=0.25, delta=delta, context=1) if delta > 0 else None
        text = sample(cfg, params, prompts, fv.new, fv.seed, watermark=mark)
        loss = batch_scores(s_cfg, s_params, text, first)["loss"]
        row = {"generator": big["name"], "params": big["params"], "delta": delta,
               "loss_fixed_scorer": float(np.mean(loss)), "detected_z_gt_4": float(np.mean(z_at(text, fv.new) > 4)),
               "false_positive_z_gt_4": float(np.mean(human_z > 4)), "human_z_mean": float(np.mean(human_z)),
               "human_z_sd": float(np.std(human_z)),
               # --ignore_repeated: each (previous, current) byte pair counted once
               "detected_z_gt_4_once": float(np.mean(z_at(text, fv.new, True) > 4)),
               "false_positive_z_gt_4_once": float(np.mean(human_z_once > 4)),
               "human_z_once_mean": float(np.mean(human_z_once)), "human_z_once_sd": float(np.std(human_z_once))}
        for L in (int(x) for x in fv.lengths.split(",")):
            row[f"median_z_L{L}"] = float(np.median(z_at(text, L)))
        wm_rows.append(row)
    base = wm_rows[0]["loss_fixed_scorer"]
    for r in wm_rows:
        r["perplexity_cost"] = math.exp(r["loss_fixed_scorer"] - base) - 1.0  # relative to delta 0
    return {"generators": gens, "scorer": scorer_dir, "rows": rows, "watermark": wm_rows, "null": null_summary,
            "settings": [name for name, _ in settings],
            "n": fv.n, "prompt_len": fv.prompt_len, "new": fv.new, "seed": fv.seed, "boot": fv.boot,
            "seconds": time.perf_counter() - t0, "generation_and_scoring_seconds": gen_seconds}


def plot(result: dict, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gpt2jax.scaling.plots import save_png

    paths = []
    rows = result["rows"]
    settings = result["settings"]
    fig, axes = plt.subplots(2, len(settings), figsize=(5.6 * len(settings), 8.5), sharey=True, squeeze=False,
                             layout="constrained")
    for i, scorer in enumerate(("fixed", "self")):
        for j, setting in enumerate(settings):
            ax = axes[i, j]
            for c, d in enumerate(DETECTORS):
                sel = sorted((r for r in rows if r["scorer"] == scorer and r["setting"] == setting
                              and r["detector"] == d), key=lambda r: r["params"])
                x = np.array([r["params"] for r in sel], float)
                y = np.array([r["auroc"] for r in sel])
                err = np.array([[r["auroc"] - r["auroc_lo"] for r in sel], [r["auroc_hi"] - r["auroc"] for r in sel]])
                ax.errorbar(x * (1 + 0.03 * (c - 1.5)), y, yerr=err, fmt="o-", ms=4, lw=1, capsize=2, label=d,
                            color=f"C{c}")
            ax.axhline(0.5, color="gray", lw=0.8, ls=":")
            ax.set_xscale("log")
            ax.set_title(f"{'fixed scorer (largest model)' if scorer == 'fixed' else 'scored by the generator itself'}"
                         f", {'pure sampling' if setting == 'pure' else setting.replace('top_k', 'top-k ')}",
                         fontsize=9)
            ax.grid(True, which="both", alpha=0.25)
            if i == 1:
                ax.set_xlabel("generator parameters N")
            if j == 0:
                ax.set_ylabel("AUROC, machine vs human (95% bootstrap)")
    axes[0, 0].legend(fontsize=8)
    paths.append(save_png(fig, os.path.join(out_dir, "auroc_vs_size.png")))
    plt.close(fig)

    wm_rows = result["watermark"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    ax = axes[0]
    lengths = sorted(int(k.split("_L")[1]) for k in wm_rows[0] if k.startswith("median_z_L"))
    for c, r in enumerate(wm_rows):
        ax.plot(lengths, [r[f"median_z_L{L}"] for L in lengths], "o-", ms=4, color=f"C{c}",
                label=f"delta = {r['delta']:g}")
    ax.axhline(4, color="gray", ls="--", lw=0.8, label="z = 4")
    ax.set_xlabel("continuation length (bytes)")
    ax.set_ylabel("median watermark z")
    ax.set_title(f"watermark z against length ({wm_rows[0]['generator']})", fontsize=10)
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8)
    ax = axes[1]
    d = [r["delta"] for r in wm_rows]
    ax.plot(d, [r["detected_z_gt_4"] for r in wm_rows], "o-", label="detected (z > 4)")
    ax.plot(d, [r["false_positive_z_gt_4"] for r in wm_rows], "s:", label="false positives on human text")
    ax.plot(d, [r["perplexity_cost"] for r in wm_rows], "^-", label="perplexity cost (fixed scorer)")
    ax.set_xlabel("delta (logit bias of the green list)")
    ax.set_title(f"at {result['new']} bytes: detection, false positives, perplexity cost", fontsize=10)
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8)
    paths.append(save_png(fig, os.path.join(out_dir, "watermark.png")))
    plt.close(fig)
    return paths


def main(argv, fv):
    from absl import logging

    from gpt2jax.bench import host_cpu

    logging.set_verbosity(logging.ERROR)  # Orbax's per-restore lines (a read-only checkpoint directory is expected)

    result = run(fv)
    os.makedirs(fv.out, exist_ok=True)
    for name, rows in (("detectability.csv", result["rows"]), ("watermark.csv", result["watermark"])):
        with open(os.path.join(fv.out, name), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    result.update(command=" ".join(["python -m experiments.detectability", *sys.argv[1:]]), host_cpu=host_cpu())
    with open(os.path.join(fv.out, "detectability.json"), "w") as f:
        json.dump(result, f, indent=1)
    paths = plot(result, fv.out)
    for setting in result["settings"]:
        for scorer in ("fixed", "self"):
            sel = [r for r in result["rows"] if r["setting"] == setting and r["scorer"] == scorer]
            best = max(sel, key=lambda r: r["auroc"])
            print(f"{setting}, {scorer} scorer: best AUROC {best['auroc']:.3f} "
                  f"({best['detector']}, {best['generator']})")
            for g in result["generators"]:
                sep = max((r for r in sel if r["generator"] == g["name"]), key=lambda r: r["separability"])
                print(f"  {g['name']} ({g['params']:,} params): best separability {sep['separability']:.3f} "
                      f"({sep['detector']}, AUROC {sep['auroc']:.3f})")
    for r in result["watermark"]:
        print(f"watermark delta {r['delta']:g}: detected {r['detected_z_gt_4']:.3f}, false positives "
              f"{r['false_positive_z_gt_4']:.3f}, perplexity cost {r['perplexity_cost']:+.3f}")
    n = result["null"]
    for suffix, how in (("", "every pair"), ("_once", "each pair once")):
        print(f"human text under {n['keys']} other keys, {how}: z mean {n['mean' + suffix]:.3f}, sd "
              f"{n['sd' + suffix]:.3f} (per-key means {n['per_key_mean_min' + suffix]:.2f} to "
              f"{n['per_key_mean_max' + suffix]:.2f}), z > 4 in {n['false_positive_z_gt_4' + suffix]:.4f}")
    print(f"{result['seconds']:.0f} s; wrote {fv.out}: detectability.csv, watermark.csv, detectability.json, "
          + ", ".join(os.path.basename(p) for p in paths))


def define_flags(fv) -> None:
    flags.DEFINE_string("root", "runs/detect_ladder", "A sweep root whose finished runs are the generators.",
                        flag_values=fv)
    flags.DEFINE_string("data_dir", "data/shakespeare_bytes", "The dataset the generators were trained on.",
                        flag_values=fv)
    flags.DEFINE_string("generators", "", "Comma-separated run names to use (default: every finished run).",
                        flag_values=fv)
    flags.DEFINE_string("scorer", "", "The fixed scoring model's run (default: the largest generator).",
                        flag_values=fv)
    flags.DEFINE_integer("n", 200, "Prompts (human texts).", lower_bound=10, flag_values=fv)
    flags.DEFINE_integer("prompt_len", 32, "Prompt tokens.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("new", 96, "Continuation tokens (prompt_len + new <= the models' context).",
                         lower_bound=2, flag_values=fv)
    flags.DEFINE_integer("boot", 1000, "Bootstrap resamples for the AUROC intervals.", lower_bound=10, flag_values=fv)
    flags.DEFINE_integer("null_keys", 16, "Other keys under which the human texts' z is measured (its null).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_string("top_k", "40,5", "Top-k settings sampled besides pure sampling (comma-separated k > 0).",
                        flag_values=fv)
    flags.DEFINE_string("deltas", "0.5,1,2,4", "Watermark deltas (besides 0).", flag_values=fv)
    flags.DEFINE_string("lengths", "8,16,32,64,96", "Lengths at which the watermark z is reported.", flag_values=fv)
    flags.DEFINE_integer("watermark_key", 15485863, "The watermark's secret key.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the prompts' offsets and of sampling.", flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    flags.DEFINE_string("out", "experiments/results/detectability", "Output directory.", flag_values=fv)


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
