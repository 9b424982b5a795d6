"""lm-evaluation-harness adapter (gpt2jax/eval/lm_eval_adapter.py) against lm-eval's own `hf` backend.

One tiny random GPT-2 (weights scaled up so that its distributions are peaked: greedy choices are
decided by wide margins, not by float rounding), exported with gpt2jax.convert.to_hf. Local task
YAMLs (written here, over data files written here; nothing is downloaded) of the four request
kinds: a loglikelihood task (lambada_openai's template), a multiple-choice task (arc_easy's), a
rolling-perplexity task (wikitext's, with lm-eval's own detokenizer and metrics) and a generation
task with stop strings. The same data files in our built-in tasks' formats give our own numbers.
"""

from __future__ import annotations

import json
import os

for _k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_k] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed (pip install -e '.[lm_eval]')")
pytest.importorskip("torch")

from gpt2jax import config as config_lib  # noqa: E402
from gpt2jax.eval import lm_eval_adapter as A  # noqa: E402
from gpt2jax.eval import tasks as T  # noqa: E402

L = 32  # context of the tiny model
GEN_TOKS = 8
RTOL = 1e-4

SENTENCES = [
    "The old man walked slowly down the road toward the harbour where the boats were waiting",
    "She opened the letter and read it twice before she understood what her brother had done",
    "In the morning the children ran to the river to see whether the ice had finally melted",
    "He said nothing at all, but the look on his face told the whole story of that long night",
    "When the rain stopped the whole village came out to look at the damage done to the bridge",
    "A small dog followed them all the way home and sat by the door until someone let it in",
]

ARC = [
    ("What do plants need to make their own food?", ["sunlight", "sand", "noise", "plastic"], "A"),
    ("Which of these is a source of heat?", ["a shadow", "a fire", "a cloud"], "B"),
    ("What happens to water when it freezes?", ["it boils", "it becomes gas", "it turns into ice", "it vanishes"], "C"),
    ("Which animal lays eggs?", ["a dog", "a cat", "a chicken", "a horse"], "3"),
]

WIKI = (
    " = Valley of the Kings = \n \n The valley was used for burials from about 1539 BC to 1075 BC , and holds "
    "more than 60 tombs . \n \n = = History = = \n \n The first tombs were cut into the rock @-@ face , and the "
    "workers lived in a village nearby ( now called Deir el @-@ Medina ) . \n"
    " = Harbour Bridge = \n \n The bridge opened in 1932 ; it carries rail , vehicle and foot traffic between the "
    "city and the north shore . Its arch spans 503 @.@ 0 metres . \n \n"
)

GEN_PROMPTS = [
    "Once upon a time there was a",
    "In the beginning there was only a",  # as many tokens as the first: generated in one batch
    "Question: what is the capital of France?\nAnswer:",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
    "of foolishness, it was the epoch of belief",  # longer than L - GEN_TOKS: left-truncated
]
GEN_UNTIL = ["\n", ".", ","]


