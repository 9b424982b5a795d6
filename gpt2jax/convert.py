"""Convert between Hugging Face GPT-2 checkpoints (safetensors) and gpt2jax parameters.

    config, params = from_hf("path/to/hf_dir")   # config.json + model.safetensors (or sharded)
    to_hf(config, params, "path/to/out")         # a GPT2LMHeadModel directory with tokenizer files

    python -m gpt2jax.convert --from_hf=HF_DIR --workdir=OUT     # -> params-only checkpoint, step 0
    python -m gpt2jax.convert --to_hf=OUT --workdir=RUN [--step=S]

Only safetensors are read: pickled weights (pytorch_model.bin, *.pt, *.ckpt) can run code when loaded.
HF's Conv1D weights are [in, out], so the mapping is a stack over layers plus reshapes (see
gpt2jax/model.py for our layout). Tensors may be stored with or without the `transformer.` prefix
(OpenAI's own checkpoints have none); the causal-mask buffers `h.{i}.attn.bias` / `masked_bias` are
ignored, and `lm_head.weight`, if present, must equal `wte.weight` unless config.json says
`tie_word_embeddings: false` (then it is imported as an untied head, model.tie_embeddings=False).

Export writes what GPT2LMHeadModel holds exactly: the default model, an untied head (lm_head.weight,
tie_word_embeddings false), bias=False (as zero biases) and zero_init_proj=True (an initialisation only: the
trained network is GPT-2's). Other variants (rmsnorm, rope or no positions, swiglu or relu2, qk_norm,
parallel_block, a logit_softcap, mup) are refused by name, and so is a run whose tokenizer is not GPT-2's
(bytes, a trained BPE): the directory's tokenizer files (vocab.json, merges.txt) hold GPT-2's BPE only.
The name map is checked against the model's derived parameter shapes (`_check_map`), so a parameter the
map does not cover is an error, not a gap.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
from absl import app, flags
from safetensors import safe_open
from safetensors.numpy import save_file

from gpt2jax import config as config_lib
from gpt2jax.errors import ConversionError
from gpt2jax.fileio import check_output_dir, follow_umask, make_output_dir, remove_empty_dirs
from gpt2jax.model import ModelConfig, count_params, param_shapes
from gpt2jax.tokenizer import EOT, EOT_TEXT

# (name inside transformer.h.{i}, our path inside params['h'])
LAYER_MAP = (
    ("ln_1.weight", ("ln_1", "scale")),
    ("ln_1.bias", ("ln_1", "bias")),
    ("attn.c_attn.weight", ("attn", "c_attn", "kernel")),
    ("attn.c_attn.bias", ("attn", "c_attn", "bias")),
    ("attn.c_proj.weight", ("attn", "c_proj", "kernel")),
    ("attn.c_proj.bias", ("attn", "c_proj", "bias")),
    ("ln_2.weight", ("ln_2", "scale")),
    ("ln_2.bias", ("ln_2", "bias")),
    ("mlp.c_fc.weight", ("mlp", "c_fc", "kernel")),
    ("mlp.c_fc.bias", ("mlp", "c_fc", "bias")),
    ("mlp.c_proj.weight", ("mlp", "c_proj", "kernel")),
    ("mlp.c_proj.bias", ("mlp", "c_proj", "bias")),
)
TOP_MAP = (("wpe.weight", ("wpe",)), ("ln_f.weight", ("ln_f", "scale")), ("ln_f.bias", ("ln_f", "bias")))
MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def hf_shapes(m) -> dict:
    """Shape of every HF tensor (names without the `transformer.` prefix) for model config `m`."""
    L, D, F = m.n_layer, m.n_embd, 4 * m.n_embd
    shapes = {"wte.weight": (m.vocab_size, D), "wpe.weight": (m.block_size, D)}
    shapes.update({"ln_f.weight": (D,), "ln_f.bias": (D,)})
    layer = {
        "ln_1.weight": (D,), "ln_1.bias": (D,), "ln_2.weight": (D,), "ln_2.bias": (D,),
        "attn.c_attn.weight": (D, 3 * D), "attn.c_attn.bias": (3 * D,),
        "attn.c_proj.weight": (D, D), "attn.c_proj.bias": (D,),
        "mlp.c_fc.weight": (D, F), "mlp.c_fc.bias": (F,),
        "mlp.c_proj.weight": (F, D), "mlp.c_proj.bias": (D,),
    }  # fmt: skip
    for i in range(L):
        shapes.update({f"h.{i}.{k}": s for k, s in layer.items()})
    return shapes


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree, path, value):
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


# ----------------------------------------------------------------------------------------- import


def config_from_hf(hf: dict):
    """A full, validated gpt2jax config (schema defaults) with the model fields of an HF config.json."""

    def need(cond, field, msg):
        if not cond:
            raise ConversionError(f"config.json: {field}={hf.get(field)!r} is not supported: {msg}")

    need(hf.get("model_type", "gpt2") == "gpt2", "model_type", "only GPT-2 checkpoints convert")
    need(hf.get("layer_norm_epsilon", 1e-5) == 1e-5, "layer_norm_epsilon", "gpt2jax's LayerNorm uses eps=1e-5")
    act = hf.get("activation_function", "gelu_new")
    need(act in ("gelu_new", "gelu_pytorch_tanh"), "activation_function", "gpt2jax uses tanh-GELU (gelu_new)")
    need(hf.get("n_inner") in (None, 4 * hf.get("n_embd", 0)), "n_inner", "gpt2jax's MLP width is 4 * n_embd")
    need(hf.get("scale_attn_weights", True), "scale_attn_weights", "attention scores are scaled by 1/sqrt(K)")
    need(not hf.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx", "not implemented")
    need(not hf.get("add_cross_attention", False), "add_cross_attention", "not implemented")
    config = config_lib.get_config()
    m = config.model
    m.tie_embeddings = bool(hf.get("tie_word_embeddings", True))
    try:
        m.n_layer, m.n_head, m.n_embd = int(hf["n_layer"]), int(hf["n_head"]), int(hf["n_embd"])
        m.block_size, m.vocab_size = int(hf["n_positions"]), int(hf["vocab_size"])
    except KeyError as e:
        raise ConversionError(f"config.json has no field {e.args[0]!r}") from None
    m.dropout = 0.0
    config_lib.validate(config)
    return config


def _read_safetensors(file: Path) -> dict:
    """Every tensor of one safetensors file; a file that is missing, truncated or not safetensors at all
    is a ConversionError naming it (the library's own error says neither which file nor what to do)."""
    if not file.is_file():
        raise ConversionError(f"{file}: no such file (named by model.safetensors.index.json)")
    try:
        with safe_open(str(file), framework="numpy") as f:
            keys = list(f.keys())
            if all(f.get_slice(k).get_dtype() != "BF16" for k in keys):
                return {k: f.get_tensor(k) for k in keys}
        # numpy has no bfloat16: read such files through jax, on the host
        with jax.default_device(jax.devices("cpu")[0]), safe_open(str(file), framework="flax") as f:
            return {k: np.asarray(f.get_tensor(k), np.float32) for k in keys}
    except ConversionError:
        raise
    except Exception as e:  # safetensors' SafetensorError (truncated header or data), OSError, ...
        detail = " ".join(str(e).split()) or type(e).__name__
        raise ConversionError(f"{file}: cannot read it as safetensors ({detail}): the file is truncated or "
                              f"not a safetensors file; download or export it again") from None


def read_state_dict(path) -> dict:
    """All tensors of an HF model directory (model.safetensors or a sharded index), as numpy."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.exists():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConversionError(f"{index}: not a safetensors index (expected JSON with a \"weight_map\" "
                                  f"object of tensor -> file; {type(e).__name__}: {e})") from None
    elif (path / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLED) if path.is_dir() else []
        if pickled:
            raise ConversionError(
                f"{path} holds only pickled weights ({', '.join(pickled)}); gpt2jax does not read pickles, "
                "since loading one can run arbitrary code. On a trusted machine convert them to safetensors, "
                "e.g. `GPT2LMHeadModel.from_pretrained(DIR).save_pretrained(OUT, safe_serialization=True)` "
                "with transformers, then convert OUT."
            )
        raise ConversionError(f"{path}: no model.safetensors or model.safetensors.index.json found")
    sd = {}
    for name in files:
        for key, value in _read_safetensors(path / name).items():
            if key in sd:
                raise ConversionError(f"{path}: tensor {key!r} appears in more than one shard")
            sd[key] = value
    return sd


def params_from_state_dict(sd: dict, m) -> dict:
    """Our parameter tree (float32 numpy) from HF tensors, checking names and shapes."""
    tensors = {}
    for key, value in sd.items():
        name = key.removeprefix("transformer.")
        if MASK_BUFFER.fullmatch(name):
            continue
        if name in tensors:
            raise ConversionError(f"tensor {name!r} is stored both with and without the 'transformer.' prefix")
        tensors[name] = np.asarray(value, np.float32)
    lm_head = tensors.pop("lm_head.weight", None)
    if m.tie_embeddings:
        if lm_head is not None and "wte.weight" in tensors and not np.array_equal(lm_head, tensors["wte.weight"]):
            raise ConversionError(
                "lm_head.weight differs from wte.weight although config.json ties them "
                "(set tie_word_embeddings: false in config.json to import an untied head)"
            )
    elif lm_head is None:
        raise ConversionError("config.json has tie_word_embeddings: false but there is no lm_head.weight")
    want = hf_shapes(m)
    missing = [k for k in want if k not in tensors]
    unexpected = sorted(k for k in tensors if k not in want)
    if missing or unexpected:
        raise ConversionError(
            f"checkpoint does not match config.json (n_layer={m.n_layer}): "
            f"missing tensors {missing[:8]}{'...' if len(missing) > 8 else ''}, unexpected tensors {unexpected[:8]}"
        )
    for k, shape in want.items():
        if tensors[k].shape != shape:
            raise ConversionError(f"tensor {k!r} has shape {tensors[k].shape}, expected {shape} from config.json")

    ours = _check_map(m)
    params = {}

    def padded(x):
        out = np.zeros(ours["wte"], np.float32)
        out[: m.vocab_size] = x
        return out

    params["wte"] = padded(tensors["wte.weight"])
    if not m.tie_embeddings:
        params["lm_head"] = padded(lm_head)
    for hf, path in TOP_MAP:
        _set(params, path, tensors[hf])
    for hf, path in LAYER_MAP:
        stacked = np.stack([tensors[f"h.{i}.{hf}"] for i in range(m.n_layer)])
        _set(params, ("h",) + path, stacked.reshape(_get(ours["h"], path)))
    return params


def _check_map(m) -> dict:
    """The derived parameter shapes of model config `m`, after checking that the name map covers every
    parameter (wte, lm_head and biases aside) with the element count of its HF tensor. Raises
    ConversionError naming what GPT2LMHeadModel cannot hold."""
    mc, gpt2 = ModelConfig.of(m), ModelConfig()  # the defaults are GPT-2
    unsupported = [
        f"model.{f}={getattr(mc, f)!r}"
        for f in ("norm", "position", "mlp", "qk_norm", "parallel_block", "logit_softcap", "parametrization")
        if getattr(mc, f) != getattr(gpt2, f)
    ]
    if unsupported:
        raise ConversionError(
            "GPT2LMHeadModel cannot hold this model exactly: " + ", ".join(unsupported)
            + " (only the default GPT-2, tie_embeddings=False, bias=False and zero_init_proj=True convert)"
        )
    ours, hf = param_shapes(mc), hf_shapes(mc)
    mapped = {("h",) + path for _, path in LAYER_MAP} | {path for _, path in TOP_MAP} | {("wte",), ("lm_head",)}
    for kpath, shape in jax.tree_util.tree_flatten_with_path(ours, is_leaf=lambda x: isinstance(x, tuple))[0]:
        path = tuple(k.key for k in kpath)
        if path not in mapped:
            raise ConversionError(f"parameter {'/'.join(path)} has no Hugging Face GPT-2 name")
    for name, path in LAYER_MAP:
        if _has(ours["h"], path) and np.prod(_get(ours["h"], path)) != mc.n_layer * np.prod(hf[f"h.0.{name}"]):
            raise ConversionError(f"h/{'/'.join(path)}: shape {_get(ours['h'], path)} does not hold {name} {hf[f'h.0.{name}']}")
    return ours


def _has(tree, path) -> bool:
    for k in path:
        if not isinstance(tree, dict) or k not in tree:
            return False
        tree = tree[k]
    return True


def from_hf(path):
    """(config, params) from an HF GPT-2 directory: config.json + safetensors weights."""
    config = hf_dir_config(path)
    return config, params_from_state_dict(read_state_dict(Path(path)), config.model)


def hf_dir_config(path):
    """The validated gpt2jax config of an HF GPT-2 directory, from its config.json alone (no weights read):
    a ConversionError when the directory or its config.json is missing or unusable."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not path.exists():
        raise ConversionError(f"{path} does not exist (a Hugging Face GPT-2 directory: config.json and "
                              "model.safetensors)")
    if not path.is_dir():
        raise ConversionError(f"{path} is a file, not a Hugging Face GPT-2 directory (config.json and "
                              "model.safetensors)")
    if not cfg_file.exists():
        raise ConversionError(f"{path}: no config.json")
    try:
        hf = json.loads(cfg_file.read_text())
    except ValueError as e:
        raise ConversionError(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ConversionError(f"{cfg_file}: expected a JSON object, got {type(hf).__name__}")
    return config_from_hf(hf)


# ----------------------------------------------------------------------------------------- export


def state_dict_from_params(params, m) -> dict:
    """HF tensors (with the `transformer.` prefix, float32, no vocabulary padding; lm_head.weight only for
    an untied head; zeros for the biases of a bias=False model)."""
    params = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), params)
    ours, hf = _check_map(m), hf_shapes(m)
    got = jax.tree_util.tree_flatten_with_path(params)[0]
    if {tuple(k.key for k in p) for p, _ in got} != {
        tuple(k.key for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(ours, is_leaf=lambda x: isinstance(x, tuple))[0]
    }:
        raise ConversionError("the parameters do not match the model config's declaration")
    for kpath, x in got:
        want = _get(ours, [k.key for k in kpath])
        if x.shape != tuple(want):
            raise ConversionError(f"parameter {'/'.join(k.key for k in kpath)} has shape {x.shape}, expected {want}")
    sd = {"wte.weight": params["wte"][: m.vocab_size]}
    for k, path in TOP_MAP:
        sd[k] = _get(params, path) if _has(params, path) else np.zeros(hf[k], np.float32)
    for k, path in LAYER_MAP:
        for i in range(m.n_layer):
            name = f"h.{i}.{k}"
            sd[name] = _get(params["h"], path)[i].reshape(hf[name]) if _has(params["h"], path) else np.zeros(hf[name], np.float32)
    out = {"transformer." + k: np.ascontiguousarray(v) for k, v in sd.items()}
    if not m.tie_embeddings:
        out["lm_head.weight"] = np.ascontiguousarray(params["lm_head"][: m.vocab_size])
    return out


def hf_config(m) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_layer": m.n_layer,
        "n_head": m.n_head,
        "n_embd": m.n_embd,
        "n_positions": m.block_size,
        "n_ctx": m.block_size,
        "n_inner": None,
        "vocab_size": m.vocab_size,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "resid_pdrop": m.dropout,
        "embd_pdrop": m.dropout,
        "attn_pdrop": m.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": bool(m.tie_embeddings),
        "use_cache": True,
        "bos_token_id": EOT,
        "eos_token_id": EOT,
        "torch_dtype": "float32",
    }


