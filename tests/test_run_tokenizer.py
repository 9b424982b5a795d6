"""Every tool that encodes or decodes uses the run's own tokenizer (issue 18): sample, evaluate's zero-shot
tasks (and the training hook that runs them), the lm-eval adapter; convert --to_hf refuses a run whose
tokenizer GPT2LMHeadModel's files cannot hold. One tiny bytes run (vocabulary 257, end-of-text 256) is
trained once for the module."""

import json
import math

import jax
import numpy as np
import pytest

from gpt2jax import cli, convert, evaluate, sample
from gpt2jax import tokenizer as tok_lib
from gpt2jax.checkpoint import load_params
from gpt2jax.data.prepare import prepare
from gpt2jax.eval import scoring
from gpt2jax.eval import tasks as T
from gpt2jax.errors import ConversionError, TokenizerFileError
from gpt2jax.train import train

from conftest import tiny_config

LAMBADA = ["The cat sat on the mat and looked at the dog", "Ünïcödé — naïve café, the end of the story"]
WIKI = " \n = Alpha Article = \n \n" + " The alpha test was held in 1 @,@ 000 places . It 's text . \n" * 3


def _call(capsys, tool, *argv):
    rc = cli.call(tool.main, tool.define_flags, [tool.__name__, *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    (d / "lambada_test.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in LAMBADA))
    (d / "wikitext-2-raw").mkdir()
    (d / "wikitext-2-raw" / "wiki.test.raw").write_text(WIKI)
    return d


@pytest.fixture(scope="module")
def bytes_run(tmp_path_factory, tasks_dir):
    """A 3-step bytes run that also scores lambada from its training hook at the end."""
    corpus = tmp_path_factory.mktemp("corpus")
    (corpus / "a.txt").write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n"
                                          for i in range(300)))
    data = tmp_path_factory.mktemp("bytes_data")
    prepare(f"text:{corpus}/a.txt", str(data), split="tail", progress=False, tokenizer="bytes")
    wd = tmp_path_factory.mktemp("run") / "wd"
    c = tiny_config(data, tmp_path_factory.mktemp("xla"), model__vocab_size=0, num_steps=3, batch_size=8,
                    log_every=3, eval_every=0, eval_batches=1, checkpoint__every=0)
    c.eval.tasks, c.eval.tasks_dir, c.eval.every, c.eval.batch_size = "lambada", str(tasks_dir), 0, 8
    train(c, str(wd), progress=False)
    config, params = load_params(wd)
    return wd, config, params


def test_the_run_records_the_bytes_tokenizer(bytes_run):
    wd, config, _ = bytes_run
    assert config.model.vocab_size == 257
    assert json.loads((wd / "run.json").read_text())["tokenizer"]["name"] == "bytes"
    for path in (wd, wd / "checkpoints"):  # a workdir or its checkpoints directory
        tok = tok_lib.for_checkpoint(str(path))
        assert isinstance(tok, tok_lib.ByteTokenizer) and tok.eot_token == 256


def test_sample_encodes_and_decodes_bytes(capsys, bytes_run):
    wd, config, params = bytes_run
    prompt = "Héllo, wörld"
    rc, out, err = _call(capsys, sample, f"--workdir={wd}", f"--prompt={prompt}", "--max_new_tokens=12",
                         "--temperature=0")
    assert rc == 0, err[-3000:]
    ids = list(prompt.encode("utf-8"))  # the prompt as UTF-8 bytes, not GPT-2's BPE
    want = sample.generate(config.model, params, np.asarray([ids]), 12, temperature=0.0)
    row = np.asarray(want)[0]
    assert (row < 257).all()
    text = tok_lib.ByteTokenizer().decode(row.tolist())
    assert out.rstrip("\n") == text and out.startswith(prompt)


def test_tasks_are_encoded_as_bytes(bytes_run, tasks_dir, capsys, tmp_path, monkeypatch):
    wd, config, params = bytes_run
    tok = tok_lib.ByteTokenizer()
    docs, reqs = T.prepare("lambada", tasks_dir, tokenizer=tok)
    for doc, (ctx, cont) in zip(docs, reqs):
        assert bytes(ctx + cont) == (doc.context + doc.target).encode("utf-8")  # every id a byte (< 256)
    # The GPT-2 encoding of the same task is still GPT-2's (the cache is keyed by the tokenizer).
    _, gpt2_reqs = T.prepare("lambada", tasks_dir)
    assert gpt2_reqs != reqs and max(max(c) for r in gpt2_reqs for c in r) >= 257

    # Rolling windows (text tasks) start from the run's end-of-text id, 256, not GPT-2's 50256.
    prefixes = []
    real = scoring.rolling_windows

    def spy(tokens, block_size, prefix_token=scoring.EOT):
        prefixes.append(prefix_token)
        return real(tokens, block_size, prefix_token)

    monkeypatch.setattr(scoring, "rolling_windows", spy)
    want = T.evaluate_tasks(config.model, params, "lambada,wikitext2", tasks_dir, batch_size=4, tokenizer=tok)
    assert prefixes and set(prefixes) == {256}
    assert all(math.isfinite(v) for r in want.values() for k, v in r.items() if v is not None and k != "n")
    # Encoding with GPT-2's ids into a 257-row model is refused, naming the tokenizer.
    with pytest.raises(TokenizerFileError, match="gpt2"):
        T.evaluate_tasks(config.model, params, "lambada", tasks_dir, batch_size=4)

    # The evaluate CLI on the run finds its tokenizer by itself.
    out = tmp_path / "r.json"
    rc, _, err = _call(capsys, evaluate, f"--workdir={wd}", "--tasks=lambada,wikitext2", f"--tasks_dir={tasks_dir}",
                       f"--out={out}", "--batch_size=4", "--noprogress")
    assert rc == 0, err[-3000:]
    got = json.loads(out.read_text())
    assert got["lambada"]["perplexity"] == pytest.approx(want["lambada"]["perplexity"], rel=1e-4)
    assert got["wikitext2"]["word_perplexity"] == pytest.approx(want["wikitext2"]["word_perplexity"], rel=1e-4)


def test_the_training_hook_scores_with_the_run_tokenizer(bytes_run):
    wd, _, _ = bytes_run
    rows = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    ev = [r for r in rows if "eval/lambada/perplexity" in r]
    assert [r["step"] for r in ev] == [3] and math.isfinite(ev[0]["eval/lambada/perplexity"])


def test_lm_eval_adapter_uses_the_run_tokenizer(bytes_run):
    from gpt2jax.eval.lm_eval_adapter import GPT2JaxLM

    _, config, params = bytes_run
    lm = GPT2JaxLM(config.model, params, batch_size=4, progress=False, tokenizer=tok_lib.ByteTokenizer())
    assert (lm.eot_token_id, lm.prefix_token_id, lm.tokenizer_name) == (256, 256, "bytes")
    assert lm.tok_encode("café") == list("café".encode("utf-8"))
    assert lm.tok_decode([99, 97, 256]) == "ca"
    with pytest.raises(TokenizerFileError, match="gpt2"):
        GPT2JaxLM(config.model, params, batch_size=4, progress=False)  # GPT-2's ids do not fit 257 rows


def test_convert_to_hf_refuses_a_bytes_run(capsys, bytes_run, tmp_path):
    wd, config, params = bytes_run
    out = tmp_path / "hf"
    rc, _, err = _call(capsys, convert, f"--workdir={wd}", f"--to_hf={out}")
    assert rc != 0 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "bytes" in last and "tokenizer" in last, last
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(ConversionError, match="bytes"):
        convert.to_hf(config, params, out, tokenizer=tok_lib.tokenizer_record(tok_lib.ByteTokenizer()))
    assert not out.exists()
