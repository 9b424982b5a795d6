"""HF <-> gpt2jax conversion, checked against transformers' GPT2LMHeadModel (torch, CPU) as reference.

torch and transformers are test dependencies: they are imported unguarded, so a missing one fails loudly.
"""

import codecs
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from absl import flags
from safetensors.numpy import save_file
from safetensors.torch import save_file as torch_save_file
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from gpt2jax import checkpoint, convert
from gpt2jax.config import padded_vocab, validate
from gpt2jax.losses import cross_entropy
from gpt2jax.model import GPT2
from gpt2jax.tokenizer import get_tokenizer, vocab_files

V = 50257
ROOT = Path(__file__).resolve().parents[1]
# name -> GPT2Config fields: odd widths and head counts, short and full contexts, one layer
SHAPES = {
    "3L5H80": dict(n_layer=3, n_head=5, n_embd=80, n_positions=64),
    "1L3H120": dict(n_layer=1, n_head=3, n_embd=120, n_positions=96),
    "2L4H128": dict(n_layer=2, n_head=4, n_embd=128, n_positions=1024),
}
TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
    "First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n\nAll:\nWe know't, we know't.\n"
    "Et puis — 東京で会いましょう! 12,345.67 € 🤖 def f(x):\n\treturn x ** 2  # done\n"
)
_BUILT = {}


def hf_model(fields, seed=0):
    """A randomly initialised GPT2LMHeadModel; every weight (biases and LayerNorms too) perturbed so
    that a mix-up between any two tensors shows in the logits."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**fields)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def build(name, tmp_path_factory):
    """HF model saved with save_pretrained, imported with from_hf, and exported again with to_hf."""
    if name not in _BUILT:
        model = hf_model(SHAPES[name])
        root = tmp_path_factory.mktemp(name)
        model.save_pretrained(root / "hf")
        config, params = convert.from_hf(root / "hf")
        convert.to_hf(config, params, root / "export")
        _BUILT[name] = SimpleNamespace(name=name, model=model, root=root, config=config, params=params)
    return _BUILT[name]


@pytest.fixture(scope="module", params=list(SHAPES))
def hf(request, tmp_path_factory):
    return build(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return build("3L5H80", tmp_path_factory)


def ours_logits(config, params, tokens):
    return np.asarray(GPT2(config.model).apply({"params": params}, jnp.asarray(tokens)))


def hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert np.array_equal(x, y), f"{jax.tree_util.keystr(path)} differs"


# ------------------------------------------------------------------------------------ import parity


def test_imported_config_and_layout(hf):
    m, fields = hf.config.model, SHAPES[hf.name]
    validate(hf.config)
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.vocab_size) == (
        fields["n_layer"], fields["n_head"], fields["n_embd"], fields["n_positions"], V
    )  # fmt: skip
    wte = hf.params["wte"]
    assert wte.shape == (padded_vocab(m), m.n_embd) and wte.shape[0] % 128 == 0
    assert not np.any(wte[V:]), "padding rows must be zero"
    np.testing.assert_array_equal(wte[:V], hf.model.transformer.wte.weight.detach().numpy())
    assert all(np.asarray(x).dtype == np.float32 for x in jax.tree.leaves(hf.params))


def test_logits_match(hf):
    T = min(64, hf.config.model.block_size)
    tokens = np.random.default_rng(1).integers(0, V, (3, T))
    ours = ours_logits(hf.config, hf.params, tokens)
    assert ours.shape == (3, T, padded_vocab(hf.config.model))
    np.testing.assert_allclose(ours[..., :V], hf_logits(hf.model, tokens), rtol=0, atol=1e-4)
    assert np.all(ours[..., V:] < -1e8)


def test_loss_on_text_matches(hf):
    ids = get_tokenizer().encode(TEXT)
    ids = np.asarray(ids[: min(128, hf.config.model.block_size) + 1])[None]
    assert ids.shape[1] > 64
    ours = float(cross_entropy(ours_logits(hf.config, hf.params, ids[:, :-1]), jnp.asarray(ids[:, 1:])))
    ref_logits = torch.as_tensor(hf_logits(hf.model, ids[:, :-1]))
    ref = torch.nn.functional.cross_entropy(ref_logits[0].double(), torch.as_tensor(ids[0, 1:])).item()
    assert abs(ours - ref) < 1e-5, (ours, ref)


# ------------------------------------------------------------------------------------ export


def test_export_then_import_is_bitwise(hf):
    config, params = convert.from_hf(hf.root / "export")
    assert config.model.to_dict() == hf.config.model.to_dict()
    assert_trees_equal(params, hf.params)


def test_export_loads_in_transformers(hf):
    out = hf.root / "export"
    model, info = GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not info["error_msgs"], info
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["n_ctx"] == SHAPES[hf.name]["n_positions"]
    tokens = np.random.default_rng(2).integers(0, V, (2, min(48, hf.config.model.block_size)))
    np.testing.assert_allclose(hf_logits(model.eval(), tokens), hf_logits(hf.model, tokens), rtol=0, atol=1e-6)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        assert (out / name).exists(), name


def test_export_refuses_non_empty_dir(small, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(convert.ConversionError, match="not empty"):
        convert.to_hf(small.config, small.params, tmp_path)
    assert [p.name for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}")] == []
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    convert.to_hf(small.config, small.params, tmp_path / "empty")  # an empty directory is fine
    (tmp_path / "empty2").mkdir()
    convert.to_hf(small.config, small.params, tmp_path / "empty2")
    assert (tmp_path / "empty2" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------ other layouts


def _numpy_state_dict(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_openai_layout_without_prefix(small, tmp_path):
    """OpenAI's checkpoints: no 'transformer.' prefix, causal-mask buffers, a tied lm_head.weight."""
    sd = {k.removeprefix("transformer."): v for k, v in _numpy_state_dict(small.model).items()}
    P = small.config.model.block_size
    for i in range(small.config.model.n_layer):
        sd[f"h.{i}.attn.bias"] = np.tril(np.ones((P, P), np.float32))[None, None]
        sd[f"h.{i}.attn.masked_bias"] = np.asarray(-1e4, np.float32)
    sd["lm_head.weight"] = sd["wte.weight"].copy()
    assert not any(k.startswith("transformer.") for k in sd)
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(small.root / "hf" / "config.json", tmp_path / "config.json")
    config, params = convert.from_hf(tmp_path)
    assert_trees_equal(params, small.params)