def _yaml(path, text: str) -> None:
    path.write_text(text.strip() + "\n")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(config, params, hf_dir) of the tiny model."""
    from gpt2jax.convert import to_hf
    from gpt2jax.model import init_params

    config = config_lib.get_config()
    m = config.model
    m.n_layer, m.n_head, m.n_embd, m.block_size = 2, 2, 64, L
    params = jax.tree.map(lambda x: x * 6.0, init_params(m, jax.random.PRNGKey(0)))
    hf_dir = to_hf(config, params, tmp_path_factory.mktemp("lm_eval") / "hf")
    return config, params, hf_dir


@pytest.fixture(scope="module")
def ours(model):
    config, params, _ = model
    return A.GPT2JaxLM(config.model, params, batch_size=4, progress=False)


@pytest.fixture(scope="module")
def hf(model):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(model[2]), dtype="float32", batch_size=4, device="cpu")


def _gen_requests(prompts, kwargs):
    from lm_eval.api.instance import Instance

    return [Instance("generate_until", {}, (p, dict(kwargs)), i) for i, p in enumerate(prompts)]


@pytest.fixture(scope="module")
def task_files(tmp_path_factory, hf):
    """(built-in tasks_dir, lm-eval include dir) over the same data."""
    root = tmp_path_factory.mktemp("lm_eval_tasks")
    data, inc = root / "data", root / "yaml"
    cache = root / "hf_datasets_cache"
    (data / "ARC-V1-Feb2018-2" / "ARC-Easy").mkdir(parents=True)
    (data / "wikitext-2-raw").mkdir(parents=True)
    inc.mkdir()
    # built-in formats
    (data / "lambada_test.jsonl").write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    arc = [
        {"id": f"q{i}", "question": {"stem": q, "choices": [{"text": c, "label": lab} for c, lab in
                                                            zip(cs, "ABCD" if key.isalpha() else "1234")]},
         "answerKey": key}
        for i, (q, cs, key) in enumerate(ARC)
    ]
    arc_file = data / "ARC-V1-Feb2018-2" / "ARC-Easy" / "ARC-Easy-Test.jsonl"
    arc_file.write_text("".join(json.dumps(d) + "\n" for d in arc))
    (data / "wikitext-2-raw" / "wiki.test.raw").write_text(WIKI)
    # lm-eval's view of the same data (wikitext: the document-level dataset's pages)
    pages = data / "wikitext_pages.jsonl"
    pages.write_text("".join(json.dumps({"page": p}) + "\n" for p in T.split_wikitext_pages(WIKI)))
    # generation docs: half of the targets are what lm-eval's hf backend generates, so exact_match
    # is 0.5 for it and 0.5 for the adapter only if the adapter generates the same strings there
    hf_out = hf.generate_until(_gen_requests(GEN_PROMPTS, {"until": GEN_UNTIL, "max_gen_toks": GEN_TOKS}))
    gen = [{"prompt": p, "answer": o if i % 2 == 0 else "no such answer"}
           for i, (p, o) in enumerate(zip(GEN_PROMPTS, hf_out))]
    gen_file = data / "gen.jsonl"
    gen_file.write_text("".join(json.dumps(d) + "\n" for d in gen))

    def kwargs(path):
        return f"dataset_kwargs:\n  data_files:\n    test: {path}\n  cache_dir: {cache}\n"

    _yaml(inc / "t_lambada.yaml", f"""
task: t_lambada
dataset_path: json
{kwargs(data / 'lambada_test.jsonl')}
output_type: loglikelihood
test_split: test
doc_to_text: "{{{{text.split(' ')[:-1]|join(' ')}}}}"
doc_to_target: "{{{{' '+text.split(' ')[-1]}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    _yaml(inc / "t_arc.yaml", f"""
task: t_arc
dataset_path: json
{kwargs(arc_file)}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question.stem}}}}\\nAnswer:"
doc_to_target: "{{{{(question.choices|map(attribute='label')|list).index(answerKey)}}}}"
doc_to_choice: "{{{{question.choices|map(attribute='text')|list}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""")
    (inc / "t_wiki_utils.py").write_text(
        "from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer  # noqa\n"
    )
    _yaml(inc / "t_wikitext.yaml", f"""
task: t_wikitext
dataset_path: json
{kwargs(pages)}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: !function t_wiki_utils.wikitext_detokenizer
process_results: !function t_wiki_utils.process_results
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""")
    _yaml(inc / "t_gen.yaml", f"""
task: t_gen
dataset_path: json
{kwargs(gen_file)}
output_type: generate_until
test_split: test
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: {json.dumps(GEN_UNTIL)}
  max_gen_toks: {GEN_TOKS}
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""")
    return data, inc


TASKS = ["t_lambada", "t_arc", "t_wikitext", "t_gen"]


def _run(lm, inc):
    return A.evaluate(lm, TASKS, include_path=str(inc), bootstrap_iters=0)


@pytest.fixture(scope="module")
def results(ours, hf, task_files):
    _, inc = task_files
    return _run(ours, inc), _run(hf, inc)


def _numbers(res: dict) -> dict:
    return {
        (t, k): v for t, ms in res["results"].items() for k, v in ms.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and "stderr" not in k
    }