def write_tokenizer_files(out: Path, model_max_length: int) -> None:
    """vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json (+ tokenizer.json when the
    `tokenizers` package is installed): enough for AutoTokenizer.from_pretrained(out), offline."""
    from gpt2jax.tokenizer import vocab_files

    encoder_json, vocab_bpe = vocab_files()
    shutil.copyfile(encoder_json, out / "vocab.json")
    shutil.copyfile(vocab_bpe, out / "merges.txt")
    special = {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}
    tok_config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": model_max_length,
        "add_prefix_space": False,
        "add_bos_token": False,
        "errors": "replace",
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    except ImportError:
        return
    bpe = models.BPE.from_file(encoder_json, vocab_bpe, continuing_subword_prefix="", end_of_word_suffix="")
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOT_TEXT, special=True, normalized=False)])
    tok.save(str(out / "tokenizer.json"))


def check_gpt2_tokenizer(record, where) -> None:
    """ConversionError naming the tokenizer when a run's tokenizer record (run.json, its checkpoints) is not
    GPT-2's: an exported directory's tokenizer files are GPT-2's BPE, so its token ids would mean other text."""
    name = (record or {}).get("name", "gpt2")
    if name != "gpt2":
        raise ConversionError(
            f"{where} was trained with the {name} tokenizer ({record.get('vocab_size')} ids, end-of-text "
            f"{record.get('eot')}); a Hugging Face GPT-2 directory holds GPT-2's BPE tokenizer files only "
            "(vocab.json, merges.txt), so --to_hf exports runs trained with tokenizer gpt2 only")


