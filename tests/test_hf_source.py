"""prepare --source=hf:NAME:SPLIT[:FIELD]: Hugging Face datasets streamed (gpt2jax/data/hf_source.py),
on local data files written here (offline), and --max_docs / --max_tokens."""

from __future__ import annotations

import json
import os

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

datasets = pytest.importorskip("datasets", reason="Hugging Face datasets not installed (pip install -e '.[hf]')")

from gpt2jax.data import hf_source  # noqa: E402
from gpt2jax.data.prepare import prepare  # noqa: E402
from gpt2jax.data.sources import DataError, DataNotFoundError  # noqa: E402
from gpt2jax.tokenizer import EOT, get_tokenizer  # noqa: E402

DOCS = [f"Record {i}: a line of text, ünïcode 🙂.\n" * (i % 4 + 1) for i in range(24)]
OUTPUTS = {"train.bin", "val.bin", "meta.json"}


@pytest.fixture()
def corpus(tmp_path, monkeypatch):
    """A local dataset directory: two JSON-lines files (12 records each, field 'body' and 'text')."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"), raising=False)
    d = tmp_path / "corpus"
    d.mkdir()
    for k in range(2):
        with open(d / f"part-{k:02d}.jsonl", "w", encoding="utf-8") as f:
            for doc in DOCS[12 * k : 12 * (k + 1)]:
                f.write(json.dumps({"text": doc, "body": doc.upper(), "id": 7}) + "\n")
    return d


def tokens(out_dir, split):
    return np.fromfile(os.path.join(out_dir, f"{split}.bin"), np.uint16)


def test_parse():
    assert hf_source.parse("HuggingFaceFW/fineweb-edu:train") == ("HuggingFaceFW/fineweb-edu", "train", "text", None)
    assert hf_source.parse("d:validation:body") == ("d", "validation", "body", None)
    assert hf_source.parse("d") == ("d", "train", "text", None)
    assert hf_source.parse("o/w@refs/convert/parquet:train") == ("o/w", "train", "text", "refs/convert/parquet")
    for bad in ("a:b:c:d", "a@:train", ":train"):
        with pytest.raises(DataError, match=r"hf:NAME\[@REVISION\]:SPLIT"):
            hf_source.parse(bad)


def test_hf_local_dir_streams_same_tokens_as_jsonl(corpus, tmp_path, monkeypatch):
    calls = []
    real = datasets.load_dataset

    def spy(*a, **k):
        calls.append(k)
        ds = real(*a, **k)
        assert isinstance(ds, datasets.IterableDataset)
        return ds

    monkeypatch.setattr(datasets, "load_dataset", spy)
    meta = prepare(f"hf:{corpus}:train", str(tmp_path / "hf"), val_fraction=0.25, progress=False)
    assert calls and all(k.get("streaming") is True for k in calls)
    ref = prepare(f"jsonl:{corpus}/*.jsonl", str(tmp_path / "ref"), val_fraction=0.25, progress=False)
    for split in ("train", "val"):
        np.testing.assert_array_equal(tokens(tmp_path / "hf", split), tokens(tmp_path / "ref", split))
    assert meta["splits"] == ref["splits"] and meta["splits"]["val"]["documents"] == 6
    assert set(os.listdir(tmp_path / "hf")) == OUTPUTS

    prepare(f"hf:{corpus}:train:body", str(tmp_path / "body"), val_fraction=0.0, progress=False)
    t = tokens(tmp_path / "body", "train")
    assert get_tokenizer().decode(t[: int(np.argmax(t == EOT))]) == DOCS[0].upper()


def test_max_docs_and_max_tokens(corpus, tmp_path):
    m = prepare(f"hf:{corpus}:train", str(tmp_path / "a"), val_fraction=0.25, progress=False, max_docs=8)
    assert m["splits"]["train"]["documents"] + m["splits"]["val"]["documents"] == 8 and m["max_docs"] == 8
    tok = get_tokenizer()
    lens = [len(tok.encode(d)) + 1 for d in DOCS]
    budget = sum(lens[:5]) - 1  # reached inside the 5th document: that document is the last one kept
    m = prepare(f"hf:{corpus}:train", str(tmp_path / "b"), val_fraction=0.0, progress=False, max_tokens=budget)
    assert m["splits"]["train"]["documents"] == 5 and m["splits"]["train"]["tokens"] == sum(lens[:5])
    with pytest.raises(ValueError, match="max_docs"):
        prepare(f"hf:{corpus}:train", str(tmp_path / "c"), progress=False, max_docs=-1)


def test_errors_name_the_problem_and_leave_nothing(corpus, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"no field 'content' \(fields: \['body', 'id', 'text'\]\)"):
        prepare(f"hf:{corpus}:train:content", str(out), progress=False)
    with pytest.raises(DataError, match="is of type int, not a string"):
        prepare(f"hf:{corpus}:train:id", str(out), progress=False)
    with pytest.raises(DataNotFoundError, match="split 'test'"):
        prepare(f"hf:{corpus}:test", str(out), progress=False)
    with pytest.raises(DataNotFoundError, match="is not a directory"):
        prepare(f"hf:{tmp_path}/missing:train", str(out), progress=False)
    assert not out.exists() or not (set(os.listdir(out)) & OUTPUTS)
