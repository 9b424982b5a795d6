"""Zero-shot evaluation: scoring engine, task loaders/conventions and metrics, CLI.

Known answers come from constructed models whose log-probabilities are known in closed form:
  * uniform: every parameter zero -> all real-vocabulary logits 0 -> log p = -log(50257) for every
    token, argmax = token 0;
  * peaked(c, alpha): only ln_f.bias[0] = 1 and wte[c, 0] = alpha -> logit alpha for token c and 0 for
    every other real token, whatever the input.
Agreement with transformers' GPT2LMHeadModel on the same (random) weights checks the real network.
"""

from __future__ import annotations

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpt2jax import config as config_lib
from gpt2jax.eval import reference
from gpt2jax.eval import loaders
from gpt2jax.eval import tasks as T
from gpt2jax.eval import scoring
from gpt2jax.eval.scoring import EOT, Scorer, default_buckets, rolling_windows, scored_width
from gpt2jax.model import GPT2, init_params

from conftest import tiny_config as base_config

V = 50257
LOGV = math.log(V)
L = 64  # block_size of the tiny model
B = 4  # batch size used by most tests (compiles are shared through the scorer's cache)
ALPHA = 12.0


def tiny_config():
    return base_config(model__n_head=4, model__block_size=L)


@pytest.fixture(scope="module")
def cfg():
    return tiny_config().model


@pytest.fixture(scope="module")
def tok():
    from gpt2jax.tokenizer import get_tokenizer

    return get_tokenizer()


@pytest.fixture(scope="module")
def rand_params(cfg):
    return init_params(cfg, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def uniform(cfg, rand_params):
    zero = jax.tree.map(jnp.zeros_like, rand_params)
    return Scorer(cfg, zero, batch_size=B, progress=False)


def peaked_params(rand_params, c: int, alpha: float = ALPHA):
    p = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), rand_params)
    p["ln_f"]["bias"][0] = 1.0
    p["wte"][c, 0] = alpha
    return p


def lp_peak(alpha=ALPHA):  # (log p of the peaked token, log p of any other real token)
    z = math.log(math.exp(alpha) + V - 1)
    return alpha - z, -z


DOG = 3290  # ' dog'


@pytest.fixture(scope="module")
def peaked(cfg, rand_params):
    return Scorer(cfg, peaked_params(rand_params, DOG), batch_size=B, progress=False)


# ---------------------------------------------------------------------------------------- fixtures

WIKI = (
    " \n = Alpha Article = \n \n"
    + " The alpha @-@ beta test was held in 1 @,@ 000 places . It 's \" quoted \" text ( with brackets ) . \n" * 4
    + " \n = = Section one = = \n \n More text here , and more ; and the end at 3 @.@ 5 ° C . \n \n"
    + " = Beta Article = \n \n Second article text with N numbers . \n \n"
)
PTB = " no it was n't black monday \n but while the new york stock exchange did n't fall apart $ N \n"
ONEBW = 'The U.S. said it was " surprised " by the figures .\nIt \'s a test , and it \'s fine .\n'
ENWIK8 = "<page>\n  <title>Caf\u00e9 \u2013 na\u00efve</title>\n  <text>[[Alpha]] is a ''test''.</text>\n</page>\n"
TEXT8 = " anarchism originated as a term of abuse first used against early working class radicals"


