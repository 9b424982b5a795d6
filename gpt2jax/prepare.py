"""Tokenize a corpus for training.

    python -m gpt2jax.prepare --source=shakespeare --out_dir=data/shakespeare

Sources: shakespeare | text:GLOB | jsonl:GLOB[:FIELD] | parquet:GLOB[:COLUMN] |
tfds:NAME[/CONFIG][:SPLIT[:FEATURE]] | hf:NAME[@REVISION]:SPLIT[:FIELD] [--hf_config=C] (see gpt2jax/data/sources.py).
--max_docs / --max_tokens keep a sample (the first documents) of any source.
"""

import sys
import time

from absl import app, flags

from gpt2jax.data.prepare import prepare

flags.DEFINE_string("source", "shakespeare", "Document source spec.")
flags.DEFINE_string("out_dir", None, "Where train.bin, val.bin and meta.json go.")
flags.DEFINE_float("val_fraction", 0.05, "Fraction of documents (or tokens, with --split=tail) that go to val.")
flags.DEFINE_enum("split", "documents", ["documents", "tail"],
                  "documents: every (1/val_fraction)-th document goes to val; tail: the last "
                  "val_fraction of the tokens (nanoGPT's convention).")
flags.DEFINE_integer("num_workers", 2, "Tokenizer threads.")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir (default $TFDS_DATA_DIR).")
flags.DEFINE_string("hf_config", None, "Config (subset) of an hf: source, e.g. sample-10BT for FineWeb-Edu.")
flags.DEFINE_integer("max_docs", 0, "Stop after this many non-empty documents (0 = all).")
flags.DEFINE_integer("max_tokens", 0, "Stop after the document that reaches this many tokens (0 = all).")
flags.mark_flag_as_required("out_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    t0 = time.time()
    try:
        meta = prepare(FLAGS.source, FLAGS.out_dir, FLAGS.val_fraction, FLAGS.num_workers,
                       tfds_data_dir=FLAGS.tfds_data_dir, split=FLAGS.split, hf_config=FLAGS.hf_config,
                       max_docs=FLAGS.max_docs, max_tokens=FLAGS.max_tokens)
    except (ValueError, FileNotFoundError) as e:  # DataError, TokenizerFileError, ...
        sys.exit(f"error: {e}")
    print(f"wrote {FLAGS.out_dir} in {time.time() - t0:.1f}s")
    for split, c in meta["splits"].items():
        print(f"  {split:5s} {c['documents']:>10,d} documents {c['tokens']:>14,d} tokens")
    if meta["split_rule"] == "tail_tokens":
        print("  (val is the last tokens of the corpus)")


if __name__ == "__main__":
    app.run(main)