def test_metrics_equal_lm_eval_hf_backend(results):
    ours, theirs = results
    a, b = _numbers(ours), _numbers(theirs)
    assert set(a) == set(b)
    for t, m in [("t_lambada", "acc,none"), ("t_lambada", "perplexity,none"), ("t_arc", "acc,none"),
                 ("t_arc", "acc_norm,none"), ("t_wikitext", "word_perplexity,none"),
                 ("t_wikitext", "byte_perplexity,none"), ("t_wikitext", "bits_per_byte,none"),
                 ("t_gen", "exact_match,none")]:
        assert (t, m) in a, (t, m, sorted(a))
        np.testing.assert_allclose(a[(t, m)], b[(t, m)], rtol=RTOL, err_msg=f"{t} {m}")
    assert a[("t_gen", "exact_match,none")] == pytest.approx(0.5)  # the hf backend's own outputs
    assert ours["n-samples"]["t_arc"]["effective"] == len(ARC)


def test_request_level_equal_lm_eval_hf_backend(ours, hf):
    """Per-request numbers (not only the task averages): loglikelihood (with left truncation),
    greedy flags, rolling log-likelihoods (several windows), generations with stop strings."""
    from lm_eval.api.instance import Instance

    ll_reqs = [Instance("loglikelihood", {}, (s[:40], s[40:]), i) for i, s in enumerate(SENTENCES)]
    ll_reqs.append(Instance("loglikelihood", {}, ("", " the"), 99))  # empty context: prefix token
    a, b = ours.loglikelihood(ll_reqs), hf.loglikelihood(ll_reqs)
    np.testing.assert_allclose([x for x, _ in a], [x for x, _ in b], rtol=RTOL)
    assert [g for _, g in a] == [g for _, g in b]
    long = " ".join(SENTENCES)
    assert len(ours.tok_encode(long)) > 3 * L
    r_reqs = [Instance("loglikelihood_rolling", {}, (s,), i) for i, s in enumerate([long, SENTENCES[0]])]
    np.testing.assert_allclose(ours.loglikelihood_rolling(r_reqs), hf.loglikelihood_rolling(r_reqs), rtol=RTOL)

    free = ours.generate_until(_gen_requests(GEN_PROMPTS, {"until": [], "max_gen_toks": GEN_TOKS}))
    assert free == hf.generate_until(_gen_requests(GEN_PROMPTS, {"until": [], "max_gen_toks": GEN_TOKS}))
    assert all(len(ours.tok_encode(t)) == GEN_TOKS for t in free)  # max length honoured (no EOT here)
    # contexts of 7, 7, 12 tokens and one left-truncated to L - GEN_TOKS: the two 7s share one batch
    assert ours.generate_shapes == {(7, GEN_TOKS), (12, GEN_TOKS), (L - GEN_TOKS, GEN_TOKS)}
    stop = free[0][len(free[0]) // 2 : len(free[0]) // 2 + 2]  # a string the first generation contains
    assert stop and stop in free[0]
    cut = ours.generate_until(_gen_requests(GEN_PROMPTS, {"until": [stop], "max_gen_toks": GEN_TOKS}))
    assert cut == hf.generate_until(_gen_requests(GEN_PROMPTS, {"until": [stop], "max_gen_toks": GEN_TOKS}))
    assert cut[0] == free[0][: free[0].index(stop)]
    assert all(stop not in t for t in cut)

    sampled_kw = {"until": [], "max_gen_toks": GEN_TOKS, "do_sample": True, "temperature": 5.0}
    sampled = [ours.generate_until(_gen_requests(GEN_PROMPTS[:1], sampled_kw))[0] for _ in range(2)]
    assert sampled[0] == sampled[1]  # the adapter's seed makes sampling reproducible
    assert sampled[0] != free[0]  # not the greedy continuation


def test_builtin_tasks_agree_with_adapter(model, task_files, results):
    config, params, _ = model
    data, _ = task_files
    ours = T.evaluate_tasks(config.model, params, ["lambada", "arc_easy", "wikitext2"], data, batch_size=4)
    r = results[0]["results"]
    pairs = [
        ("lambada", "acc", "t_lambada", "acc,none"), ("lambada", "perplexity", "t_lambada", "perplexity,none"),
        ("arc_easy", "acc", "t_arc", "acc,none"), ("arc_easy", "acc_norm", "t_arc", "acc_norm,none"),
        ("wikitext2", "word_perplexity", "t_wikitext", "word_perplexity,none"),
        ("wikitext2", "byte_perplexity", "t_wikitext", "byte_perplexity,none"),
        ("wikitext2", "bits_per_byte", "t_wikitext", "bits_per_byte,none"),
    ]
    for task, metric, lm_task, key in pairs:
        np.testing.assert_allclose(ours[task][metric], r[lm_task][key], rtol=RTOL, err_msg=f"{task} {metric}")
    assert ours["lambada"]["n"] == len(SENTENCES) and ours["wikitext2"]["n"] == 2


def test_cli_on_checkpoint_with_run_mesh(model, task_files, results, tmp_path):
    """evaluate --workdir --lm_eval_tasks (+ a built-in task) --mesh=run: lm-eval's results verbatim
    under "results" beside the built-in task, equal to the single-device numbers; the checkpoint's
    mesh (data 2 x fsdp 2 x tensor 2 here) shards the parameters."""
    from absl import flags

    from gpt2jax import evaluate
    from gpt2jax.checkpoint import save_params

    config, params, _ = model
    data, inc = task_files
    config = config_lib.from_dict(config_lib.to_dict(config))
    config.mesh.fsdp, config.mesh.tensor = 2, 2
    save_params(tmp_path / "run", config, params)
    fv = flags.FlagValues()
    evaluate.define_flags(fv)
    out = tmp_path / "results.json"
    fv([
        "evaluate", f"--workdir={tmp_path / 'run'}", "--lm_eval_tasks=t_lambada,t_arc,t_gen", f"--lm_eval_include={inc}",
        "--tasks=lambada", f"--tasks_dir={data}", f"--out={out}", "--batch_size=4", "--mesh=run",
        "--lm_eval_bootstrap_iters=0", "--noprogress",
    ])
    evaluate.main(["evaluate"], fv)
    got = json.loads(out.read_text())
    assert set(got) == {"lambada", "results", "lm_eval"}
    ref = results[0]["results"]
    for t in ("t_lambada", "t_arc", "t_gen"):
        assert set(got["results"][t]) == set(ref[t])
        for k, v in ref[t].items():
            if isinstance(v, float):
                np.testing.assert_allclose(got["results"][t][k], v, rtol=RTOL, err_msg=f"{t} {k}")
    np.testing.assert_allclose(got["lambada"]["perplexity"], ref["t_lambada"]["perplexity,none"], rtol=RTOL)


def test_cli_lm_eval_tasks_replace_default_tasks_and_errors(monkeypatch, tmp_path):
    from absl import flags

    from gpt2jax import evaluate

    (tmp_path / "t_bad.yaml").write_text(
        f"task: t_bad\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'nope.jsonl'}\n"
        "output_type: loglikelihood\ntest_split: test\ndoc_to_text: a\ndoc_to_target: b\n"
    )
    bad = flags.FlagValues()
    evaluate.define_flags(bad)
    bad(["evaluate", "--hf=x", "--lm_eval_tasks=t_bad", f"--lm_eval_include={tmp_path}"])
    from absl import app

    with pytest.raises(app.UsageError, match="lm-eval task 't_bad': cannot load it or its data"):
        A.cli_tasks(bad)  # before any model is loaded

    fv = flags.FlagValues()
    evaluate.define_flags(fv)
    fv(["evaluate", "--hf=x", "--lm_eval_tasks=hellaswag"])
    assert A.builtin_task_names(fv) == []
    fv2 = flags.FlagValues()
    evaluate.define_flags(fv2)
    fv2(["evaluate", "--hf=x"])
    assert A.builtin_task_names(fv2) == ["lambada", "hellaswag"]
    monkeypatch.setattr(A, "HAVE_LM_EVAL", False)
    with pytest.raises(app.UsageError, match=r"pip install -e '\.\[lm_eval\]'"):
        A.cli_tasks(fv)


def test_placement_run_layout_shards_like_training(model):
    from gpt2jax.eval import placement

    config, params, _ = model
    config = config_lib.from_dict(config_lib.to_dict(config))
    config.mesh.fsdp, config.mesh.tensor = 2, 2  # data = 8 / 4 = 2 devices
    placed, batch, bs = placement.place(config, params, 3, "run")
    assert bs == 4  # rounded up to the data x fsdp = 4 row blocks of a batch
    assert batch.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)
    assert not placed["wte"].sharding.is_fully_replicated
    assert placed["wte"].addressable_shards[0].data.size < placed["wte"].size
    p2, _, bs2 = placement.place(config, params, 3, "data")
    assert bs2 == 8 and p2["wte"].sharding.is_fully_replicated