def cbt_example(question: str, answer: str, cands: str) -> str:
    lines = [f"{i} the story goes on and `` she said hello '' to him ." for i in range(1, 21)]
    lines.append(f"21 {question}\t{answer}\t\t{cands}")
    return "\n".join(lines) + "\n\n"


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")

    def write(rel, text):
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")

    lam = ["the cat sat on the mat and the dog", "he went home to see his dog", "she read a long book about a cat"]
    write("lambada_test.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in lam))
    write("lambada_test_plain_text.txt", "\n".join(lam) + "\n")
    hs = [
        dict(activity_label="Dog walking", ctx_a="A man walks a dog.", ctx_b="he", label=1,
             endings=["a b c d e", "elephant [header] runs", "x y", "and then the dog runs home"]),
        dict(activity_label="Cooking", ctx_a="A woman cooks [title] Pasta.", ctx_b="SHE STIRS", label=1,
             endings=["go", "extraordinarily", "walk to the shop and buy some more bread", "a b"]),
    ]  # fmt: skip
    write("hellaswag_val.jsonl", "".join(json.dumps(h) + "\n" for h in hs))
    write("wikitext-2-raw/wiki.test.raw", WIKI)
    write("wikitext-103-raw/wiki.test.raw", WIKI)
    write("ptb.test.txt", PTB)
    write("news.en.heldout-00000-of-00050", ONEBW)
    write("enwik8", ENWIK8)
    write("text8", TEXT8)
    cbt = cbt_example("the XXXXX ran to the cat .", "dog", "cat|dog|man") + cbt_example(
        "`` XXXXX , '' said the old man .", "man", "dog|man|cat"
    )
    write("CBTest/data/cbtest_CN_test_2500ex.txt", cbt)
    write("CBTest/data/cbtest_NE_test_2500ex.txt", cbt)
    piqa = [dict(goal="Boil water", sol1="use a pot on the stove", sol2="use a fridge"), dict(goal="Cut", sol1="knife", sol2="a spoon and a lot of patience")]
    write("physicaliqa-train-dev/dev.jsonl", "".join(json.dumps(p) + "\n" for p in piqa))
    write("physicaliqa-train-dev/dev-labels.lst", "0\n0\n")
    wg = [
        dict(qID="a", sentence="The trophy did not fit in the suitcase because _ was too big.", option1="the trophy", option2="the suitcase", answer="1"),
        dict(qID="b", sentence="Sam helped Tom because _ was kind.", option1="Sam", option2="Tom", answer="2"),
    ]  # fmt: skip
    write("winogrande_1.1/dev.jsonl", "".join(json.dumps(w) + "\n" for w in wg))
    arc = [
        dict(id="1", question=dict(stem="What is hot?", choices=[dict(text="the sun", label="A"), dict(text="ice cubes in a glass", label="B")]), answerKey="A"),
        dict(id="2", question=dict(stem="Which is a dog?", choices=[dict(text="a small brown cat", label="1"), dict(text="a poodle", label="2"), dict(text="fish", label="3")]), answerKey="2"),
    ]  # fmt: skip
    for sub in ("Easy", "Challenge"):
        write(f"ARC-V1-Feb2018-2/ARC-{sub}/ARC-{sub}-Test.jsonl", "".join(json.dumps(a) + "\n" for a in arc))
    return d


# ---------------------------------------------------------------------------------------- engine


def test_buckets_and_rolling_windows():
    assert default_buckets(1024) == (32, 64, 128, 256, 512, 1024)
    assert default_buckets(64) == (32, 64)
    assert default_buckets(100) == (32, 64, 100)
    toks = list(range(1000, 1150))  # 150 tokens, L = 64
    w = rolling_windows(toks, L)
    assert w[0] == ([EOT], toks[:64])
    assert w[1] == ([toks[63]], toks[64:128])  # full window: one token of context
    assert w[2] == (toks[85:128], toks[128:150])  # last window: the model sees a full 64 tokens
    assert [t for _, c in w for t in c] == toks
    assert rolling_windows(toks[:10], L) == [([EOT], toks[:10])]
    assert rolling_windows([], L) == []


def test_uniform_known_answer(uniform):
    rng = np.random.default_rng(0)
    reqs = []
    for n_ctx, n_cont in [(1, 1), (5, 3), (30, 20), (100, 4), (3, 70), (63, 1), (64, 1)]:
        ctx = rng.integers(1, V, n_ctx).tolist()
        reqs.append((ctx, rng.integers(1, V, n_cont).tolist()))
    reqs.append(([7, 8], [0, 0, 0]))  # token 0 is the argmax of a uniform model (first max)
    reqs.append(([7, 8], [0, 5, 0]))
    res = uniform.loglikelihood(reqs)
    for (ctx, cont), (ll, greedy) in zip(reqs, res):
        scored = min(len(cont), L)  # a continuation longer than block_size keeps its last L tokens
        assert ll == pytest.approx(-scored * LOGV, rel=1e-5)
        assert greedy == all(t == 0 for t in cont[-scored:])
    assert [g for _, g in res[-2:]] == [True, False]


def test_peaked_known_answer(peaked):
    lpc, lpo = lp_peak()
    reqs = [([1], [DOG]), ([1, 2, 3], [DOG, DOG]), ([1], [DOG, 5]), ([DOG] * 80, [5, DOG, DOG])]
    res = peaked.loglikelihood(reqs)
    want = [(lpc, True), (2 * lpc, True), (lpc + lpo, False), (lpo + 2 * lpc, False)]
    for (ll, g), (wll, wg) in zip(res, want):
        assert ll == pytest.approx(wll, rel=1e-5) and g == wg
    # rolling: the first window's EOT context is not scored; every token of the sequence is
    seq = [DOG, 5] * 75
    (ll,) = peaked.loglikelihood_rolling([seq])
    assert ll == pytest.approx(75 * lpc + 75 * lpo, rel=1e-5)


def test_bucketing_compiles_once_per_bucket(cfg, rand_params):
    scorer = Scorer(cfg, rand_params, batch_size=3, progress=False)  # a batch size no other test uses
    rng = np.random.default_rng(1)
    reqs = [(rng.integers(0, V, int(n)).tolist(), [1, 2]) for n in rng.integers(1, 150, 60)]
    res = scorer.loglikelihood(reqs)
    assert len(res) == 60 and scorer.last_stats.batches >= 20
    assert scorer.num_compiles == 2 == len(scorer.buckets)  # (3, 32) and (3, 64), not one per example
    again = Scorer(cfg, jax.tree.map(lambda x: x * 1.5, rand_params), batch_size=3, progress=False)
    again.loglikelihood(reqs[::-1])
    assert again.num_compiles == 0  # new params, same shapes: nothing recompiles
    st = scorer.last_stats
    assert st.tokens > 0 and st.tokens <= st.padded_tokens and st.tokens_per_s > 0


def test_head_runs_only_at_scored_positions(cfg, rand_params):
    assert [scored_width(n, 64) for n in (1, 2, 3, 8, 9, 64, 200)] == [1, 2, 4, 8, 16, 64, 64]
    scorer = Scorer(cfg, rand_params, batch_size=B, progress=False)
    Vp = config_lib.padded_vocab(cfg)
    i32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.int32)  # noqa: E731
    hlo = scorer._fn.lower(scorer.params, i32(B, 64), i32(B, 2), i32(B, 2),
                           jax.ShapeDtypeStruct((B, 2), jnp.bool_)).compile().as_text()
    assert f"f32[{B},2,{Vp}]" in hlo or f"f32[{B * 2},{Vp}]" in hlo  # logits at 2 positions a row
    assert not re.search(rf"f32\[{B},64,{Vp}\]|f32\[{B * 64},{Vp}\]", hlo)  # never at all 64
    # short and long continuations in one batch: C is the longest one's, the short rows are masked
    rng = np.random.default_rng(5)
    reqs = [(rng.integers(0, V, 40).tolist(), rng.integers(0, V, n).tolist()) for n in (1, 3, 5, 2)]
    params = jax.tree.map(lambda x: x * 20.0 if x.ndim >= 2 else x, rand_params)
    res = Scorer(cfg, params, batch_size=B, progress=False).loglikelihood(reqs)
    for (ctx, cont), (ll, _) in zip(reqs, res):
        whole = ctx + cont
        assert ll == pytest.approx(_direct_ll(cfg, params, whole[:-1], whole[1:], len(cont)), abs=1e-4)


