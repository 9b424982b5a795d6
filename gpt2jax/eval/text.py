"""Text normalisation: lm-eval's WikiText detokenizer and page split, our detokenizer for PTB-style
tokenized text (PTB, 1BW, CBT), and lm-eval's HellaSwag cleanup."""

from __future__ import annotations

import re
from typing import Sequence


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
