"""Examples -> token requests, as lm-eval encodes them, with the tokenizer given (the run's own: GPT-2's
BPE, bytes or a trained BPE; see gpt2jax.tokenizer)."""

from __future__ import annotations


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's context/continuation encoding: trailing whitespace of the context moves to the front of
    the continuation; the context is encoded on its own and the continuation's tokens are those of
    encode(context + continuation) after the context's tokens; an empty context becomes [the tokenizer's
    end-of-text id] (GPT-2's 50256, a bytes run's 256). (For GPT-2's BPE this equals encoding the two
    separately whenever the continuation starts with a space.)"""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    if not context:
        return [int(tok.eot_token)], tok.encode(continuation)
    ctx = tok.encode(context)
    whole = tok.encode(context + continuation)
    return ctx, whole[len(ctx) :]


def encode_requests(tok, kind: str, docs) -> tuple:
    """Token requests for a task's docs: per doc, (context, continuation) token tuples ('target'), one
    such pair per choice ('choice'), or the whole text's tokens ('text'); see `tasks.run_task`."""
    if kind == "target":
        return tuple(tuple(map(tuple, encode_pair(tok, d.context, d.target))) for d in docs)
    if kind == "choice":
        return tuple(
            tuple(tuple(map(tuple, encode_pair(tok, c, x))) for c, x in zip(d.contexts, d.continuations))
            for d in docs
        )
    return tuple(tuple(tok.encode(d.text)) for d in docs)
