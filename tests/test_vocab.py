"""Small vocabularies (prepare --tokenizer=bytes|bpe:N), bits per byte, and model.vocab_size=0."""

import json
import math

import numpy as np
import pytest

from gpt2jax import tokenizer as tok_lib
from gpt2jax.config import ConfigError
from gpt2jax.data.prepare import prepare
from gpt2jax.data.sources import DataError
from gpt2jax.train import bits_per_byte, resolve_vocab

from conftest import tiny_config

TEXTS = ["First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40,
         "Ünïcödé — naïve café, 東京 and emoji 🙂.\n" * 30,
         "All:\nSpeak, speak. <|endoftext|> is text here.\n" * 40,
         "Second Citizen:\nOne word, good citizens.\n" * 40]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    for i, t in enumerate(TEXTS):
        (d / f"{i}.txt").write_text(t, encoding="utf-8")
    return d


def _read(out, split):
    return np.fromfile(out / f"{split}.bin", np.uint16)


def test_bytes_tokens_are_the_utf8_bytes(corpus, tmp_path):
    meta = prepare(f"text:{corpus}/*.txt", str(tmp_path / "b"), val_fraction=0.25, progress=False,
                   tokenizer="bytes")
    assert (meta["vocab_size"], meta["eot"], meta["tokenizer"]) == (257, 256, "bytes")
    assert meta["tokenizer_record"] == tok_lib.tokenizer_record(tok_lib.ByteTokenizer())
    ids = np.concatenate([_read(tmp_path / "b", "train"), _read(tmp_path / "b", "val")])
    # Documents in order (the val one is every 4th: document 3), each followed by EOT 256.
    order = [0, 1, 2, 3]
    want = []
    for i in order:
        want += list(TEXTS[i].encode("utf-8")) + [256]
    train_docs = [t for i, t in enumerate(TEXTS) if i != 3]
    want_train = []
    for t in train_docs:
        want_train += list(t.encode("utf-8")) + [256]
    assert _read(tmp_path / "b", "train").tolist() == want_train
    assert _read(tmp_path / "b", "val").tolist() == list(TEXTS[3].encode("utf-8")) + [256]
    assert sorted(ids.tolist()) == sorted(want)
    assert meta["splits"]["train"]["bytes"] == sum(len(t.encode()) for t in train_docs)
    assert meta["splits"]["val"]["bytes"] == len(TEXTS[3].encode())
    assert tok_lib.ByteTokenizer().decode(want_train) == "".join(train_docs)


def test_bpe_is_trained_on_the_train_split_only(corpus, tmp_path):
    meta = prepare(f"text:{corpus}/*.txt", str(tmp_path / "p"), val_fraction=0.25, progress=False,
                   tokenizer="bpe:400")
    tok = tok_lib.for_data(tmp_path / "p")
    assert meta["tokenizer_record"]["hash"] == tok.vocab_hash
    import hashlib

    raw = (tmp_path / "p" / "tokenizer.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest()[:16] == tok.vocab_hash
    vocab = json.loads(raw)["model"]["vocab"]
    # "Second Citizen" only occurs in the val document (3): no merge may contain "Second".
    assert not any("Second" in piece or "econd" in piece for piece in vocab)
    assert any("Citizen" in piece for piece in vocab)  # it learned the train split's words
    val = _read(tmp_path / "p", "val")
    assert tok.decode(val) == TEXTS[3]
    assert val[-1] == tok.eot_token and meta["vocab_size"] == tok.n_vocab <= 400
    # Byte counts from the tokens equal the text's.
    assert meta["splits"]["val"]["bytes"] == len(TEXTS[3].encode())
    # EOT text inside a document stays text (not the special id).
    doc = _read(tmp_path / "p", "train")
    assert (doc == tok.eot_token).sum() == 3


def test_bpe_tail_split_never_trains_on_val(corpus, tmp_path):
    meta = prepare(f"text:{corpus}/*.txt", str(tmp_path / "t"), val_fraction=0.1, split="tail",
                   progress=False, tokenizer="bpe:280")
    assert meta["split_rule"] == "tail_tokens"
    assert meta["splits"]["train"]["bytes"] >= meta["bpe_trained_on_bytes"]


def test_bad_tokenizer_names_are_refused(corpus, tmp_path):
    for name, msg in (("bpe:10", "257 < N"), ("chars", "unknown tokenizer"), ("bpe:x", "bpe:N")):
        with pytest.raises(DataError, match=msg):
            prepare(f"text:{corpus}/*.txt", str(tmp_path / "x"), progress=False, tokenizer=name)
    assert not (tmp_path / "x").exists()


def test_bits_per_byte_arithmetic():
    # 2 nats/token over 1000 tokens standing for 4000 bytes: 2 * 1000 / 4000 / ln 2 bits per byte.
    assert bits_per_byte(2.0, 1000, 4000) == pytest.approx(0.5 / math.log(2))
    assert bits_per_byte(math.log(2) * 8, 10, 10) == pytest.approx(8.0)  # a byte model at 8 bits
    assert bits_per_byte(None, 10, 10) is None and bits_per_byte(1.0, 10, None) is None


def test_vocab_size_zero_takes_the_datasets_and_others_are_refused(corpus, tmp_path):
    prepare(f"text:{corpus}/*.txt", str(tmp_path / "b"), val_fraction=0.25, progress=False, tokenizer="bytes")
    c = tiny_config(tmp_path / "b", model__vocab_size=0)
    resolve_vocab(c)
    assert c.model.vocab_size == 257
    c = tiny_config(tmp_path / "b")  # 50257: GPT-2's, not this dataset's
    with pytest.raises(ConfigError, match=r"50257 is not the vocabulary .* \(257, tokenizer bytes\)"):
        resolve_vocab(c)


def test_byte_lengths_match_the_text():
    text = "Hello, wörld! 東京 🙂 <|endoftext|>"
    for tok in (tok_lib.get_tokenizer(), tok_lib.ByteTokenizer()):
        ids = tok.encode(text)
        assert int(tok.byte_lengths()[ids].sum()) == len(text.encode("utf-8"))
        assert tok.byte_lengths()[tok.eot_token] == 0
