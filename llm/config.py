"""Llama model definitions: the Hugging Face config.json fields and what they imply."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

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
        for f in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "vocab_size", "bytes_per_param"):
            value = getattr(self, f)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"model {self.name}: {f} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"model {self.name}: num_attention_heads ({self.num_attention_heads}) "
                              f"must be a multiple of num_key_value_heads ({self.num_key_value_heads})")

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
        """Load a Hugging Face `config.json`."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--model: cannot read {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"--model: {path} is not a JSON object")
        known = {f.name for f in fields(cls)}
        kwargs = {k: raw[k] for k in known if k in raw and k != "name"}
        missing = [f for f in ("hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "vocab_size") if f not in raw]
        if missing:
            raise ConfigError(f"--model: {path} lacks {', '.join(missing)}")
        kwargs.setdefault("num_key_value_heads", raw["num_attention_heads"])
        dtype = raw.get("torch_dtype", "bfloat16")
        kwargs["bytes_per_param"] = {"float32": 4, "float16": 2, "bfloat16": 2}.get(dtype, 2)
        return cls(name=raw.get("_name_or_path") or Path(path).stem, **kwargs)


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
