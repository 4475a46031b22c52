"""Llama configs and the pipeline planner."""

import json

import pytest

from cluster.serving.plan import plan_pipeline
from common.errors import ConfigError
from llm.config import MODEL_PRESETS, LlamaConfig, resolve_model
from wafer import WSE3


@pytest.mark.parametrize("name,params", [("llama3.1-8b", 8.03e9), ("llama3.1-70b", 70.55e9),
                                         ("llama3.1-405b", 405.9e9)])
def test_parameter_counts_match_facts(name, params):
    assert MODEL_PRESETS[name].parameters == pytest.approx(params, rel=2e-3)


def test_from_json_reads_a_hf_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                                "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
                                "torch_dtype": "bfloat16", "model_type": "llama"}))
    cfg = resolve_model(str(path))
    assert cfg.weight_bytes == MODEL_PRESETS["llama3.1-70b"].weight_bytes


def test_bad_json_is_a_config_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 10}))
    with pytest.raises(ConfigError, match="lacks"):
        LlamaConfig.from_json(path)


def test_70b_on_four_wafers_is_balanced_and_fits():
    plan = plan_pipeline(MODEL_PRESETS["llama3.1-70b"], WSE3, 4, 64 * 768)
    layers = [layer for s in plan.stages for layer in s.layers]
    assert layers == list(range(80))
    sizes = [s.weight_bytes for s in plan.stages]
    assert max(sizes) - min(sizes) <= MODEL_PRESETS["llama3.1-70b"].layer_shape.weight_bytes
    assert all(s.weight_bytes + s.kv_reserved_bytes <= WSE3.sram_bytes for s in plan.stages)


def test_70b_on_two_wafers_is_refused():
    with pytest.raises(ConfigError, match="needs 141.1 GB"):
        plan_pipeline(MODEL_PRESETS["llama3.1-70b"], WSE3, 2, 1)


def test_kv_that_does_not_fit_is_refused():
    with pytest.raises(ConfigError, match="KV cache"):
        plan_pipeline(MODEL_PRESETS["llama3.1-70b"], WSE3, 4, 10_000_000)
