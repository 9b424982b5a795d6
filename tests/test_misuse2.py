"""Misuse, second round (issue 19): every case runs as a user runs it -- a subprocess, `python -m gpt2jax.TOOL`
and, for some, the console script `gpt2jax-TOOL` -- and must end with the exact last stderr line given
here and its exit status (2 for flags, 1 otherwise), with no traceback anywhere in its output, and leave
nothing new behind (no workdir, no checkpoints/, no results file). Warnings (prepare's small splits) exit 0.

Classes: tracebacks (convert, a diverged run, bench, plan, truncated safetensors, a start-up error that must
close Orbax before the interpreter ends); work that starts before it can finish (output locations checked
first, nothing left by a failed start); silent acceptance (prepare's small splits, malformed LAMBADA lines);
misleading messages; the conventions (--help exits 0, flag errors exit 2, files follow the umask).
docs/fault_tolerance.md tabulates this file. Data and runs are made once per module (one tiny run of 2 steps).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
TOOLS = ("prepare", "train", "sample", "evaluate", "convert", "plan", "bench", "sweep", "analyze")
HAVE_PROC = os.path.isdir("/proc/self")

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


# -- running a tool as a user does ------------------------------------------------------------------
def _env(devices: int = 0, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GPT2JAX_DEBUG", "PYTHONPATH")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}" if devices else "",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **extra)
    return env


def tool(name: str, *args, script: bool = False, devices: int = 0, umask: int | None = None, cwd=ROOT):
    """Run `python -m gpt2jax.NAME ARGS` (NAME with a dot: that module, e.g. experiments.sweep), or with
    `script` the console script gpt2jax-NAME."""
    if script:
        exe = BIN / f"gpt2jax-{name}"
        if not exe.exists():
            pytest.skip(f"{exe} is not installed")
        cmd = [str(exe)]
    else:
        cmd = [sys.executable, "-m", name if "." in name else f"gpt2jax.{name}"]
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, env=_env(devices), capture_output=True, text=True,
                          timeout=900, preexec_fn=pre)


def ends(res, line: str, rc: int = 1) -> None:
    """Exit status `rc`, no traceback (nor Orbax's late one), and `line` the last line of stderr."""
    err = res.stderr
    assert "Traceback" not in err and "Traceback" not in res.stdout, err[-4000:]
    assert "cannot schedule new futures" not in err, err[-4000:]
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines, (res.returncode, res.stdout[-2000:])
    assert lines[-1] == line, f"\n got: {lines[-1]}\nwant: {line}"
    assert res.returncode == rc, (res.returncode, err[-2000:])


def digest(path) -> str:
    h = hashlib.sha256()
    path = pathlib.Path(path)
    for p in sorted(path.rglob("*")):
        h.update(str(p).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- what the cases work on, made once --------------------------------------------------------------
@pytest.fixture(scope="module")
def P(tmp_path_factory):
    """Paths: a prepared corpus, a trained run (2 steps, checkpoint at 2), its Hugging Face export and a
    truncated copy, LAMBADA files good and bad, a regular file, a scratch directory `t`."""
    root = tmp_path_factory.mktemp("misuse2")
    src = root / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "home", "to", "see", "his"]
    for i in range(24):
        (src / f"{i:02d}.txt").write_text(" ".join(rng.choice(words, 900)) + ".\n")
    (root / "tiny.txt").write_text("hello world\n")
    data = root / "data"
    res = tool("prepare", f"--source=text:{src}/*.txt", f"--out_dir={data}", umask=0o022)
    assert res.returncode == 0, res.stderr[-3000:]
    run = root / "run"
    res = tool("train", "--config=tiny", f"--workdir={run}", f"--config.data.dir={data}",
               f"--config.train.compile_cache={root / 'cache'}", "--config.train.num_steps=2",
               "--config.train.eval_every=0", "--config.checkpoint.every=2", umask=0o022)
    assert res.returncode == 0, res.stderr[-3000:]
    hf = root / "hf"
    res = tool("convert", f"--workdir={run}", f"--to_hf={hf}", umask=0o022)
    assert res.returncode == 0, res.stderr[-3000:]
    trunc = root / "hf_trunc"
    shutil.copytree(hf, trunc)
    with open(trunc / "model.safetensors", "r+b") as f:
        f.truncate(100_000)
    good = root / "tasks"
    good.mkdir()
    (good / "lambada_test.jsonl").write_text(json.dumps({"text": "the cat sat on the mat"}) + "\n")
    for name, texts in {"empty": ["the cat sat on the mat", ""], "oneword": ["the cat sat", "cat"],
                        "trailing": ["the cat sat "]}.items():
        (root / name).mkdir()
        (root / name / "lambada_test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (root / "plain").mkdir()
    (root / "plain" / "lambada_test_plain_text.txt").write_text("the cat sat on the mat\n\nmat\n")
    (root / "number").mkdir()
    (root / "number" / "lambada_test.jsonl").write_text('{"text": 5}\n')
    (root / "badjson").mkdir()
    (root / "badjson" / "config.json").write_text("{bad")
    (root / "noval").mkdir()
    for name in ("train.bin", "meta.json"):
        shutil.copy(data / name, root / "noval" / name)
    (root / "afile").write_text("not a directory\n")
    (root / "empty_dir").mkdir()
    (root / "t").mkdir()
    return {"root": root, "src": src, "data": data, "run": run, "hf": hf, "trunc": trunc, "tasks": good,
            "file": root / "afile", "empty": root / "empty_dir", "t": root / "t", "tiny": root / "tiny.txt"}


TRUNC = ("{trunc}/model.safetensors: cannot read it as safetensors (Error while deserializing header: "
         "incomplete metadata, file not fully covered): the file is truncated or not a safetensors file; "
         "download or export it again")
LAMBADA = "a LAMBADA example is a passage whose last word is the target and the words before it the context"
TASKS = ("lambada, lambada_standard, hellaswag, wikitext2, wikitext103, ptb, 1bw, enwik8, text8, cbt_cn, cbt_ne, "
         "piqa, winogrande, arc_easy, arc_challenge")
TRAIN = ("--config=tiny", "--config.data.dir={data}", "--config.train.num_steps=2", "--config.train.eval_every=0")
EVAL = ("--workdir={run}", "--tasks=lambada", "--tasks_dir={tasks}", "--noprogress")

# (id, tool, args, exit status, the last stderr line, paths that must not exist afterwards). `tool` with a
# "script:" prefix runs the console script. Paths in braces come from the fixture P.
CASES = [
    # -- tracebacks: convert, bench, plan, truncated safetensors
    ("convert-no-args", "convert", [], 2, "error: give --workdir and exactly one of --from_hf=DIR or --to_hf=OUT", []),
    ("convert-from-hf-empty-dir", "convert", ["--from_hf={empty}", "--workdir={t}/c1"], 1,
     "error: {empty}: no config.json", ["{t}/c1"]),
    ("convert-from-hf-truncated", "convert", ["--from_hf={trunc}", "--workdir={t}/c2"], 1, "error: " + TRUNC,
     ["{t}/c2"]),
    ("convert-from-hf-truncated-script", "script:convert", ["--from_hf={trunc}", "--workdir={t}/c3"], 1,
     "error: " + TRUNC, ["{t}/c3"]),
    ("evaluate-hf-truncated", "evaluate", ["--hf={trunc}", "--tasks=lambada", "--tasks_dir={tasks}",
                                           "--out={t}/e1.json"], 1, "error: " + TRUNC, ["{t}/e1.json"]),
    ("sample-hf-truncated", "sample", ["--hf={trunc}", "--max_new_tokens=2"], 1, "error: " + TRUNC, []),
    ("bench-misspelt-key", "script:bench", ["--config=tiny", "--config.train.batch_sizze=2"], 2,
     "error: --config.train.batch_sizze: config.train has no field 'batch_sizze' (did you mean "
     "'config.train.batch_size'?)", []),
    ("bench-steps-0", "bench", ["--config=tiny", "--steps=0"], 2, "error: flag --steps=0: 0 is not a positive integer",
     []),
    ("bench-impossible-mesh", "bench", ["--config=tiny", "--config.mesh.data=3"], 1,
     "error: config.mesh: data*fsdp*tensor = 3 but there are 1 devices", []),
    ("plan-devices-negative", "plan", ["--config=tiny", "--devices=-2"], 2,
     "error: flag --devices=-2: -2 is not a non-negative integer", []),
    # -- work that starts before it can finish: outputs checked first, nothing left by a failed start
    ("train-checkpoint-dir-is-a-file", "train", [*TRAIN, "--workdir={t}/w1", "--config.checkpoint.dir={file}"], 1,
     "error: config.checkpoint.dir={file} is a file, not a directory", ["{t}/w1"]),
    ("train-checkpoint-dir-unwritable", "train",
     [*TRAIN, "--workdir={t}/w2", "--config.checkpoint.dir=/proc/gpt2jax_ck"], 1,
     "error: config.checkpoint.dir=/proc/gpt2jax_ck: cannot write in /proc (No such file or directory)", ["{t}/w2"]),
    ("train-missing-data-leaves-no-workdir", "script:train", ["--config=tiny", "--config.data.dir={t}/nodata",
                                                              "--workdir={t}/w3"], 1,
     "error: prepared data not found: missing {t}/nodata/meta.json, {t}/nodata/train.bin. Create it with "
     "`python -m gpt2jax.prepare --source=SOURCE --out_dir={t}/nodata`", ["{t}/w3"]),
    ("evaluate-out-is-a-directory", "evaluate", [*EVAL, "--out={empty}"], 1,
     "error: --out={empty} is a directory, not a file", []),
    ("evaluate-out-under-a-file", "evaluate", [*EVAL, "--out={file}/r.json"], 1,
     "error: --out={file}/r.json: {file} is a file, not a directory", []),
    ("evaluate-out-unwritable", "evaluate", [*EVAL, "--out=/proc/gpt2jax/r.json"], 1,
     "error: --out=/proc/gpt2jax/r.json: cannot write in /proc (No such file or directory)", []),
    ("convert-to-hf-not-empty", "convert", ["--workdir={run}", "--to_hf={hf}"], 1,
     "error: --to_hf={hf} exists and is not empty; remove it or choose another directory", []),
    ("convert-to-hf-is-a-file", "convert", ["--workdir={run}", "--to_hf={file}"], 1,
     "error: --to_hf={file} is a file, not a directory", []),
    ("convert-to-hf-unwritable", "convert", ["--workdir={run}", "--to_hf=/proc/gpt2jax_hf"], 1,
     "error: --to_hf=/proc/gpt2jax_hf: cannot write in /proc (No such file or directory)", []),
    ("convert-from-hf-workdir-is-a-file", "convert", ["--from_hf={hf}", "--workdir={file}"], 1,
     "error: --workdir={file} is a file, not a directory", []),
    # -- silent acceptance: malformed LAMBADA lines name file and line
    ("lambada-empty-line", "evaluate", ["--workdir={run}", "--tasks=lambada", "--tasks_dir={root}/empty",
                                        "--out={t}/e2.json"], 1,
     "error: {root}/empty/lambada_test.jsonl:2: the passage is empty: ''; " + LAMBADA, ["{t}/e2.json"]),
    ("lambada-one-word", "evaluate", ["--workdir={run}", "--tasks=lambada", "--tasks_dir={root}/oneword",
                                      "--out={t}/e3.json"], 1,
     "error: {root}/oneword/lambada_test.jsonl:2: the passage is a single word (no context): 'cat'; " + LAMBADA,
     ["{t}/e3.json"]),
    ("lambada-trailing-space", "evaluate", ["--workdir={run}", "--tasks=lambada", "--tasks_dir={root}/trailing",
                                            "--out={t}/e4.json"], 1,
     "error: {root}/trailing/lambada_test.jsonl:1: the passage has no last word (it ends in a space): "
     "'the cat sat '; " + LAMBADA, ["{t}/e4.json"]),
    ("lambada-standard-one-word", "evaluate", ["--workdir={run}", "--tasks=lambada_standard",
                                               "--tasks_dir={root}/plain", "--out={t}/e5.json"], 1,
     "error: {root}/plain/lambada_test_plain_text.txt:3: the passage is a single word (no context): 'mat'; "
     + LAMBADA, ["{t}/e5.json"]),
    # -- messages that mislead
    ("train-workdir-is-a-file", "train", [*TRAIN, "--workdir={file}"], 1,
     "error: --workdir={file} is a file, not a directory", []),
    ("train-workdir-under-a-file", "train", [*TRAIN, "--workdir={file}/run"], 1,
     "error: --workdir={file}/run: {file} is a file, not a directory", []),
    ("prepare-out-dir-is-a-file", "prepare", ["--source=text:{tiny}", "--out_dir={file}"], 1,
     "error: --out_dir={file} is a file, not a directory", []),
    # -- the fresh round (see docs/fault_tolerance.md): each a traceback, a silent acceptance or a
    #    misleading message before
    ("prepare-num-workers-negative", "prepare", ["--source=text:{tiny}", "--out_dir={t}/d1", "--num_workers=-3"], 2,
     "error: flag --num_workers=-3: -3 is not a positive integer", ["{t}/d1"]),
    ("prepare-out-dir-empty", "prepare", ["--source=text:{tiny}", "--out_dir="], 2,
     "error: --out_dir is empty: give the directory for train.bin, val.bin and meta.json", []),
    ("prepare-positional", "prepare", ["--out_dir={t}/d2", "extra"], 2, "error: unexpected arguments: ['extra']",
     ["{t}/d2"]),
    ("train-workdir-empty", "train", [*TRAIN, "--workdir="], 2, "error: --workdir is empty: give the run's directory",
     []),
    ("train-data-dir-is-a-file", "train", ["--config=tiny", "--config.data.dir={file}", "--workdir={t}/w4"], 1,
     "error: {file} is a file, not a directory of prepared data (train.bin, val.bin, meta.json, as "
     "gpt2jax.prepare writes); give its directory", ["{t}/w4"]),
    ("train-config-is-a-directory", "train", ["--config={root}", "--workdir={t}/w5"], 2,
     "error: --config={root} is a directory, not a config file", ["{t}/w5"]),
    ("train-init-from-missing", "train", [*TRAIN, "--workdir={t}/w6", "--config.train.init_from={t}/none"], 1,
     "error: {t}/none does not exist", ["{t}/w6"]),
    ("train-val-missing", "train", [*TRAIN, "--workdir={t}/w7", "--config.data.dir={root}/noval"], 1,
     "error: prepared data not found: missing {root}/noval/val.bin. Create it with `python -m gpt2jax.prepare "
     "--source=SOURCE --out_dir={root}/noval`", ["{t}/w7"]),
    ("lambada-text-not-a-string", "evaluate", ["--workdir={run}", "--tasks=lambada", "--tasks_dir={root}/number",
                                               "--out={t}/e12.json"], 1,
     "error: {root}/number/lambada_test.jsonl:1: the field 'text' is int, not a string", ["{t}/e12.json"]),
    ("convert-config-json-not-json", "convert", ["--from_hf={root}/badjson", "--workdir={t}/c5"], 1,
     "error: {root}/badjson/config.json: not valid JSON (Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1))", ["{t}/c5"]),
    ("evaluate-limit-negative", "evaluate", [*EVAL, "--limit=-1", "--out={t}/e6.json"], 2,
     "error: flag --limit=-1: -1 is not a non-negative integer", ["{t}/e6.json"]),
    ("evaluate-batch-size-0", "evaluate", [*EVAL, "--batch_size=0", "--out={t}/e7.json"], 2,
     "error: flag --batch_size=0: 0 is not a positive integer", ["{t}/e7.json"]),
    ("evaluate-dtype-unknown", "evaluate", [*EVAL, "--dtype=float33", "--out={t}/e8.json"], 2,
     "error: flag --dtype=float33: value should be one of <|float32|bfloat16|float16>", ["{t}/e8.json"]),
    ("evaluate-no-tasks", "evaluate", ["--workdir={run}", "--tasks=", "--out={t}/e9.json"], 2,
     f"error: --tasks='' names no task: give task names ({TASKS}) or 'all', or --lm_eval_tasks", ["{t}/e9.json"]),
    ("evaluate-tasks-dir-is-a-file", "evaluate", ["--workdir={run}", "--tasks=lambada", "--tasks_dir={file}",
                                                  "--out={t}/e10.json"], 1,
     "error: --tasks_dir={file} is a file, not a directory (the directory that holds the task files, "
     "docs/evaluation.md)", ["{t}/e10.json"]),
    ("evaluate-hf-is-a-file", "evaluate", ["--hf={file}", "--tasks=lambada", "--tasks_dir={tasks}",
                                           "--out={t}/e11.json"], 1,
     "error: {file} is a file, not a Hugging Face GPT-2 directory (config.json and model.safetensors)",
     ["{t}/e11.json"]),
    ("convert-from-hf-missing", "convert", ["--from_hf={t}/nohf", "--workdir={t}/c4"], 1,
     "error: {t}/nohf does not exist (a Hugging Face GPT-2 directory: config.json and model.safetensors)",
     ["{t}/c4"]),
    ("bench-eval-batch-negative", "bench", ["--config=tiny", "--eval_batch=-2"], 2,
     "error: flag --eval_batch=-2: -2 is not a non-negative integer", []),
    ("bench-positional", "bench", ["--config=tiny", "extra"], 2, "error: unexpected arguments: ['extra']", []),
    ("plan-positional", "plan", ["--config=tiny", "extra"], 2, "error: unexpected arguments: ['extra']", []),
]
if not HAVE_PROC:
    CASES = [c for c in CASES if "/proc/" not in " ".join(c[2])]


def _fill(text: str, P) -> str:
    return text.format(**{k: str(v) for k, v in P.items()})


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_mistake_ends_in_its_line(P, case):
    _, name, args, rc, line, absent = case
    script = name.startswith("script:")
    before = digest(P["run"])
    res = tool(name.removeprefix("script:"), *[_fill(a, P) for a in args], script=script)
    ends(res, _fill(line, P), rc)
    for path in absent:
        assert not os.path.lexists(_fill(path, P)), path
    assert digest(P["run"]) == before  # the run a case reads is never touched


def test_nothing_is_scored_before_out_is_refused(P):
    res = tool("evaluate", *[_fill(a, P) for a in EVAL], f"--out={P['empty']}")
    assert "lambada:" not in res.stdout and "wrote" not in res.stdout


# -- a diverged run; a clean start-up error closes Orbax first --------------------------------------
def test_a_diverged_run_ends_in_one_line_naming_what_to_try(P):
    wd = P["t"] / "nan"
    res = tool("train", *[_fill(a, P) for a in TRAIN], f"--workdir={wd}", "--config.optim.lr=1e9",
               "--config.optim.warmup_steps=0", "--config.train.num_steps=6", "--config.train.log_every=1",
               f"--config.train.compile_cache={P['root'] / 'cache'}")
    last = res.stderr.strip().splitlines()[-1]
    m = re.fullmatch(r"error: non-finite loss at step (\d) \(loss nan, grad_norm nan\): stopped without saving; "
                     r"there is no checkpoint yet, so the same command starts over\. Lower optim\.lr \(or lengthen "
                     r"optim\.warmup_steps\), or set train\.nonfinite='skip' to skip such updates", last)
    assert m, last
    ends(res, last, 1)


def test_a_startup_error_closes_orbax_before_the_interpreter_ends(P):
    """A resume refused after Orbax's manager has started its clean-up of an unfinished save (a leftover
    tmp directory), and a start that fails on the mesh: one line each, nothing after it, nothing new left."""
    wd = P["t"] / "resume"
    shutil.copytree(P["run"], wd)
    for i in range(3):
        (wd / "checkpoints" / f"{7 + i}.orbax-checkpoint-tmp-{i}").mkdir()
        res = tool("train", *[_fill(a, P) for a in TRAIN], f"--workdir={wd}", "--config.model.n_layer=3")
        ends(res, "error: cannot resume with a changed experiment (use a new --workdir, or train.init_from to start "
                  "from these weights): model.n_layer: 2 -> 3")
    res = tool("train", *[_fill(a, P) for a in TRAIN], f"--workdir={wd}", devices=3)
    ends(res, "error: config.train.batch_size: 8 / optim.accum_steps 1 = 8 sequences per micro-batch is not "
              "divisible by the 3 data-parallel devices of the mesh")
    assert sorted(p.name for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    fresh = P["t"] / "fresh_div"
    res = tool("train", *[_fill(a, P) for a in TRAIN], f"--workdir={fresh}", devices=3, script=True)
    ends(res, "error: config.train.batch_size: 8 / optim.accum_steps 1 = 8 sequences per micro-batch is not "
              "divisible by the 3 data-parallel devices of the mesh")
    assert not fresh.exists()


def test_checkpoints_that_is_a_file_is_refused_before_the_first_step(P):
    wd = P["t"] / "ckfile"
    wd.mkdir()
    (wd / "checkpoints").write_text("")
    res = tool("train", *[_fill(a, P) for a in TRAIN], f"--workdir={wd}")
    ends(res, f"error: {wd}/checkpoints (the run's checkpoints directory) is a file, not a directory")
    assert sorted(os.listdir(wd)) == ["checkpoints"]  # no run.json, metrics or tb: nothing began


def test_convert_from_hf_that_fails_leaves_no_workdir(P):
    wd = P["t"] / "imported"
    res = tool("convert", f"--from_hf={P['trunc']}", f"--workdir={wd}")
    ends(res, "error: " + _fill(TRUNC, P))
    assert not wd.exists()


# -- silent acceptance: prepare names small splits ---------------------------------------------------
def test_prepare_warns_of_splits_too_small_to_train_on(P):
    out = P["t"] / "tiny_data"
    res = tool("prepare", f"--source=text:{P['tiny']}", f"--out_dir={out}")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    tail = "too few for one sequence of any shipped config (the smallest, tiny, needs 33; GPT-2's context 1,025): " \
           "train will refuse it. Use "
    assert res.stderr.strip().splitlines() == [
        f"WARNING: {out}: the train split holds 3 of the 4 tokens, {tail}more data",
        f"WARNING: {out}: the val split holds 1 of the 4 tokens, {tail}a larger --val_fraction or more data",
    ]
    out = P["t"] / "small_val"
    res = tool("prepare", f"--source=text:{P['src']}/0*.txt", f"--out_dir={out}", "--val_fraction=0.001")
    assert res.returncode == 0
    assert res.stderr.strip().splitlines() == [
        f"WARNING: {out}: the val split holds 9 of the 9,030 tokens, {tail}a larger --val_fraction or more data"]
    out = P["t"] / "no_val"
    res = tool("prepare", f"--source=text:{P['src']}/0*.txt", f"--out_dir={out}", "--val_fraction=0")
    assert res.returncode == 0
    assert res.stderr.strip().splitlines() == [
        f"WARNING: {out}: the val split is empty (val_fraction 0): train refuses data without a val split; give "
        "--val_fraction > 0 to train on this corpus"]


def test_prepare_names_the_closest_tfds_datasets(P):
    pytest.importorskip("tensorflow_datasets")
    res = tool("prepare", "--source=tfds:mnistt", f"--out_dir={P['t'] / 'tfds'}")
    ends(res, "error: tfds has no dataset 'mnistt' (closest: mnist, kmnist, emnist; 245 known)")
    assert not (P["t"] / "tfds").exists()


# -- conventions: --help, flag errors, the umask ----------------------------------------------------
@pytest.mark.parametrize("module", [f"gpt2jax.{t}" for t in TOOLS] + ["experiments.sweep", "experiments.analyze"])
def test_help_exits_0(module):
    res = tool(module, "--help")
    assert res.returncode == 0 and res.stdout.strip() and "Traceback" not in res.stderr, res.stderr[-2000:]


@pytest.mark.parametrize("name", ["train", "evaluate", "bench"])
def test_help_exits_0_as_a_console_script(name):
    res = tool(name, "--help", script=True)
    assert res.returncode == 0 and res.stdout.strip(), res.stderr[-2000:]


@pytest.mark.parametrize("module", [f"gpt2jax.{t}" for t in TOOLS] + ["experiments.sweep", "experiments.analyze"])
def test_a_flag_parse_error_exits_2_with_one_line(module):
    res = tool(module, "--no_such_flag=1")
    ends(res, "error: Unknown command line flag 'no_such_flag'", 2)
    assert len([x for x in res.stderr.splitlines() if x.strip()]) == 1


def test_files_follow_the_umask(P):
    data, run, hf = P["data"], P["run"], P["hf"]  # made under umask 022
    assert mode(data / "meta.json") == 0o644 and mode(data / "train.bin") == 0o644
    assert mode(run / "run.json") == 0o644
    assert mode(hf) == 0o755 and {mode(p) for p in hf.iterdir()} == {0o644}
    res = tool("evaluate", *[_fill(a, P) for a in EVAL], f"--out={P['t'] / 'r.json'}", umask=0o022)
    assert res.returncode == 0, res.stderr[-3000:]
    assert mode(P["t"] / "r.json") == 0o644
    # A stricter umask is followed too.
    out = P["t"] / "hf027"
    res = tool("convert", f"--workdir={run}", f"--to_hf={out}", umask=0o027)
    assert res.returncode == 0, res.stderr[-3000:]
    assert mode(out) == 0o750 and {mode(p) for p in out.iterdir()} == {0o640}
    d = P["t"] / "data027"
    res = tool("prepare", f"--source=text:{P['src']}/*.txt", f"--out_dir={d}", umask=0o027)
    assert res.returncode == 0, res.stderr[-3000:]
    assert mode(d) == 0o750 and mode(d / "meta.json") == 0o640