def to_hf(config, params, path, *, tokenizer=None) -> Path:
    """Write a GPT2LMHeadModel directory (config.json, fp32 model.safetensors, tokenizer files).
    Written to a temporary directory and renamed into place; `path` must not exist or be empty.
    `tokenizer`: the run's tokenizer record (gpt2jax.tokenizer.tokenizer_record); one that is not GPT-2's
    is refused (None: GPT-2's)."""
    check_gpt2_tokenizer(tokenizer, "the model")
    m = config.model
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise ConversionError(f"{path} exists and is not empty; remove it or choose another output directory")
    sd = state_dict_from_params(params, m)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(hf_config(m), indent=2) + "\n")
        gen = {"bos_token_id": EOT, "eos_token_id": EOT}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_tokenizer_files(tmp, m.block_size)
        follow_umask(tmp)  # mkdtemp's 700 and safetensors' 600 would lock a shared cluster's teammates out
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# ----------------------------------------------------------------------------------------- CLI

def define_flags(fv):
    """The CLI's flags; defined only when this module runs as a script (or on `fv`), so that importing
    `from_hf` from other entry points (evaluate, sample) cannot clash with their --workdir/--step."""
    flags.DEFINE_string("from_hf", None, "HF GPT-2 directory to import into --workdir (step 0).", flag_values=fv)
    flags.DEFINE_string("to_hf", None, "Directory to export the checkpoint in --workdir to.", flag_values=fv)
    flags.DEFINE_string("workdir", None, "gpt2jax run directory (holding checkpoints/).", flag_values=fv)
    flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).", flag_values=fv)


