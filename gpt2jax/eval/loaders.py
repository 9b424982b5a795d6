"""The examples of each task and how they are read from its files: one loader per task family, each
with the convention it follows written next to it (lm-eval's where it defines the task, the GPT-2
paper's and ours where it does not)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Sequence

from gpt2jax.errors import TaskError
from gpt2jax.eval.text import detokenize_words, hellaswag_preprocess, split_wikitext_pages, wikitext_detokenize

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# Examples


@dataclasses.dataclass(frozen=True)
class TargetDoc:
    context: str
    target: str


@dataclasses.dataclass(frozen=True)
class ChoiceDoc:
    contexts: tuple[str, ...]  # one per choice (the same string repeated when shared)
    continuations: tuple[str, ...]
    gold: int
    norm_lengths: tuple[int, ...] | None = None  # characters, for acc_norm


@dataclasses.dataclass(frozen=True)
class TextDoc:
    text: str  # what is scored (detokenized)
    words: int = 0  # counted on the original text
    bytes: int = 0
    chars: int = 0


class _Record(dict):
    """A JSON line's object; a missing field is a TaskError naming the file and line."""

    where = ""

    def __missing__(self, key):
        raise TaskError(f"{self.where}: the record has no field {key!r}")


def _jsonl(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise TaskError(f"{path}:{n}: not a JSON line ({e})") from None
            if not isinstance(rec, dict):
                raise TaskError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            rec = _Record(rec)
            rec.where = f"{path}:{n}"
            out.append(rec)
    return out


def _mc(context: str, choices: Sequence[str], gold: int, norm: bool = True) -> ChoiceDoc:
    """lm-eval multiple_choice: request i is (context, ' ' + choice_i) (target_delimiter ' ');
    acc_norm divides by len(choice_i) in characters, without the delimiter."""
    return ChoiceDoc(
        contexts=(context,) * len(choices),
        continuations=tuple(" " + c for c in choices),
        gold=int(gold),
        norm_lengths=tuple(len(c) for c in choices) if norm else None,
    )

# ----------------------------------------------------------------------------------------------------
# Loaders


def load_lambada(path: Path) -> list[TargetDoc]:
    """lm-eval lambada_openai / lambada_standard: context = the passage without its last word (split on
    ' '), target = ' ' + last word. The OpenAI file is JSON lines {"text"}; the original release is
    one passage per line (read with str.splitlines, as the HF `lambada` dataset does; empty lines are
    skipped). A passage that is not an example -- a record whose text is empty or one word (no context),
    or ends in a space (no target word) -- is a TaskError naming the file and line: neither release
    holds one, so such a line means a damaged or foreign file, and scoring it would change the metric."""
    if path.suffix == ".jsonl":
        texts = [(d.where, d["text"]) for d in _jsonl(path)]
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        texts = [(f"{path}:{n}", t) for n, t in enumerate(lines, 1) if t.strip()]
    docs = []
    for where, t in texts:
        if not isinstance(t, str):
            raise TaskError(f"{where}: the field 'text' is {type(t).__name__}, not a string")
        words = t.split(" ")
        if not t.strip() or len(words) < 2 or not words[-1].strip() or not " ".join(words[:-1]).strip():
            what = ("is empty" if not t.strip() else "has no last word (it ends in a space)"
                    if not words[-1].strip() else "is a single word (no context)")
            raise TaskError(f"{where}: the passage {what}: {t[:60]!r}; a LAMBADA example is a passage whose "
                            "last word is the target and the words before it the context")
        docs.append(TargetDoc(" ".join(words[:-1]), " " + words[-1]))
    return docs


def load_hellaswag(path: Path) -> list[ChoiceDoc]:
    """lm-eval hellaswag: context = preprocess(activity_label + ': ' + ctx_a + ' ' + ctx_b.capitalize())
    (str.capitalize, which also lowercases the rest of ctx_b), choices = preprocess(ending)."""
    docs = []
    for d in _jsonl(path):
        query = hellaswag_preprocess(d["activity_label"] + ": " + d["ctx_a"] + " " + d["ctx_b"].capitalize())
        docs.append(_mc(query, [hellaswag_preprocess(e) for e in d["endings"]], int(d["label"])))
    return docs


def load_piqa(path: Path, labels: Path) -> list[ChoiceDoc]:
    """lm-eval piqa: context 'Question: {goal}\\nAnswer:', choices sol1, sol2; labels from dev-labels.lst."""
    rows = _jsonl(path)
    golds = [int(x) for x in labels.read_text().split()]
    if len(golds) != len(rows):
        raise ValueError(f"{labels}: {len(golds)} labels for {len(rows)} examples in {path}")
    return [_mc(f"Question: {d['goal']}\nAnswer:", [d["sol1"], d["sol2"]], g) for d, g in zip(rows, golds)]


def load_arc(path: Path) -> list[ChoiceDoc]:
    """lm-eval arc_easy / arc_challenge: context 'Question: {question}\\nAnswer:', choices the answer
    texts, gold = the index of answerKey among the choice labels (A-E or 1-5)."""
    docs = []
    for d in _jsonl(path):
        q = d["question"]
        labels = [c["label"] for c in q["choices"]]
        docs.append(_mc(f"Question: {q['stem']}\nAnswer:", [c["text"] for c in q["choices"]], labels.index(d["answerKey"])))
    return docs


def load_winogrande(path: Path) -> list[ChoiceDoc]:
    """lm-eval winogrande (partial scoring): for each option the context is the sentence up to the blank
    with the option filled in; the continuation, shared by both, is ' ' + the rest of the sentence
    after the blank (stripped). acc only."""
    docs = []
    for d in _jsonl(path):
        s = d["sentence"]
        i = s.index("_")
        suffix = " " + s[i + 1 :].strip()
        contexts = tuple(s[:i] + opt for opt in (d["option1"], d["option2"]))
        docs.append(ChoiceDoc(contexts, (suffix, suffix), int(d["answer"]) - 1))
    return docs


def load_cbt(path: Path) -> list[ChoiceDoc]:
    """CBT (not an lm-eval task today). Each example: 20 numbered passage lines, then line 21
    'question with XXXXX<TAB>answer<TAB><TAB>c1|c2|...|c10'. Following the GPT-2 paper (and the CBT
    paper's language-model protocol), each candidate is scored by the probability of the completed
    sentence: context = the passage and the question up to the blank, continuation = the candidate
    and the rest of the question sentence. Passage and question are joined with single spaces and
    detokenized with `detokenize_words`. acc only. (lm-eval 0.3 scored the whole 'Passage: ...
    Question: ...' text instead; the passage's shared log-likelihood does not change the ranking.)"""
    docs, block = [], []
    lines = path.read_text(encoding="utf-8").split("\n") + [""]
    for line in lines:
        if line.strip():
            block.append(line)
            continue
        if not block:
            continue
        passage = []
        for bl in block[:-1]:
            passage += bl.split(" ", 1)[1].split() if " " in bl else []
        fields = block[-1].split(" ", 1)[1].split("\t")
        question, answer = fields[0].split(), fields[1].strip()
        options = [c.strip() for c in fields[-1].split("|") if c.strip()]
        k = next(i for i, w in enumerate(question) if "XXXXX" in w)
        prefix = detokenize_words(passage + question[:k])
        conts = []
        for opt in options:
            full = detokenize_words(passage + question[:k] + [question[k].replace("XXXXX", opt)] + question[k + 1 :])
            assert full.startswith(prefix), (prefix[-50:], full[-80:])
            conts.append(full[len(prefix) :])
        docs.append(ChoiceDoc((prefix,) * len(options), tuple(conts), options.index(answer)))
        block = []
    return docs


def load_wikitext(path: Path) -> list[TextDoc]:
    """lm-eval wikitext: one document per article (`split_wikitext_pages`); the scored text is
    `wikitext_detokenize(page)`; words = len(re.split(r'\\s+', page)) and bytes = len(page in UTF-8),
    both on the original page (lm-eval's counts, including its quirks)."""
    pages = split_wikitext_pages(path.read_text(encoding="utf-8"))
    return [
        TextDoc(wikitext_detokenize(p), words=len(re.split(r"\s+", p)), bytes=len(p.encode("utf-8")))
        for p in pages
    ]


def _sentence_doc(line: str) -> TextDoc:
    words = line.split()
    text = detokenize_words(words) + "\n"
    return TextDoc(text, words=len(words) + 1, bytes=len(text.encode("utf-8")))


def load_ptb(path: Path) -> list[TextDoc]:
    """PTB (Mikolov's ptb.test.txt; not an lm-eval task). Our choice: the test set as one document,
    each sentence detokenized (`detokenize_words`; <unk> and N kept) and ended by '\\n'; words = the
    sentence's tokens + 1 for its end of sentence (the usual PTB count, 82,430 for the test set), so
    word_perplexity = exp(-sum ll / words)."""
    docs = [_sentence_doc(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return [TextDoc("".join(d.text for d in docs), words=sum(d.words for d in docs), bytes=sum(d.bytes for d in docs))]


def load_1bw(path: Path) -> list[TextDoc]:
    """One Billion Word (news.en.heldout-00000-of-00050, the usual test shard; not an lm-eval task). The
    sentences are shuffled, so our choice is one document per sentence: EOT, the detokenized sentence,
    '\\n'; words = tokens + 1 (the end-of-sentence, as 1BW counts </S>)."""
    return [_sentence_doc(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


TEST_SIZE = 5_000_000  # enwik8 / text8: train 90M, valid 5M, test the last 5M


def load_enwik8(path: Path) -> list[TextDoc]:
    """enwik8 test = its last 5M bytes (not an lm-eval task), scored as one document with rolling
    windows. GPT-2's BPE works on UTF-8 text, so the UTF-8 continuation bytes (at most 3) of a character
    cut by the 5M boundary are dropped; bits_per_byte counts the bytes actually scored."""
    data = path.read_bytes()[-TEST_SIZE:]
    cut = 0
    while cut < min(3, len(data)) and 0x80 <= data[cut] < 0xC0:
        cut += 1
    data = data[cut:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("%s is not valid UTF-8; undecodable bytes become U+FFFD", path)
        text = data.decode("utf-8", errors="replace")
    return [TextDoc(text, bytes=len(data))]


def load_text8(path: Path) -> list[TextDoc]:
    """text8 test = its last 5M characters (lowercase a-z and spaces; not an lm-eval task), scored as
    one document with rolling windows; bits_per_char = -sum log2 p / characters."""
    text = path.read_text(encoding="utf-8")[-TEST_SIZE:]
    return [TextDoc(text, chars=len(text), bytes=len(text.encode("utf-8")))]
