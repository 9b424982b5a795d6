import shutil

import numpy as np
import pytest

from gpt2jax import tokenizer as tk

TRICKY = [
    "Hello world",
    "héllo wörld — naïve café 🙂👩‍👩‍👧 emoji",
    "日本語のテキスト、中文文本，한국어",
    "  leading\n\n\ttabs   and    runs of spaces \r\n\n\n   trailing   ",
    "literal <|endoftext|> inside text<|endoftext|>",
    "it's we'll they'd I'M 123 4567.89 $%^&*",
    "",
]


@pytest.fixture(scope="module")
def tok():
    return tk.get_tokenizer()


def test_known_ids(tok):
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert tk.EOT == tok.eot_token == 50256
    assert tok.n_vocab == 50257
    assert tok.decode([tk.EOT]) == "<|endoftext|>"
    assert tk.get_tokenizer() is tok  # cached


@pytest.mark.parametrize("text", TRICKY)
def test_roundtrip(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode_np(text).tolist() == ids
    assert all(0 <= i < tk.EOT for i in ids)


def test_special_token_text_is_plain_text(tok):
    ids = tok.encode("<|endoftext|>")
    assert tk.EOT not in ids and tok.decode(ids) == "<|endoftext|>"


def test_encode_batch(tok):
    assert tok.encode_batch(TRICKY, num_threads=2) == [tok.encode(t) for t in TRICKY]


def test_vocab_files_and_hash(tok):
    encoder_json, vocab_bpe = tk.vocab_files()
    assert encoder_json.endswith("encoder.json") and vocab_bpe.endswith("vocab.bpe")
    assert isinstance(tok.vocab_hash, str) and len(tok.vocab_hash) == 16


def test_tampered_file_raises(tmp_path, monkeypatch):
    encoder_json, vocab_bpe = tk.vocab_files()
    bad = tmp_path / "encoder.json"
    shutil.copy(encoder_json, bad)
    data = bytearray(bad.read_bytes())
    data[100] ^= 1
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(tk, "vocab_files", lambda: (str(bad), vocab_bpe))
    with pytest.raises(tk.TokenizerFileError, match=f"sha256 mismatch .*{bad}"):
        tk.load_tokenizer()


def test_no_network_or_cache(monkeypatch):
    import tiktoken.load

    def forbidden(*args, **kwargs):
        raise AssertionError("tiktoken download/cache path used")

    monkeypatch.setattr(tiktoken.load, "read_file_cached", forbidden)
    monkeypatch.setattr(tiktoken.load, "read_file", forbidden)
    assert tk.load_tokenizer().encode("Hello world") == [15496, 995]


def test_surrogates_do_not_crash(tok):
    assert isinstance(tok.encode_np("a\ud800b"), np.ndarray)
