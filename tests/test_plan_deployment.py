"""The deployment plan against expected values for GPU profiles, including the seed recipe and refusals."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tritonrepo.cli.main import cli
from tritonrepo.errors import PlanDoesNotFitError, PlanError
from tritonrepo.hardware import parse_gpu
from tritonrepo.planning.memory import GIB
from tritonrepo.planning.planner import plan_deployment
from tritonrepo.planning.request import DeploymentRequest
from tritonrepo.source.catalog import lookup

SEED = {"max_seq_len": 8192, "max_input_len": 4096, "max_batch_size": 256}


def _plan(model: str, gpu: str, **choices):
    entry = lookup(model)
    request = DeploymentRequest(model, **choices)
    return plan_deployment(entry.name, entry.facts, parse_gpu(gpu), request, tensorrt_llm_available=True)


def test_seed_recipe_distill_llama_8b_on_one_a100_40gb():
    plan = _plan("DeepSeek-R1-Distill-Llama-8B", "A100-40GB", **SEED)
    assert plan.runtime == "tensorrtllm"
    assert (plan.tp_size, plan.pp_size) == (1, 1)
    assert (plan.limits.max_seq_len, plan.limits.max_input_len, plan.limits.max_batch_size) == (8192, 4096, 256)
    assert (plan.dtype, plan.gemm_plugin, plan.gpt_attention_plugin) == ("bfloat16", "bfloat16", "bfloat16")
    assert plan.use_paged_context_fmha and not plan.enable_chunked_context
    memory = plan.memory
    assert 14.9 * GIB < memory.weights < 15.1 * GIB  # 8.03B parameters x 2 bytes
    assert memory.kv_cache_per_token == 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads of 128, bf16
    assert 10 <= memory.max_sequences <= 30


def test_an_8b_model_on_h100_has_room_for_many_more_sequences():
    a100 = _plan("DeepSeek-R1-Distill-Llama-8B", "A100-40GB", **SEED)
    h100 = _plan("DeepSeek-R1-Distill-Llama-8B", "H100-80GB", **SEED)
    assert h100.tp_size == 1
    assert h100.memory.max_sequences > 2 * a100.memory.max_sequences


def test_a_70b_model_on_8_h200_takes_the_smallest_tensor_parallel_that_leaves_a_useful_cache():
    plan = _plan("DeepSeek-R1-Distill-Llama-70B", "H200 x8", **SEED)
    assert plan.tp_size == 2  # one H200 holds the weights but almost no KV cache
    assert plan.memory.max_sequences >= 4
    assert any("2 of 8 GPUs" in note for note in plan.notes)


def test_a_70b_model_on_one_a100_40gb_is_refused_with_numbers_and_nearest_plans():
    with pytest.raises(PlanDoesNotFitError) as raised:
        _plan("DeepSeek-R1-Distill-Llama-70B", "A100-40GB", **SEED)
    message = str(raised.value)
    assert "131.4 GiB per GPU of 40.0 GiB" in message
    assert "--gpu 'A100-40GB x4' (tensor parallel 4" in message
    assert "fp8" not in message  # an A100 cannot run FP8, so it is not offered


def test_a_model_that_needs_tensor_parallel_on_l4():
    with pytest.raises(PlanDoesNotFitError, match=r"--gpu 'L4 x2' \(tensor parallel 2"):
        _plan("DeepSeek-R1-Distill-Qwen-14B", "L4")
    plan = _plan("DeepSeek-R1-Distill-Qwen-14B", "L4 x4")
    assert plan.tp_size == 2 and plan.memory.max_sequences >= 4


def test_fp8_halves_the_weights_on_gpus_that_support_it_and_is_refused_before_sm89():
    bf16 = _plan("DeepSeek-R1-Distill-Qwen-14B", "L4 x2")
    fp8 = _plan("DeepSeek-R1-Distill-Qwen-14B", "L4", quantization="fp8")
    assert (fp8.weight_dtype, fp8.kv_cache_dtype, fp8.gemm_plugin) == ("fp8", "fp8", "fp8")
    assert fp8.memory.weights == pytest.approx(bf16.memory.weights, rel=0.01)  # half the bytes on half the GPUs
    kv_only = _plan("DeepSeek-R1-Distill-Llama-8B", "L4", quantization="fp8-kv")
    assert (kv_only.weight_dtype, kv_only.kv_cache_dtype) == ("bfloat16", "fp8")
    assert not kv_only.use_paged_context_fmha  # TensorRT-LLM refuses FP8 KV + paged context FMHA on bf16 weights
    with pytest.raises(PlanError, match="SM89 and newer.*A100-40GB is SM80"):
        _plan("DeepSeek-R1-Distill-Llama-8B", "A100-40GB", quantization="fp8")


def test_gpus_before_ampere_get_float16():
    plan = _plan("Qwen2.5-1.5B-Instruct", "T4", max_seq_len=4096)
    assert plan.dtype == plan.gemm_plugin == "float16"


def test_long_inputs_enable_chunked_context():
    plan = _plan("DeepSeek-R1-Distill-Llama-8B", "H100-80GB", max_seq_len=32768, max_input_len=16384)
    assert plan.enable_chunked_context and plan.max_num_tokens == 8192


def test_forced_parallelism_is_checked_against_the_gpus():
    assert _plan("DeepSeek-R1-Distill-Llama-8B", "H100-80GB x4", tp_size=4).tp_size == 4
    with pytest.raises(PlanError, match="needs 8 GPUs"):
        _plan("DeepSeek-R1-Distill-Llama-8B", "H100-80GB x4", tp_size=4, pp_size=2)


def test_without_a_gpu_the_portable_runtime_is_planned():
    entry = lookup("DeepSeek-R1-Distill-Llama-8B")
    plan = plan_deployment(
        entry.name, entry.facts, parse_gpu("H100-80GB"), DeploymentRequest(entry.name), tensorrt_llm_available=False
    )
    assert plan.runtime == "hf" and "TensorRT-LLM not found" in plan.reason


def test_deepseek_r1_takes_the_pytorch_path():
    plan = _plan("DeepSeek-R1", "H200 x8")
    assert plan.runtime == "pytorch" and "mixture-of-experts" in plan.reason


def test_cli_plan_json_offline_for_the_seed_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(
        cli, ["plan", "--model", "DeepSeek-R1-Distill-Llama-8B", "--gpu", "A100-40GB", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["runtime"] == "tensorrtllm" and data["tp_size"] == 1
    assert data["hardware"]["gpu"]["name"] == "A100-40GB"
    assert data["facts"]["num_params"] == lookup("DeepSeek-R1-Distill-Llama-8B").facts.num_params
    assert data["memory"]["max_sequences"] > 0


def test_cli_plan_table_and_refusal():
    runner = CliRunner()
    table = runner.invoke(cli, ["plan", "--model", "DeepSeek-R1-Distill-Llama-8B", "--gpu", "H100-80GB"])
    assert table.exit_code == 0 and "KV cache" in table.stdout and "NGC TensorRT-LLM container" in table.stdout
    refused = runner.invoke(cli, ["plan", "--model", "DeepSeek-R1-Distill-Llama-70B", "--gpu", "A100-40GB"])
    assert refused.exit_code == 3 and "Nearest plans that fit" in refused.stderr
    unknown = runner.invoke(cli, ["plan", "--model", "DeepSeek-R1-Distill-Llama-8B", "--gpu", "Z9000"])
    assert unknown.exit_code == 3 and "A100-40GB" in unknown.stderr