def _describe(config, params) -> str:
    m = config.model
    return (
        f"n_layer={m.n_layer} n_head={m.n_head} n_embd={m.n_embd} block_size={m.block_size} "
        f"vocab_size={m.vocab_size} (wte {tuple(params['wte'].shape)}), "
        f"{count_params(params, m):,} parameters"
    )


def main(argv, fv):
    from absl import logging

    from gpt2jax import checkpoint

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # keep Orbax's per-save and per-restore INFO lines off the console
    if not fv.workdir or bool(fv.from_hf) == bool(fv.to_hf):
        raise app.UsageError("give --workdir and exactly one of --from_hf=DIR or --to_hf=OUT")
    if fv.from_hf:
        from gpt2jax.lock import WorkdirLock

        hf_dir_config(fv.from_hf)  # what it reads: the directory and its config.json, first
        # Where it writes, checked before the weights are read: a directory one can write in, holding no run.
        existing = checkpoint._path(fv.workdir) / "checkpoints"
        check_output_dir(fv.workdir, f"--workdir={fv.workdir}")
        check_output_dir(existing, f"{existing} (the run's checkpoints directory)")
        if existing.exists() and any(existing.iterdir()):
            raise app.UsageError(f"{existing} already holds checkpoints; give a fresh --workdir")
        config, params = from_hf(fv.from_hf)
        created = make_output_dir(fv.workdir, f"--workdir={fv.workdir}")
        try:
            with WorkdirLock([fv.workdir]):  # it writes checkpoints: one writer at a time
                if existing.exists() and any(existing.iterdir()):
                    raise app.UsageError(f"{existing} already holds checkpoints; give a fresh --workdir")
                where = checkpoint.save_params(fv.workdir, config, params, step=0)
        except BaseException:
            remove_empty_dirs(created)  # a failed import leaves no new, empty workdir
            raise
        print(f"imported {fv.from_hf}: {_describe(config, params)}\nwrote {where}/0")
    else:
        # Where it writes, checked before anything is read: absent, or an empty directory one can write in.
        check_output_dir(fv.to_hf, f"--to_hf={fv.to_hf}", empty=True)
        from gpt2jax.tokenizer import checkpoint_record

        step = fv.step
        if step is None:
            with checkpoint._reader(fv.workdir) as ck:
                step = ck.latest_step()
        # before anything is read or written: only a run trained with GPT-2's tokenizer fits the directory
        check_gpt2_tokenizer(checkpoint_record(fv.workdir, step)[0], fv.workdir)
        config, params = checkpoint.load_params(fv.workdir, step=step)
        out = to_hf(config, params, fv.to_hf)
        print(f"exported {fv.workdir} step {step}: {_describe(config, params)}\nwrote {out}")


if __name__ == "__main__":
    from gpt2jax import cli

    cli.run(main, define_flags)
