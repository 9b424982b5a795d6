"""The model's fields, once: `ModelConfig`, a frozen dataclass that owns each field's default, its meaning and
its check. It imports nothing of JAX, so the config schema (gpt2jax/config.py) builds its `model` section
from it and runs its checks without loading the network.

    m = ModelConfig.of(config.model)   # from the ConfigDict section (a ModelConfig is returned as is)
    m.head_dim, m.padded_vocab, m.mlp_hidden, m.mup, m.width_mult

The network (gpt2jax/model.py) takes a ModelConfig; its public entry points (`GPT2`, `init_params`,
`param_specs`, ...) also accept the ConfigDict section and convert it once on entry.
"""

from __future__ import annotations

import dataclasses
import math

from gpt2jax.errors import ConfigError

DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("xla", "cudnn")
REMAT = ("none", "full", "dots", "dots_no_batch")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope", "none")
MLPS = ("gelu", "swiglu", "relu2")
PARAMETRIZATIONS = ("sp", "mup")
MUP_ATTENTIONS = ("inverse", "sqrt")

MUP_DEFAULT_BASE_WIDTH = 256  # the width at which muP equals SP (the quickstart's width)


# Each check takes a field's value and returns what is wrong with it ('' = nothing).
def _positive_int(v) -> str:
    return "" if isinstance(v, int) and v > 0 else f"must be a positive int, got {v!r}"


def _vocab_size(v) -> str:
    msg = _positive_int(v)
    return msg + " (0, the dataset's vocabulary, is resolved by train only)" if msg and v == 0 else msg


def _unit_interval(v) -> str:
    return "" if 0.0 <= v < 1.0 else f"must be in [0, 1), got {v}"


def _boolean(v) -> str:
    return "" if isinstance(v, bool) else f"must be True or False, got {v!r}"


def _positive_float(v) -> str:
    return "" if isinstance(v, (int, float)) and v > 0 and math.isfinite(v) else f"must be a finite number > 0, got {v!r}"


def _nonnegative_float(v) -> str:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    return "" if ok else f"must be a finite number >= 0 (0 = off), got {v!r}"


def _above_one(v) -> str:
    return "" if v > 1 and math.isfinite(v) else f"must be a finite number > 1, got {v}"


def _one_of(choices: tuple):
    return lambda v: "" if v in choices else f"must be one of {choices}, got {v!r}"


def _field(default, doc: str, check):
    return dataclasses.field(default=default, metadata={"doc": doc, "check": check})