def test_sharded_and_bfloat16(small, tmp_path):
    small.model.save_pretrained(tmp_path / "sharded", max_shard_size="2MB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert_trees_equal(convert.from_hf(tmp_path / "sharded")[1], small.params)

    bf16 = {k: v.to(torch.bfloat16).contiguous() for k, v in small.model.state_dict().items() if k != "lm_head.weight"}
    (tmp_path / "bf16").mkdir()
    torch_save_file(bf16, str(tmp_path / "bf16" / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(small.root / "hf" / "config.json", tmp_path / "bf16" / "config.json")
    _, params = convert.from_hf(tmp_path / "bf16")
    want = bf16["transformer.h.2.mlp.c_fc.weight"].float().numpy()
    np.testing.assert_array_equal(params["h"]["mlp"]["c_fc"]["kernel"][2], want)
    assert params["wte"].dtype == np.float32


# ------------------------------------------------------------------------------------ errors


def test_pickled_weights_only_is_a_clear_error(small, tmp_path):
    shutil.copy(small.root / "hf" / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle, and never unpickled")
    with pytest.raises(convert.ConversionError, match=r"pytorch_model\.bin.*pickle(.|\n)*safe_serialization=True"):
        convert.from_hf(tmp_path)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"),
        (dict(activation_function="relu"), "activation_function"),
        (dict(n_inner=100), "n_inner"),
        (dict(model_type="gpt_neo"), "model_type"),
        (dict(n_embd=81), "n_embd"),
    ],
)
def test_bad_config_is_a_clear_error(small, tmp_path, change, match):
    cfg = json.loads((small.root / "hf" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(ValueError, match=match):  # ConversionError, or ConfigError from validate
        convert.from_hf(tmp_path)


def test_bad_tensors_are_clear_errors(small):
    m = small.config.model
    sd = _numpy_state_dict(small.model)
    with pytest.raises(convert.ConversionError, match=r"missing tensors \['h\.1\.mlp\.c_fc\.bias'\]"):
        convert.params_from_state_dict({k: v for k, v in sd.items() if k != "transformer.h.1.mlp.c_fc.bias"}, m)
    with pytest.raises(convert.ConversionError, match=r"unexpected tensors \['h\.0\.attn\.rotary\.weight'\]"):
        convert.params_from_state_dict({**sd, "transformer.h.0.attn.rotary.weight": np.zeros(3, np.float32)}, m)
    with pytest.raises(convert.ConversionError, match=r"unexpected tensors \['h\.3\.ln_1\.weight'\]"):
        convert.params_from_state_dict({**sd, "transformer.h.3.ln_1.weight": np.zeros(80, np.float32)}, m)
    with pytest.raises(convert.ConversionError, match=r"'wpe\.weight' has shape \(32, 80\)"):
        convert.params_from_state_dict({**sd, "transformer.wpe.weight": sd["transformer.wpe.weight"][:32]}, m)
    with pytest.raises(convert.ConversionError, match="lm_head.weight differs"):
        convert.params_from_state_dict({**sd, "lm_head.weight": sd["transformer.wte.weight"] + 1}, m)


# ------------------------------------------------------------------------------------ CLI


def run_cli(*args):
    """In-process, on private flags (the module defines its flags only when run as a script)."""
    fv = flags.FlagValues()
    convert.define_flags(fv)
    fv(["convert", *args])
    convert.main(["convert"], fv)


def test_cli_round_trip(small, tmp_path, capsys):
    run_cli(f"--from_hf={small.root / 'hf'}", f"--workdir={tmp_path / 'run'}")
    assert "parameters" in capsys.readouterr().out
    config, params = checkpoint.load_params(tmp_path / "run")
    assert config.model.to_dict() == small.config.model.to_dict()
    assert_trees_equal(jax.device_get(params), small.params)
    with pytest.raises(convert.app.UsageError, match="already holds checkpoints"):
        run_cli(f"--from_hf={small.root / 'hf'}", f"--workdir={tmp_path / 'run'}")
    run_cli(f"--to_hf={tmp_path / 'out'}", f"--workdir={tmp_path / 'run'}")
    assert "step 0" in capsys.readouterr().out
    assert_trees_equal(convert.from_hf(tmp_path / "out")[1], small.params)


def test_cli_as_script_and_importable_next_to_other_flags(small, tmp_path):
    # evaluate.py and sample.py define their own --workdir/--step and import from_hf: importing convert
    # must define no flags, or absl raises DuplicateFlagError
    assert not any("convert" in module for module in flags.FLAGS.flags_by_module_dict())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "gpt2jax.convert", f"--from_hf={small.root / 'hf'}", f"--workdir={tmp_path}"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4,259,360 parameters" in proc.stdout


# ------------------------------------------------------------------------------------ tokenizer

BASE = r"""Hello world
The quick brown fox jumps over the lazy dog.
It's, I'm, you're, we've, they'll, she'd, don't, can't, won't, y'all, o'clock
IT'S LOUD, I'M HERE, YOU'RE OK, WE'VE GONE, THEY'LL SEE, SHE'D KNOW
'tis 'twas rock 'n' roll ''quoted'' ‘curly’ “double” «guillemets» „low“
3.14159 2.71828 1,000,000 1.000.000,00 -42 +7 0x1F 0b1010 1e-9 6.02e23
Call 555-0199 or +44 20 7946 0958 on 2024-02-29T23:59:59Z; ISBN 978-3-16-148410-0
12345678901234567890123456789012345678901234567890
Pi is ٣٫١٤ in Arabic-Indic digits, ३.१४ in Devanagari, ３．１４ fullwidth
Superscripts x² y³ z⁴, fractions ½ ¾ ⅞, Roman numerals Ⅻ ⅻ, circled ① ② ③
Größe, Straße, Fußgängerübergänge und Äpfel — ÄÖÜ äöü ß ẞ
Ça va? Où est la bibliothèque? L'été dernier, j'ai mangé des crêpes.
¿Dónde está el baño? ¡Qué día tan bonito! Mañana, señor.
Não sei, coração. Ação e emoção em São Paulo.
Dziękuję bardzo! Zażółć gęślą jaźń. Čeština: příliš žluťoučký kůň úpěl ďábelské ódy.
İstanbul'da ılık bir gün; ışık, ğ ş ç ö ü. DİYARBAKIR ıI iİ
Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.
Українська: Ґанок, їжак, єнот. Беларуская: ўсё. Српски: Љубав, Њива, Ђак
Ελληνικά: Γειά σου Κόσμε! Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.
Հայերեն՝ Բարեւ աշխարհ։ ქართული: გამარჯობა მსოფლიო
עברית: שלום עולם! הַשָּׁמַיִם וְהָאָרֶץ
العربية: مرحبا بالعالم! السَّلَامُ عَلَيْكُمْ ١٢٣
فارسی: سلام دنیا، حالت چطوره؟ اردو: ہیلو دنیا
हिन्दी: नमस्ते दुनिया! क्षत्रिय, ज्ञान, श्री
বাংলা: হ্যালো বিশ্ব। தமிழ்: வணக்கம் உலகம். తెలుగు: హలో ప్రపంచం
ไทย: สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ
ລາວ: ສະບາຍດີ ខ្មែរ: សួស្តី​ពិភពលោក မြန်မာ: မင်္ဂလာပါ
中文：你好，世界！我们今天去北京吃烤鸭。繁體字：臺灣、學習、龍。
日本語：こんにちは世界！カタカナ、ひらがな、漢字。ｶﾀｶﾅ半角
한국어: 안녕하세요 세계! 한글은 아름답습니다. ㄱㄴㄷ
Tiếng Việt: Xin chào thế giới! Đường phố Hà Nội rất đông vui.
አማርኛ: ሰላም ዓለም። ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ ᐃᓄᒃᑎᑐᑦ
Монгол: Сайн байна уу ᠮᠣᠩᠭᠣᠯ ཀློད་ སྐད་ ܫܠܡܐ ߒߞߏ
Yorùbá: Ẹ kú àárọ̀. Hausa: Sannu. Kiswahili: Habari ya asubuhi?
Combining: e\u0301 vs é, a\u0308 vs ä, n\u0303, Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇
Emoji: 😀😃😄😁😆😅😂🤣🥲☺️😊 👍👍🏻👍🏽👍🏿 🇺🇸🇯🇵🇩🇪🏴‍☠️ 1️⃣#️⃣
ZWJ: 👩‍👩‍👧‍👦 👨🏽‍💻 🧑‍🚀 🏳️‍🌈 ❤️‍🔥 🫠🫶🪿
Symbols: ∀x∈ℝ, ∃y: x²+y²≤1 ⇒ ∑ᵢ aᵢ ≈ ∫₀^∞ e^{-t} dt ≠ ∞ ± √2 ∂f/∂x
Box drawing: ┌──┬──┐ │▓▓│░░│ └──┴──┘ ▲△▼▽ ♠♣♥♦ ★☆ ☐☑☒ ✓✗
Currency: $5 €10 £20 ¥1000 ₹500 ₿0.01 ₩3000 ₽99 ¢50
Punctuation runs: ... ?!?! !!! ??? --- *** ___ ~~~ ::: ;;; ,,, ((())) [[[]]] {{{}}}
def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)
for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; } // C loop
#include <stdio.h>\nint main(void) { printf("hi\\n"); return 0; }
const f = async (x) => { await sleep(100); return x?.y ?? 'none'; };
SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;
{"key": [1, 2.5, null, true], "nested": {"a": "b\u00e9"}, "emoji": "🎉"}
<div class="x" id='y'><p>Hello &amp; welcome&nbsp;&lt;3</p></div>
git commit -m "fix: handle \t tabs" && ./run.sh --flag=1 2>&1 | tee log.txt
regex: ^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@[a-z]+\.[a-z]{2,}$
https://example.com/path/to/page?query=1&lang=en#section-2 mailto:someone@example.org
\documentclass{article} \begin{equation} E = mc^2 \end{equation} $\alpha_i^2$
| col1 | col2 |\n|------|------|\n| **bold** | _it_ | `code` |
    indented with four spaces
\tindented with a tab
\t\t\tthree tabs then text\t\ttrailing tabs\t
mixed \t \t \t whitespace \n \n \n
line one\nline two\r\nline three\rline four
several      spaces      between      words
   
\n\n\n\n
 \t 
\u00a0non-breaking\u00a0spaces\u00a0\u00a0here
thin\u2009space, en\u2002space, em\u2003space, ideographic\u3000space
zero\u200bwidth\u200cjoiners\u200dand\ufeffBOM
odd\x0bvertical\x0ctab\x85next\u2028line\u2029para
trailing spaces   
aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
 ...and then... she said, "Well, I'll be!" (really?) [sic] {ok} <tag/>
Mr. O'Neill's dog's bone isn't the cats' toy; rock'n'roll's finest
e.g., i.e., etc., vs., a.m./p.m., U.S.A., Ph.D.
C++ C# F# .NET node.js Python3.11 GPT-2 BERT-base-uncased
ALLCAPS camelCase snake_case kebab-case PascalCase SCREAMING_SNAKE_CASE
x=1;y=2;z=x+y*3/4-5%6**7//8<<9>>10&11|12^13~14
#hashtag @mention $TICKER %percent ^caret &amp *star
The year 1999 became 2000; 20th-century vs 21st-century; 1990s, '90s
 space-prefixed line
  two-space-prefixed line
\ttab-prefixed line
Dr. Zhivago, Ms. Ng, Mx. Smith, Jr., Sr., & Co. — all present.
naïve coöperate résumé façade jalapeño piñata Zoë Chloë
Ünïcödé ïn Ëvërÿ Wörd: ÀÁÂÃÄÅ àáâãäå ÇÈÉÊË ìíîï ÑÒÓÔÕÖ ùúûü ýÿ
Hex bytes: \xde\xad\xbe\xef and escapes \\n \\t \\r \\0
Mathematical bold 𝐀𝐁𝐂 𝔸𝔹ℂ script 𝒜ℬ𝒞, Old Italic 𐌰𐌱, cuneiform 𒀀𒀁
Musical 𝄞 𝄢 ♩♪♫♬, chess ♔♕♖♗♘♙, dominoes 🀱, cards 🂡🂮
Private use \ue000\uf8ff and noncharacter \ufdd0 and replacement \ufffd
Nederlands: Het ijsje is lekker. Svenska: Räksmörgås. Norsk: Blåbærsyltetøy. Íslenska: Þú ert ð
Suomi: Hyvää päivää! Eesti: Tere õhtust. Latviešu: Ģimene. Lietuvių: Ąžuolas. Magyar: Árvíztűrő tükörfúrógép
Română: Șase țări. Hrvatski: Đurđevdan. Slovenščina: Čebelica. Shqip: Përshëndetje. Malti: Ħobż
Tagalog: Kumusta ka? Bahasa Indonesia: Selamat pagi! Bahasa Melayu: Terima kasih.
ગુજરાતી: નમસ્તે ਪੰਜਾਬੀ: ਸਤ ਸ੍ਰੀ ਅਕਾਲ ಕನ್ನಡ: ನಮಸ್ಕಾರ മലയാളം: നമസ്കാരം සිංහල: ආයුබෝවන් ଓଡ଼ିଆ: ନମସ୍କାର
Math digits 𝟎𝟏𝟐𝟑 𝟘𝟙𝟚, Thai digits ๑๒๓, Khmer ១២៣, Bengali ১২৩, Chinese 一二三 〇 两千零二十四
Dates: 12/31/1999, 31.12.1999, 1999年12月31日, 1999-12-31, Dec 31st '99, 23:59:59.999
    if (x) {\n        return y;\n    }\n
fn main() { let v: Vec<u8> = vec![1, 2, 3]; println!("{:?}", v); }
package main; import "fmt"; func main() { fmt.Println("héllo, 世界") }
public static void main(String[] args) throws IOException { System.out.println(args.length); }
<?php echo htmlspecialchars($_GET['q'] ?? '', ENT_QUOTES); ?>
%% MATLAB: A = [1 2; 3 4]; B = A' * inv(A); disp(B(:, end))
-- Haskell: main = mapM_ print $ take 10 $ filter even [1..]
(defun square (x) (* x x)) ; lisp; (map 'list #'square '(1 2 3))
key: value\n  list:\n    - item1\n    - "item 2"\n  empty: ~
[section]\nname = "toml"\narray = [ 1, 2, 3 ]\n# comment
diff --git a/x.py b/x.py\n@@ -1,3 +1,4 @@\n-old line\n+new line\n  context
Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nZeroDivisionError: division by zero
base64: SGVsbG8gV29ybGQhIPCfmIA= hex: deadbeefcafebabe0123456789abcdef uuid: 123e4567-e89b-12d3-a456-426614174000
Whitespace only after this colon:\t\t   \n\n\t
A\tB\tC\n1\t2\t3\n4\t\t6
''s ''t ' s 'S 'T 'Re 'VE 'lL 'D 'm's't're
end."""


def corpus():
    """Several hundred lines: every BASE line (escapes \\n \\t \\r \\xNN \\uNNNN decoded), bare and
    wrapped in whitespace three ways."""
    unescape = lambda m: codecs.decode(m[0], "unicode_escape")  # noqa: E731
    base = [re.sub(r"\\(u[0-9a-f]{4}|x[0-9a-f]{2}|[ntr])", unescape, line) for line in BASE.split("\n")]
    wraps = [("", ""), (" ", ""), ("  ", " "), ("\t", "\t"), ("\n\n", "\n"), ("   ", "   \n\n\n"), ("", "\r\n"),
             ("\n \n", " \t"), ("", "  "), (" \u00a0", "\u3000"), ("\t\t", "")]  # fmt: skip
    lines = list(base)
    for i, line in enumerate(base):
        for w in (wraps[i % len(wraps)], wraps[(7 * i + 3) % len(wraps)], wraps[(5 * i + 8) % len(wraps)]):
            lines.append(w[0] + line + w[1])
    return lines


@pytest.fixture(scope="module")
def reference_tokenizer():
    # transformers 5 ignores GPT2TokenizerFast(vocab_file=, merges_file=) (an empty vocabulary); pass contents.
    encoder_json, vocab_bpe = vocab_files()
    vocab = json.loads(open(encoder_json, encoding="utf-8").read())
    merges = [tuple(line.split()) for line in open(vocab_bpe, encoding="utf-8").read().split("\n")[1:] if line]
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges)
    assert len(tok) == V and tok("Hello world")["input_ids"] == [15496, 995]
    return tok


def test_tokenizer_parity(small, tmp_path, reference_tokenizer):
    lines = corpus()
    assert len(lines) >= 300 and len({c for line in lines for c in line}) > 800
    ours = get_tokenizer().encode_batch(lines)
    legacy = tmp_path / "legacy"  # only vocab.json + merges.txt: transformers' conversion path
    legacy.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(small.root / "export" / name, legacy / name)
    tokenizers = {
        "GPT2TokenizerFast": reference_tokenizer,
        "AutoTokenizer(export)": AutoTokenizer.from_pretrained(small.root / "export"),
        "AutoTokenizer(vocab.json+merges.txt)": AutoTokenizer.from_pretrained(legacy),
    }
    text = "\n".join(lines)
    for name, tok in tokenizers.items():
        theirs = tok(lines)["input_ids"]
        bad = [(line, a, b) for line, a, b in zip(lines, ours, theirs) if a != b]
        assert not bad, f"{name} disagrees on {len(bad)} lines, first: {bad[0]!r}"
        assert tok(text)["input_ids"] == get_tokenizer().encode(text), name
    assert reference_tokenizer.decode(ours[0]) == lines[0]
