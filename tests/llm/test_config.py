"""A Hugging Face `config.json`, read as strictly as the Hugging Face loader builds a Llama."""

import json

import pytest

from common.errors import ConfigError
from llm.config import MODEL_PRESETS, LlamaConfig

BASE = {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 128256}


def load(tmp_path, **changes):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in {**BASE, **changes}.items() if v is not ...}))
    return LlamaConfig.from_json(path)


def test_the_8b_config_reads_as_the_preset(tmp_path):
    cfg = load(tmp_path, torch_dtype="bfloat16", model_type="llama", rope_theta=500000.0)
    assert cfg.layer_shape == MODEL_PRESETS["llama3.1-8b"].layer_shape
    assert cfg.weight_bytes == MODEL_PRESETS["llama3.1-8b"].weight_bytes


def test_null_and_absent_keys_take_the_hugging_face_defaults(tmp_path):
    """No KV heads: as many as heads; null head_dim: hidden / heads; `dtype` (the newer
    key) as `torch_dtype`."""
    cfg = load(tmp_path, num_key_value_heads=None, head_dim=None, dtype="float32")
    assert cfg.num_key_value_heads == 32 and cfg.layer_shape.head_dim == 128 and cfg.bytes_per_param == 4
    assert load(tmp_path, num_key_value_heads=...).num_key_value_heads == 32


def test_a_given_head_dim_frees_the_hidden_size_from_the_heads(tmp_path):
    assert load(tmp_path, hidden_size=4100, head_dim=128).layer_shape.head_dim == 128


@pytest.mark.parametrize("changes,message", [
    ({"hidden_size": 4100}, "hidden_size (4100) must be a multiple of num_attention_heads (32)"),
    ({"num_key_value_heads": 5}, "num_attention_heads (32) must be a multiple of num_key_value_heads (5)"),
    ({"head_dim": -1}, "head_dim: must be >= 1, got -1"),
    ({"head_dim": 1.5}, "head_dim: must be an integer, got 1.5"),
    ({"hidden_size": 4096.0}, "hidden_size: must be an integer, got 4096.0"),
    ({"vocab_size": True}, "vocab_size: must be an integer, got True"),
    ({"num_hidden_layers": "32"}, "num_hidden_layers: must be an integer, got '32'"),
    ({"intermediate_size": 0}, "intermediate_size: must be >= 1, got 0"),
    ({"hidden_size": 2**31}, "hidden_size: must be at most 2,147,483,647"),
    ({"torch_dtype": "int4"}, "torch_dtype: must be one of float32, float16, bfloat16, got 'int4'"),
    ({"torch_dtype": 16}, "torch_dtype: must be one of"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings: must be true or false, got 'yes'"),
    ({"_name_or_path": 5}, "_name_or_path: must be a string, got 5"),
    ({"vocab_size": ...}, "lacks vocab_size"),
])
def test_what_the_loader_refuses_is_one_line_naming_the_field(tmp_path, changes, message):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, **changes)
    assert message in str(err.value) and str(err.value).startswith("--model: ")
    assert "\n" not in str(err.value)


def test_json_without_numbers_json_allows_is_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(BASE)[:-1] + ', "rope_theta": NaN}')
    with pytest.raises(ConfigError, match="NaN is not a number JSON allows"):
        LlamaConfig.from_json(path)


def test_a_config_built_in_python_is_checked_the_same_way():
    with pytest.raises(ConfigError, match="model m: hidden_size: must be an integer, got 4096.5"):
        LlamaConfig("m", 4096.5, 14336, 32, 32, 8, 128256)