def _choice(default, doc: str, choices: tuple):
    return _field(default, doc, _one_of(choices))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The `model` section of a gpt2jax config as a frozen, hashable value (a valid jit static argument).
    The defaults are GPT-2 124M exactly; every variant is off. Each field's meaning is its `doc` metadata
    (`ModelConfig.doc(name)`)."""

    n_layer: int = _field(12, "transformer blocks", _positive_int)
    n_head: int = _field(12, "attention heads (n_embd must divide by it)", _positive_int)
    n_embd: int = _field(768, "width of the residual stream", _positive_int)
    block_size: int = _field(1024, "context length (rows of the position table)", _positive_int)
    vocab_size: int = _field(
        50257, "the real GPT-2 vocabulary; 0 = the dataset's (data.dir's meta.json), set by train", _vocab_size
    )
    vocab_multiple: int = _field(128, "the embedding table is padded to a multiple of this", _positive_int)
    dropout: float = _field(
        0.0, "dropout on the embeddings, attention probabilities and residual branches", _unit_interval
    )
    dtype: str = _choice("float32", "compute dtype; parameters keep param_dtype", DTYPES)
    param_dtype: str = _choice("float32", "dtype the parameters are stored and updated in", DTYPES)
    attention: str = _choice("xla", "'xla' | 'cudnn' (GPU, bf16/fp16 only)", ATTENTION)
    scan_layers: bool = _field(True, "lax.scan over the stacked layers (compile time independent of depth)", _boolean)
    remat: str = _choice("none", "'none' | 'full' | 'dots' | 'dots_no_batch'", REMAT)
    # Variants (gpt2jax/model.py); the defaults are GPT-2 exactly.
    norm: str = _choice("layernorm", "'layernorm' | 'rmsnorm'", NORMS)
    bias: bool = _field(True, "biases in linear layers and norms", _boolean)
    position: str = _choice("learned", "'learned' (wpe) | 'rope' | 'none'", POSITIONS)
    rope_base: float = _field(10000.0, "rotary base (position='rope')", _above_one)
    mlp: str = _choice(
        "gelu", "'gelu' (4x, tanh-GELU) | 'swiglu' (hidden 8D/3 rounded up to a multiple of 32) | 'relu2' (4x, "
        "relu(x)^2, the NanoGPT speedrun's; the same parameters as 'gelu')", MLPS
    )
    tie_embeddings: bool = _field(True, "the LM head is wte; False = a separate lm_head", _boolean)
    qk_norm: bool = _field(False, "normalise q and k per head before the scores", _boolean)
    parallel_block: bool = _field(False, "x + attn(ln_1(x)) + mlp(ln_1(x))", _boolean)
    logit_softcap: float = _field(
        0.0, "C > 0: the logits are C tanh(logits / C), bounded by C (Gemma 2, the NanoGPT speedrun), wherever "
        "they are formed (dense, fused and blockwise losses, scoring, decoding); 0 = off. Under muP the output "
        "multiplier applies first: C tanh(mult x logits / C)", _nonnegative_float)
    zero_init_proj: bool = _field(
        False, "the residual output projections (attn/c_proj and mlp/c_proj kernels) start at zero, not at "
        "N(0, 0.02 / sqrt(2 n_layer)) (the NanoGPT speedrun's); an initialisation only", _boolean)
    parametrization: str = _choice("sp", "'sp' (GPT-2's) | 'mup' (Tensor Programs V)", PARAMETRIZATIONS)
    mup_base_width: int = _field(
        MUP_DEFAULT_BASE_WIDTH, "muP's base width: at n_embd == this, muP equals SP", _positive_int
    )
    mup_attention: str = _choice(
        "inverse", "muP's score scale: 'inverse' sqrt(K0)/K (TP5) | 'sqrt' 1/sqrt(K) (SP's, for ablations)",
        MUP_ATTENTIONS)
    mup_vector_lr: float = _field(
        1.0, "muP: the learning-rate multiplier of the non-hidden parameters (embeddings, norm gains, biases), "
        "a base hyperparameter (TP5 tunes such multipliers at the base width)", _positive_float)
    mup_output_mult: float = _field(
        1.0, "muP: the logits' multiplier at the base width (TP5's output multiplier, a base hyperparameter); "
        "the logits are multiplied by mup_output_mult / width_mult", _positive_float)
    mup_hidden_init: float = _field(
        1.0, "muP: the hidden matrices' init std multiplier at the base width (a base hyperparameter); their "
        "std is mup_hidden_init x GPT-2's / sqrt(width_mult)", _positive_float)

    @classmethod
    def of(cls, cfg) -> "ModelConfig":
        """From a ConfigDict / dict model section (or a ModelConfig, returned as is)."""
        if isinstance(cfg, ModelConfig):
            return cfg
        names = {f.name for f in dataclasses.fields(cls)}
        keys = cfg.keys() if hasattr(cfg, "keys") else ()
        return cls(**{k: cfg[k] for k in keys if k in names})

    @classmethod
    def defaults(cls) -> dict:
        """Every field's default, in declaration order (the config schema's `model` section)."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def doc(cls, name: str) -> str:
        """What field `name` means."""
        return cls.__dataclass_fields__[name].metadata["doc"]

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Check every field, then the fields that constrain each other. Raises ConfigError naming the
        first bad field (`config.model.<field>: ...`)."""
        for f in dataclasses.fields(self):
            msg = f.metadata["check"](getattr(self, f.name))
            if msg:
                raise ConfigError(f"config.model.{f.name}: {msg}")
        for field, ok, msg in self._joint_checks():
            if not ok():
                raise ConfigError(f"config.model.{field}: {msg()}")

    def _joint_checks(self):
        """(field, holds, message) for what involves more than one field; each runs only after the
        fields themselves passed their checks."""
        cudnn = self.attention == "cudnn"
        return (
            ("n_embd", lambda: self.n_embd % self.n_head == 0,
             lambda: f"{self.n_embd} is not divisible by model.n_head={self.n_head}"),
            ("attention", lambda: not cudnn or self.dtype in ("bfloat16", "float16"),
             lambda: f"'cudnn' needs model.dtype bfloat16 or float16, got {self.dtype!r}"),
            ("attention", lambda: not cudnn or self.dropout == 0.0,
             lambda: "'cudnn' has no attention dropout; set model.dropout=0"),
            ("position", lambda: self.position != "rope" or self.head_dim % 2 == 0,
             lambda: f"'rope' needs an even head size, got {self.head_dim}"),
        )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab(self) -> int:
        return padded_vocab(self)

    @property
    def mlp_hidden(self) -> int:
        if self.mlp == "swiglu":  # 8D/3 rounded up to a multiple of 32: 3 D F' ~ GPT-2's 2 D (4D)
            return -(-8 * self.n_embd // 96) * 32
        return 4 * self.n_embd

    @property
    def mup(self) -> bool:
        return self.parametrization == "mup"

    @property
    def width_mult(self) -> float:
        """muP's width multiplier n_embd / mup_base_width (1 under SP)."""
        return self.n_embd / self.mup_base_width if self.mup else 1.0


def padded_vocab(model_cfg) -> int:
    """Rows of the embedding table: vocab_size rounded up to a multiple of vocab_multiple (of a ModelConfig
    or the ConfigDict section)."""
    m = model_cfg.vocab_multiple
    return int(math.ceil(model_cfg.vocab_size / m) * m)
