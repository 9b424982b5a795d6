"""Tokenize a corpus for training.

    python -m gpt2jax.prepare --source=shakespeare --out_dir=data/shakespeare [--overwrite]

Sources: shakespeare | text:GLOB | jsonl:GLOB[:FIELD] | parquet:GLOB[:COLUMN] |
tfds:NAME[/CONFIG][:SPLIT[:FEATURE]] | hf:NAME[@REVISION]:SPLIT[:FIELD] [--hf_config=C] (see gpt2jax/data/sources.py).
--max_docs / --max_tokens keep a sample (the first documents) of any source.
--tokenizer=gpt2|bytes|bpe:N picks the vocabulary (GPT-2's by default).

Preparing again into a directory that holds the same source prepared with the same options does
nothing; a different dataset there is refused unless --overwrite (which builds the new one beside it
and swaps them).
"""

import time

from absl import flags

from gpt2jax import cli


def define_flags(fv) -> None:
    flags.DEFINE_string("source", "shakespeare", "Document source spec.", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Where train.bin, val.bin and meta.json go.", flag_values=fv)
    flags.DEFINE_float("val_fraction", 0.05, "Fraction of documents (or tokens, with --split=tail) that go to "
                       "val.", flag_values=fv)
    flags.DEFINE_enum("split", "documents", ["documents", "tail"],
                      "documents: every (1/val_fraction)-th document goes to val; tail: the last "
                      "val_fraction of the tokens (nanoGPT's convention).", flag_values=fv)
    flags.DEFINE_integer("num_workers", 2, "Tokenizer threads.", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir (default $TFDS_DATA_DIR).", flag_values=fv)
    flags.DEFINE_string("hf_config", None, "Config (subset) of an hf: source, e.g. sample-10BT for FineWeb-Edu.",
                        flag_values=fv)
    flags.DEFINE_integer("max_docs", 0, "Stop after this many non-empty documents (0 = all).", flag_values=fv)
    flags.DEFINE_integer("max_tokens", 0, "Stop after the document that reaches this many tokens (0 = all).",
                         flag_values=fv)
    flags.DEFINE_string("tokenizer", "gpt2", "gpt2 (GPT-2's BPE, 50257 ids) | bytes (UTF-8 bytes, 257 ids: eot "
                        "256) | bpe:N (a byte-level BPE of N tokens trained on the train split; saved as "
                        "tokenizer.json in --out_dir).", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace a different dataset already in --out_dir.", flag_values=fv)
    flags.mark_flag_as_required("out_dir", flag_values=fv)


def main(argv, fv):
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not fv.out_dir:
        raise app.UsageError("--out_dir is empty: give the directory for train.bin, val.bin and meta.json")
    from gpt2jax.data.prepare import prepare

    t0 = time.time()
    meta = prepare(fv.source, fv.out_dir, fv.val_fraction, fv.num_workers, tfds_data_dir=fv.tfds_data_dir,
                   split=fv.split, hf_config=fv.hf_config, max_docs=fv.max_docs, max_tokens=fv.max_tokens,
                   overwrite=fv.overwrite, tokenizer=fv.tokenizer)
    if meta.get("unchanged"):
        print(f"{fv.out_dir} already holds {fv.source} prepared with these options: nothing to do")
    else:
        print(f"wrote {fv.out_dir} in {time.time() - t0:.1f}s")
    for split, c in meta["splits"].items():
        size = f" {c['bytes']:>14,d} bytes" if "bytes" in c else ""
        print(f"  {split:5s} {c['documents']:>10,d} documents {c['tokens']:>14,d} tokens{size}")
    print(f"  tokenizer {meta.get('tokenizer', 'gpt2')} ({meta.get('vocab_size')} ids, end-of-text {meta.get('eot')})")
    if meta["split_rule"] == "tail_tokens":
        print("  (val is the last tokens of the corpus)")


if __name__ == "__main__":
    cli.run(main, define_flags)
