"""The model catalog: names, Hub ids and architecture facts that match the published models."""

from __future__ import annotations

import json

import pytest

from tritonrepo.errors import ModelDownloadError
from tritonrepo.source.catalog import CATALOG, ModelFacts, lookup
from tritonrepo.source.resolve import model_facts, resolve_model


@pytest.mark.parametrize(
    "name, billions",
    [
        ("DeepSeek-R1-Distill-Qwen-1.5B", 1.78),
        ("DeepSeek-R1-Distill-Qwen-7B", 7.62),
        ("DeepSeek-R1-Distill-Llama-8B", 8.03),
        ("DeepSeek-R1-Distill-Qwen-14B", 14.77),
        ("DeepSeek-R1-Distill-Qwen-32B", 32.76),
        ("DeepSeek-R1-Distill-Llama-70B", 70.55),
        ("Llama-3.2-1B-Instruct", 1.24),
        ("Llama-3.2-3B-Instruct", 3.21),
        ("Qwen2.5-0.5B-Instruct", 0.49),
        ("Qwen2.5-72B-Instruct", 72.71),
        ("DeepSeek-R1", 671.0),
    ],
)
def test_parameter_counts_match_the_published_models(name, billions):
    assert lookup(name).facts.num_params / 1e9 == pytest.approx(billions, abs=0.01)


def test_all_six_r1_distills_are_reasoning_models_served_by_engines():
    distills = [e for e in CATALOG if e.family == "deepseek-r1-distill"]
    assert len(distills) == 6
    assert all(e.reasoning and e.serving_path == "tensorrtllm" for e in distills)
    assert {e.facts.architecture for e in distills} == {"LlamaForCausalLM", "Qwen2ForCausalLM"}


def test_deepseek_v3_architecture_models_take_the_pytorch_path():
    for name in ("DeepSeek-R1", "DeepSeek-R1-0528", "DeepSeek-V3", "DeepSeek-R1-FP4"):
        assert lookup(name).serving_path == "pytorch"
    assert lookup("nvidia/DeepSeek-R1-FP4").facts.native_dtype == "nvfp4"


def test_lookup_by_short_name_or_hub_id_ignoring_case():
    entry = lookup("deepseek-r1-distill-llama-8b")
    assert entry.hf_id == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    assert lookup("deepseek-ai/DeepSeek-R1-Distill-Llama-8B") is entry
    assert lookup("no-such-model") is None


def test_mla_caches_one_latent_per_layer():
    facts = lookup("DeepSeek-R1").facts
    assert facts.kv_cache_bytes_per_token(1) == 61 * (512 + 64)


def test_facts_from_a_config_json(tiny_model_dir):
    facts = ModelFacts.from_config(json.loads((tiny_model_dir / "config.json").read_text()))
    assert (facts.architecture, facts.num_layers, facts.num_kv_heads, facts.head_dim) == ("LlamaForCausalLM", 2, 2, 16)
    import safetensors.numpy

    tensors = safetensors.numpy.load_file(str(tiny_model_dir / "model.safetensors"))
    assert facts.num_params == sum(t.size for t in tensors.values())  # the formula counts exactly what is stored


def test_model_facts_for_planning_offline(tiny_model_dir):
    assert model_facts("DeepSeek-R1-Distill-Llama-8B")[0] == "DeepSeek-R1-Distill-Llama-8B"
    name, facts = model_facts(str(tiny_model_dir))
    assert name == tiny_model_dir.name and facts.num_layers == 2
    with pytest.raises(ModelDownloadError, match="not in the catalog, and the Hub is unreachable"):
        model_facts("someone/uncached-model", offline=True)


def test_a_catalog_short_name_downloads_its_hub_id():
    with pytest.raises(ModelDownloadError, match="deepseek-ai/DeepSeek-R1-Distill-Llama-8B is not in the local cache"):
        resolve_model("DeepSeek-R1-Distill-Llama-8B", offline=True)


def test_models_lists_the_embedded_models_and_says_what_they_are():
    from click.testing import CliRunner

    from tritonrepo.cli.main import cli
    from tritonrepo.source.resolve import EMBEDDED_MODELS
    from tritonrepo.source.scripted_llama import DEFAULT_SCRIPT, expected_reasoning_and_answer

    output = CliRunner().invoke(cli, ["models"]).output
    lines = {line.split()[0]: line for line in output.splitlines() if line.startswith("  ")}
    assert set(EMBEDDED_MODELS) == {"tiny-llama", "scripted-llama"} <= set(lines)
    assert "random weights" in lines["tiny-llama"] and "gibberish by design" in lines["tiny-llama"]
    answer = expected_reasoning_and_answer(DEFAULT_SCRIPT)[1].strip()
    assert "fixed by construction" in lines["scripted-llama"] and f"'{answer}'" in lines["scripted-llama"]
    assert "deepseek-ai/DeepSeek-R1-Distill-Llama-8B" in lines["DeepSeek-R1-Distill-Llama-8B"]  # the catalog follows