def _direct_ll(cfg, params, inp, tgt, n):
    logits = GPT2(cfg).apply({"params": params}, jnp.asarray([inp]))[0]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    rows = logp[len(inp) - n :, :]
    return float(jnp.sum(rows[jnp.arange(n), jnp.asarray(tgt[len(tgt) - n :])]))


def test_truncation_and_rolling_equal_direct_windows(cfg, rand_params):
    params = jax.tree.map(lambda x: x * 20.0 if x.ndim >= 2 else x, rand_params)  # less uniform outputs
    scorer = Scorer(cfg, params, batch_size=B, progress=False)
    rng = np.random.default_rng(2)
    ctx, cont = rng.integers(0, V, 120).tolist(), rng.integers(0, V, 6).tolist()
    ((ll, _),) = scorer.loglikelihood([(ctx, cont)])
    whole = ctx + cont
    assert ll == pytest.approx(_direct_ll(cfg, params, whole[-65:-1], whole[-64:], 6), abs=1e-4)
    seq = rng.integers(0, V, 150).tolist()
    (roll,) = scorer.loglikelihood_rolling([seq])
    direct = (
        _direct_ll(cfg, params, [EOT] + seq[:63], seq[:64], 64)
        + _direct_ll(cfg, params, seq[63:127], seq[64:128], 64)
        + _direct_ll(cfg, params, seq[85:149], seq[86:150], 22)
    )
    assert roll == pytest.approx(direct, abs=2e-4)


