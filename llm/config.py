"""Llama model definitions: the Hugging Face config.json fields and what they imply."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from common.checks import check_number
from common.errors import ConfigError
from llm.ops import LayerShape


@dataclass(frozen=True)
class LlamaConfig:
    """Mirrors the fields of a Hugging Face Llama `config.json` that cost depends on."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int | None = None  # defaults to hidden_size / num_attention_heads
    bytes_per_param: int = 2  # FP16/BF16
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        _check_shape(f"model {self.name}", {f.name: getattr(self, f.name) for f in fields(self)})

    @property
    def layer_shape(self) -> LayerShape:
        return LayerShape(self.hidden_size, self.intermediate_size, self.num_attention_heads,
                          self.num_key_value_heads,
                          self.head_dim or self.hidden_size // self.num_attention_heads,
                          self.bytes_per_param)

    @property
    def embedding_bytes(self) -> int:
        return self.vocab_size * self.hidden_size * self.bytes_per_param

    @property
    def lm_head_bytes(self) -> int:
        """The output projection plus the final norm; a tied head still needs its own copy
        on the last wafer of a pipeline."""
        return (self.vocab_size + 1) * self.hidden_size * self.bytes_per_param

    @property
    def parameters(self) -> int:
        head = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return (self.num_hidden_layers * self.layer_shape.weight_params
                + self.vocab_size * self.hidden_size + head + self.hidden_size)

    @property
    def weight_bytes(self) -> int:
        return (self.num_hidden_layers * self.layer_shape.weight_bytes + self.embedding_bytes
                + self.lm_head_bytes)

    @property
    def kv_bytes_per_token(self) -> int:
        return self.num_hidden_layers * self.layer_shape.kv_bytes_per_token

    @classmethod
    def from_json(cls, path: str | Path) -> LlamaConfig:
        """Load a Hugging Face `config.json`, as strictly as the Hugging Face loader builds a
        Llama from it: the fields cost depends on, of the right types, positive, the heads
        dividing the hidden size (unless `head_dim` is given) and the KV heads the heads."""
        where = f"--model: {path}"
        try:
            raw = json.loads(Path(path).read_text(), parse_constant=_no_constant)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot read: {' '.join(str(exc).split())}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: not a JSON object")
        missing = [f for f in REQUIRED_FIELDS if f not in raw]
        if missing:
            raise ConfigError(f"{where} lacks {', '.join(missing)}")
        kwargs = {k: raw[k] for k in (*REQUIRED_FIELDS, "num_key_value_heads", "head_dim", "tie_word_embeddings")
                  if raw.get(k) is not None}  # null: the Hugging Face default, as for an absent key
        kwargs.setdefault("num_key_value_heads", raw["num_attention_heads"])
        dtype_key = "torch_dtype" if raw.get("torch_dtype") is not None else "dtype"
        dtype = raw.get(dtype_key)
        if dtype is None:
            dtype = "bfloat16"
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            raise ConfigError(f"{where}: {dtype_key}: must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
        kwargs["bytes_per_param"] = DTYPE_BYTES[dtype]
        name = raw.get("_name_or_path")
        if name is not None and not isinstance(name, str):
            raise ConfigError(f"{where}: _name_or_path: must be a string, got {name!r}")
        _check_shape(where, kwargs)
        return cls(name=name or Path(path).stem, **kwargs)


REQUIRED_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
MAX_DIMENSION = 2**31 - 1  # what the Hugging Face kernels index with int32


def _no_constant(text: str):
    raise ValueError(f"{text} is not a number JSON allows")


def _check_shape(where: str, values: dict) -> None:
    """The fields of a Llama config that cost depends on: types, ranges and consistency."""
    for f in (*REQUIRED_FIELDS, "num_key_value_heads", "bytes_per_param", "head_dim"):
        if f in values and (f != "head_dim" or values[f] is not None):
            check_number(f"{where}: {f}", values[f], integer=True, low=1, high=MAX_DIMENSION)
    tie = values.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        raise ConfigError(f"{where}: tie_word_embeddings: must be true or false, got {tie!r}")
    heads, kv_heads = values["num_attention_heads"], values["num_key_value_heads"]
    if heads % kv_heads:
        raise ConfigError(f"{where}: num_attention_heads ({heads}) must be a multiple of "
                          f"num_key_value_heads ({kv_heads})")
    if values.get("head_dim") is None and values["hidden_size"] % heads:
        raise ConfigError(f"{where}: hidden_size ({values['hidden_size']}) must be a multiple of "
                          f"num_attention_heads ({heads}), or give head_dim")


# Figures: FACTS "Llama 3.1 architecture" (Hugging Face config.json).
MODEL_PRESETS: dict[str, LlamaConfig] = {
    m.name: m for m in (
        LlamaConfig("llama3.1-8b", 4096, 14336, 32, 32, 8, 128256),
        LlamaConfig("llama3.1-70b", 8192, 28672, 80, 64, 8, 128256),
        LlamaConfig("llama3.1-405b", 16384, 53248, 126, 128, 8, 128256),
    )
}


def resolve_model(name_or_path: str) -> LlamaConfig:
    """A preset name, or a path to a Hugging Face config.json."""
    if name_or_path in MODEL_PRESETS:
        return MODEL_PRESETS[name_or_path]
    if name_or_path.endswith(".json") or Path(name_or_path).is_file():
        return LlamaConfig.from_json(name_or_path)
    raise ConfigError(f"--model: unknown model {name_or_path!r}; presets are "
                      f"{', '.join(MODEL_PRESETS)} or a path to a config.json")