def _hf_params(hf_dir, model_cfg):
    try:
        from gpt2jax.convert import from_hf
    except ImportError:  # convert.py not there: map the weights ourselves (model.py's layout)
        from safetensors.numpy import load_file

        sd = {k.removeprefix("transformer."): v for k, v in load_file(str(hf_dir / "model.safetensors")).items()}
        Lr, D, H = model_cfg.n_layer, model_cfg.n_embd, model_cfg.n_head
        wte = np.zeros((config_lib.padded_vocab(model_cfg), D), np.float32)
        wte[:V] = sd["wte.weight"]
        st = lambda k: np.stack([sd[f"h.{i}.{k}"] for i in range(Lr)])  # noqa: E731
        return {
            "wte": wte, "wpe": sd["wpe.weight"],
            "ln_f": {"scale": sd["ln_f.weight"], "bias": sd["ln_f.bias"]},
            "h": {
                "ln_1": {"scale": st("ln_1.weight"), "bias": st("ln_1.bias")},
                "ln_2": {"scale": st("ln_2.weight"), "bias": st("ln_2.bias")},
                "attn": {
                    "c_attn": {"kernel": st("attn.c_attn.weight").reshape(Lr, D, 3, H, D // H),
                               "bias": st("attn.c_attn.bias").reshape(Lr, 3, H, D // H)},
                    "c_proj": {"kernel": st("attn.c_proj.weight").reshape(Lr, H, D // H, D),
                               "bias": st("attn.c_proj.bias")},
                },
                "mlp": {"c_fc": {"kernel": st("mlp.c_fc.weight"), "bias": st("mlp.c_fc.bias")},
                        "c_proj": {"kernel": st("mlp.c_proj.weight"), "bias": st("mlp.c_proj.bias")}},
            },
        }  # fmt: skip
    config, params = from_hf(hf_dir)
    assert config.model.block_size == L and config.model.n_layer == model_cfg.n_layer
    return params


def test_agrees_with_transformers_reference(cfg, tok, tmp_path):
    import torch  # test dependencies (.[test]): a missing one must fail, not skip
    import transformers
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(
        vocab_size=V, n_positions=L, n_embd=64, n_layer=2, n_head=4, initializer_range=0.1
    )
    model = transformers.GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # non-trivial LayerNorms and biases too
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    scorer = Scorer(cfg, _hf_params(tmp_path, cfg), batch_size=B, progress=False)

    texts = [
        ("The quick brown fox", " jumps over the lazy dog"),
        ("Question: What is the capital of France?\nAnswer:", " Paris"),
        ("word " * 90, " end of a long context that is left-truncated"),
        ("x", " a continuation" * 30),  # longer than block_size: its last 64 tokens are scored
    ]
    reqs = [T.encode_pair(tok, c, x) for c, x in texts]
    ours = scorer.loglikelihood(reqs)
    for (ctx, cont), (ll, greedy) in zip(reqs, ours):
        window = (ctx + cont)[-(L + 1) :]
        inp, tgt, n = window[:-1], window[1:], min(len(cont), L)
        with torch.no_grad():
            logits = model(torch.tensor([inp])).logits[0].double()
        logp = torch.log_softmax(logits, -1)[len(inp) - n :]
        want = float(logp[torch.arange(n), torch.tensor(tgt[-n:])].sum())
        assert ll == pytest.approx(want, abs=1e-4)
        assert greedy == bool((logits[len(inp) - n :].argmax(-1) == torch.tensor(tgt[-n:])).all())
    # rolling over a document of 150 tokens
    seq = tok.encode(" ".join(f"w{i}" for i in range(80)))[:150]
    (roll,) = scorer.loglikelihood_rolling([seq])
    want = 0.0
    for ctx, cont in rolling_windows(seq, L):
        window = (ctx + cont)[-(L + 1) :]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([window[:-1]])).logits[0].double(), -1)
        want += float(lp[torch.arange(len(window) - len(cont) - 1, len(window) - 1), torch.tensor(cont)].sum())
    assert roll == pytest.approx(want, abs=2e-4)


def test_batch_sharding_matches_single_device(cfg, rand_params, tok):
    if jax.device_count() < 2:
        pytest.skip("needs several (host) devices")
    from gpt2jax.evaluate import data_parallel

    params, sharding, bs = data_parallel(rand_params, B)
    sharded = Scorer(cfg, params, batch_size=bs, batch_sharding=sharding, progress=False)
    single = Scorer(cfg, rand_params, batch_size=B, progress=False)
    reqs = [T.encode_pair(tok, "Hello there, how", " are you"), ([1, 2, 3] * 30, [4, 5])] * 3
    for (a, ga), (b, gb) in zip(sharded.loglikelihood(reqs), single.loglikelihood(reqs)):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb


# ---------------------------------------------------------------------------------------- conventions


def test_encode_pair(tok):
    assert T.encode_pair(tok, "Hello", " world") == ([15496], [995])
    assert T.encode_pair(tok, "Hello ", "world") == ([15496], [995])  # trailing space moves over
    assert T.encode_pair(tok, "", " world") == ([EOT], [995])


def test_text_normalisation():
    assert T.wikitext_detokenize(
        ' The alpha @-@ beta test in 1 @,@ 000 places . It \'s " quoted " text ( with brackets ) . \n = = B = = '
    ) == ' The alpha-beta test in 1,000 places. It\'s "quoted" text (with brackets).\n== B == '
    assert T.detokenize_words("but he did n't say `` hello '' to the boys ' dog ( really ) , $ N .".split()) == (
        "but he didn't say \"hello\" to the boys' dog (really), $N."
    )
    assert T.detokenize_words('He said " I am here " and " so " .'.split()) == 'He said "I am here" and "so".'
    assert T.hellaswag_preprocess(" A cat [title] Jumps [step] high ") == "A cat. Jumps high"
    assert T.hellaswag_preprocess("a [x]  b") == "a  b"  # lm-eval collapses double spaces in one pass
    pages = T.split_wikitext_pages(WIKI)
    assert len(pages) == 2 and pages[0].startswith(" = Alpha Article = ") and "= = Section one" in pages[0]
    assert pages[1].startswith(" = Beta Article = ")


def test_request_construction(tasks_dir):
    lam = T.load_docs("lambada", tasks_dir)
    assert lam[0] == T.TargetDoc("the cat sat on the mat and the", " dog")
    assert T.load_docs("lambada_standard", tasks_dir) == lam
    hs = T.load_docs("hellaswag", tasks_dir)
    assert hs[0].contexts[0] == "Dog walking: A man walks a dog. He"
    assert hs[1].contexts[0] == "Cooking: A woman cooks. Pasta. She stirs"  # [title] -> '. ', capitalize()
    assert hs[0].continuations[1] == " elephant runs" and hs[0].norm_lengths[1] == len("elephant runs")
    wg = T.load_docs("winogrande", tasks_dir)[0]
    assert wg.contexts == ("The trophy did not fit in the suitcase because the trophy",
                           "The trophy did not fit in the suitcase because the suitcase")  # fmt: skip
    assert wg.continuations == (" was too big.",) * 2 and wg.gold == 0 and wg.norm_lengths is None
    pq = T.load_docs("piqa", tasks_dir)
    assert pq[1].contexts[0] == "Question: Cut\nAnswer:" and pq[1].gold == 0
    arc = T.load_docs("arc_easy", tasks_dir)
    assert arc[1].gold == 1 and arc[1].continuations == (" a small brown cat", " a poodle", " fish")
    cbt = T.load_docs("cbt_cn", tasks_dir)
    assert cbt[0].continuations == (" cat ran to the cat.", " dog ran to the cat.", " man ran to the cat.")
    assert cbt[0].contexts[0].endswith('and "she said hello" to him. the') and cbt[0].gold == 1
    assert cbt[1].contexts[0].endswith('to him. "') and cbt[1].continuations[1] == 'man," said the old man.'
    ptb = T.load_docs("ptb", tasks_dir)
    assert len(ptb) == 1 and ptb[0].words == 7 + 14
    assert ptb[0].text == "no it wasn't black monday\nbut while the new york stock exchange didn't fall apart $N\n"
    bw = T.load_docs("1bw", tasks_dir)
    assert [d.words for d in bw] == [13, 11] and bw[0].text == 'The U.S. said it was "surprised" by the figures.\n'


def _mc_expected(tok, docs, norm):
    acc, acc_n = [], []
    for d in docs:  # uniform model: ll = -(number of continuation tokens) * log V
        ll = np.array([-len(tok.encode(c)) * LOGV for c in d.continuations])
        acc.append(np.argmax(ll) == d.gold)
        if norm:
            acc_n.append(np.argmax(ll / np.array(d.norm_lengths)) == d.gold)
    return float(np.mean(acc)), (float(np.mean(acc_n)) if norm else None)


def test_choice_tasks_known_answer(uniform, peaked, tok, tasks_dir):
    res = T.run_task(uniform, "hellaswag", tasks_dir)
    assert (res["acc"], res["acc_norm"], res["n"]) == (0.5, 1.0, 2)  # doc 2: fewest tokens != fewest per char
    assert _mc_expected(tok, T.load_docs("hellaswag", tasks_dir), True) == (0.5, 1.0)
    assert res["acc_stderr"] == pytest.approx(0.5) and res["acc_norm_stderr"] == 0.0  # sqrt(var_{n-1} / n)
    for name in ("piqa", "arc_easy", "arc_challenge"):
        res = T.run_task(uniform, name, tasks_dir)
        want = _mc_expected(tok, T.load_docs(name, tasks_dir), True)
        assert (res["acc"], res["acc_norm"]) == want and res["n"] == 2, name
    assert T.run_task(uniform, "piqa", tasks_dir)["acc"] == 0.5
    # WinoGrande scores the shared suffix: a context-blind model ties, the first option wins
    res = T.run_task(uniform, "winogrande", tasks_dir)
    assert res == {"acc": 0.5, "acc_stderr": pytest.approx(0.5), "n": 2}
    # CBT with the ' dog' model: the candidate completing the sentence with ' dog' wins
    for name in ("cbt_cn", "cbt_ne"):
        res = T.run_task(peaked, name, tasks_dir)
        assert res["acc"] == 0.5 and res["n"] == 2 and "acc_norm" not in res


def test_lambada_known_answer(peaked, tasks_dir):
    lpc, lpo = lp_peak()
    for name in ("lambada", "lambada_standard"):
        res = T.run_task(peaked, name, tasks_dir)
        assert res["acc"] == pytest.approx(2 / 3)  # targets ' dog', ' dog', ' cat'
        lls = np.array([lpc, lpc, lpo])
        assert res["perplexity"] == pytest.approx(math.exp(-lls.mean()), rel=1e-5)
        assert res["acc_stderr"] == pytest.approx(np.std([1, 1, 0], ddof=1) / math.sqrt(3))
        assert res["perplexity_stderr"] == pytest.approx(res["perplexity"] * np.std(lls, ddof=1) / math.sqrt(3), rel=1e-4)
        assert res["n"] == 3


def test_text_tasks_known_answer(uniform, tok, tasks_dir, monkeypatch):
    pages = T.split_wikitext_pages(WIKI)
    ntok = sum(len(tok.encode(T.wikitext_detokenize(p))) for p in pages)
    assert ntok > 2 * L  # the first article needs several rolling windows
    words = sum(len(re.split(r"\s+", p)) for p in pages)
    nbytes = sum(len(p.encode()) for p in pages)
    for name in ("wikitext2", "wikitext103"):
        res = T.run_task(uniform, name, tasks_dir)
        assert res["n"] == 2
        assert res["word_perplexity"] == pytest.approx(math.exp(ntok * LOGV / words), rel=1e-4)
        assert res["byte_perplexity"] == pytest.approx(math.exp(ntok * LOGV / nbytes), rel=1e-4)
        assert res["bits_per_byte"] == pytest.approx(ntok * math.log2(V) / nbytes, rel=1e-5)

    ptb_text = "no it wasn't black monday\nbut while the new york stock exchange didn't fall apart $N\n"
    res = T.run_task(uniform, "ptb", tasks_dir)
    assert res == {"word_perplexity": pytest.approx(V ** (len(tok.encode(ptb_text)) / 21), rel=1e-4), "n": 1}
    n1 = len(tok.encode('The U.S. said it was "surprised" by the figures.\n'))
    n2 = len(tok.encode("It's a test, and it's fine.\n"))
    res = T.run_task(uniform, "1bw", tasks_dir)
    assert res == {"word_perplexity": pytest.approx(V ** ((n1 + n2) / 24), rel=1e-4), "n": 2}

    res = T.run_task(uniform, "enwik8", tasks_dir)
    assert res["bits_per_byte"] == pytest.approx(len(tok.encode(ENWIK8)) * math.log2(V) / len(ENWIK8.encode()), rel=1e-5)
    res = T.run_task(uniform, "text8", tasks_dir)
    assert res["bits_per_char"] == pytest.approx(len(tok.encode(TEXT8)) * math.log2(V) / len(TEXT8), rel=1e-5)

    # the last-N cut: enwik8 drops the continuation bytes of a character split by the boundary
    data = ENWIK8.encode()
    cut = data.index("\u00e9".encode()) + 1  # inside the 2-byte é
    monkeypatch.setattr(loaders, "TEST_SIZE", len(data) - cut)  # read where the loaders live
    (doc,) = T.load_enwik8(tasks_dir / "enwik8")
    assert doc.text == data[cut + 1 :].decode() and doc.bytes == len(data) - cut - 1
    (doc,) = T.load_text8(tasks_dir / "text8")
    assert loaders.TEST_SIZE < len(TEXT8) and doc.text == TEXT8[-loaders.TEST_SIZE :] and doc.chars == loaders.TEST_SIZE


def test_limit_and_evaluate_tasks(cfg, rand_params, tasks_dir):
    zero = jax.tree.map(jnp.zeros_like, rand_params)
    out = T.evaluate_tasks(cfg, zero, "hellaswag,lambada", tasks_dir, limit=1, batch_size=B)
    assert out["hellaswag"]["n"] == 1 and out["lambada"]["n"] == 1
    flat = T.flatten(out)
    assert flat["eval/hellaswag/acc"] == 1.0 and "eval/hellaswag/acc_stderr" not in flat


def test_missing_file_error(cfg, rand_params, tmp_path):
    with pytest.raises(T.MissingTaskData) as e:
        T.evaluate_tasks(cfg, rand_params, ["piqa"], tmp_path)
    msg = str(e.value)
    assert "physicaliqa-train-dev/dev.jsonl" in msg and "physicaliqa-train-dev/dev-labels.lst" in msg
    assert "https://storage.googleapis.com/ai2-mosaic/public/physicaliqa/physicaliqa-train-dev.zip" in msg
    assert str(tmp_path) in msg and "unzip" in msg
    with pytest.raises(ValueError, match="unknown task"):
        T.get_task("nope")


# ---------------------------------------------------------------------------------------- CLI


def test_reference_numbers():
    assert reference.paper("lambada", "perplexity") == (35.13, 15.60, 10.87, 8.63)
    assert reference.paper("1bw", "word_perplexity")[2] == 44.575
    assert reference.lm_eval("gpt2", "hellaswag", "acc_norm") == 0.3114
    for model in reference.LM_EVAL_MODELS:
        for task, metric in reference.LM_EVAL[model]:
            assert (model, task) in reference.LM_EVAL_SOURCES and metric in T.get_task(task).metrics
    for task, metric in reference.PAPER:
        assert metric in T.get_task(task).metrics


def test_cli_end_to_end(tmp_path, tasks_dir, rand_params):
    from absl import flags

    from gpt2jax import checkpoint, evaluate

    config = tiny_config()
    checkpoint.save_params(tmp_path / "run", config, rand_params)
    out = tmp_path / "res" / "results.json"
    argv = ["evaluate", f"--workdir={tmp_path / 'run'}", "--tasks=lambada,winogrande", f"--tasks_dir={tasks_dir}",
            f"--out={out}", f"--batch_size={B}", "--noprogress"]  # fmt: skip
    fv = flags.FlagValues()  # private flags: nothing shared with other CLIs imported in this session
    evaluate.define_flags(fv)
    fv(argv)
    evaluate.main([], fv)
    res = json.loads(out.read_text())
    want = T.evaluate_tasks(config.model, rand_params, ["lambada", "winogrande"], tasks_dir, batch_size=B)
    assert res.keys() == want.keys()
    assert res["lambada"]["perplexity"] == pytest.approx(want["lambada"]["perplexity"], rel=1e-4)
    assert res["winogrande"]["n"] == 2
    table = evaluate.markdown_table(res)
    assert "| lambada | perplexity |" in table and "35.13" in table and "40.06" in table
    assert "paper 117M" in table and "lm-eval gpt2-xl" in table
    # missing files: one error listing each, before any model is loaded
    fv = flags.FlagValues()
    evaluate.define_flags(fv)
    fv(argv[:1] + ["--workdir=/nonexistent", "--tasks=hellaswag,piqa", f"--tasks_dir={tmp_path}"])
    with pytest.raises(T.MissingTaskData, match="(?s)hellaswag_val.jsonl.*dev-labels.lst"):
        evaluate.main([], fv)
