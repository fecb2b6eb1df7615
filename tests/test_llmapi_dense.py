"""TensorRT-LLM's PyTorch backend for dense models (--runtime pytorch): layouts and limits sized from the hardware,
deployments whose LLM-API options use only the backend's fields, refusals with numbers, and the engine path staying
the default. TensorRT-LLM cannot run here: options are checked against the LLM-API field names (TensorRT-LLM
tensorrt_llm/llmapi/llm_args.py, 1.x), commands are parsed, and the llmapi repository passes `validate`."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml
from click.testing import CliRunner

from tritonrepo.cli.main import cli
from tritonrepo.errors import PlanDoesNotFitError, PlanError
from tritonrepo.hardware import parse_gpu
from tritonrepo.planning.build import build
from tritonrepo.planning.dynamo import plan_dynamo
from tritonrepo.planning.llmapi_dense import USEFUL_SEQUENCES, layout
from tritonrepo.planning.planner import plan_deployment
from tritonrepo.planning.request import DeploymentRequest, DynamoChoices, LlmApiChoices
from tritonrepo.pytorch_path import launch_files
from tritonrepo.pytorch_path.llm_options import extra_options, llm_args
from tritonrepo.repository.manifest import MANIFEST
from tritonrepo.repository.validate import check_repository
from tritonrepo.source.catalog import lookup

# LLM-API fields a dense plan may write (TorchLlmArgs / BaseLlmArgs, KvCacheConfig, CudaGraphConfig at 1.x).
FLAT_OPTION_KEYS = {
    "enable_attention_dp", "kv_cache_config.free_gpu_memory_fraction", "kv_cache_config.dtype",
    "cuda_graph_config.enable_padding", "cuda_graph_config.max_batch_size", "stream_interval", "enable_chunked_prefill",
}  # fmt: skip
LLM_ARG_KEYS = FLAT_OPTION_KEYS | {
    "model", "backend", "tensor_parallel_size", "pipeline_parallel_size", "max_batch_size", "max_num_tokens",
    "max_seq_len", "trust_remote_code",
}  # fmt: skip


def _keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys |= _keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return keys


def _plan(model: str, gpu: str, **options):
    entry = lookup(model)
    llmapi = LlmApiChoices(**{k: options.pop(k) for k in ("profile", "serving", "kv_cache_dtype") if k in options})
    request = DeploymentRequest(entry.name, runtime="pytorch", llmapi=llmapi, **options)
    return plan_deployment(entry.name, entry.facts, parse_gpu(gpu), request, tensorrt_llm_available=False,
                           model_ref=entry.hf_id)  # fmt: skip


# (model, gpu, extra request options) -> (tp, pp, nodes, gpus per node)
LAYOUTS = [
    ("DeepSeek-R1-Distill-Llama-8B", "H100-80GB", {}, (1, 1, 1, 1)),
    ("DeepSeek-R1-Distill-Llama-8B", "A100-40GB", {}, (1, 1, 1, 1)),
    ("DeepSeek-R1-Distill-Llama-8B", "L4 x2", {}, (2, 1, 1, 2)),  # on one L4 the KV cache holds 3 sequences
    ("Llama-3.3-70B-Instruct", "H100-80GB x8", {}, (2, 1, 1, 2)),
    ("Qwen2.5-7B-Instruct", "L4", {}, (1, 1, 1, 1)),
    ("Llama-3.1-70B-Instruct", "L4 x16", {"max_seq_len": 32768}, (8, 2, 2, 8)),  # past a node: pipeline stages
]


@pytest.mark.parametrize("model,gpu,options,expected", LAYOUTS, ids=[f"{m}-{g}" for m, g, _, _ in LAYOUTS])
def test_dense_layouts_are_the_fewest_gpus_that_leave_a_useful_kv_cache(model, gpu, options, expected):
    plan = _plan(model, gpu, **options)
    llmapi, sizing = plan.llmapi, plan.llmapi.sizing
    assert (sizing.tp_size, sizing.pp_size, sizing.nodes, sizing.gpus_per_node) == expected
    assert plan.runtime == "pytorch" and not llmapi.moe and sizing.ep_size == 1
    assert plan.memory.max_sequences >= USEFUL_SEQUENCES
    if sizing.tp_size > 1 and sizing.pp_size == 1:  # one size smaller would not have held enough sequences
        entry, hardware = lookup(model), parse_gpu(gpu)
        with pytest.raises(PlanDoesNotFitError):
            layout(model, entry.facts, hardware, max_seq_len=llmapi.max_seq_len, max_num_tokens=llmapi.max_num_tokens,
                   max_batch_size=256, kv_fraction=0.8, kv_bytes=2, tp_size=sizing.tp_size // 2)  # fmt: skip
    # The batch is what the KV cache holds at half the context, within the profile's cap; graphs up to it.
    held = plan.memory.kv_cache_tokens // (llmapi.max_seq_len // 2)
    assert llmapi.max_batch_size == min(256, held)
    assert llmapi.cuda_graph_max_batch_size == min(128, llmapi.max_batch_size)
    assert llmapi.kv_cache_free_gpu_memory_fraction == 0.8
    assert llmapi.chunked_prefill == (llmapi.max_seq_len > llmapi.max_num_tokens)
    options = extra_options(llmapi)
    assert _keys(options) <= FLAT_OPTION_KEYS and "moe_config" not in options and "speculative_config" not in options
    assert _keys(llm_args(llmapi)) <= LLM_ARG_KEYS
    argv = shlex.split(shlex.join(launch_files.trtllm_serve_argv(llmapi, "/d/o.yml")))
    assert argv[argv.index("--tp_size") + 1] == str(sizing.tp_size)
    assert argv[argv.index("--pp_size") + 1] == str(sizing.pp_size)
    assert argv[argv.index("--max_batch_size") + 1] == str(llmapi.max_batch_size)


def test_the_latency_profile_and_an_fp8_kv_cache():
    latency = _plan("Llama-3.1-8B-Instruct", "H100-80GB", profile="latency")
    assert latency.llmapi.max_batch_size == 32 and latency.llmapi.stream_interval == 1
    fp8 = _plan("Llama-3.1-8B-Instruct", "L4", kv_cache_dtype="fp8")
    assert extra_options(fp8.llmapi)["kv_cache_config"]["dtype"] == "fp8"
    assert fp8.llmapi.sizing.tp_size == 1  # bf16 KV needs two L4s for this model (test above), fp8 KV one


def test_the_plan_says_which_path_why_and_how_to_pick_the_other():
    pytorch = _plan("Llama-3.1-8B-Instruct", "H100-80GB")
    assert "--runtime pytorch" in pytorch.reason and "--runtime tensorrtllm" in pytorch.reason
    entry = lookup("Llama-3.1-8B-Instruct")
    default = plan_deployment(entry.name, entry.facts, parse_gpu("H100-80GB"), DeploymentRequest(entry.name),
                              tensorrt_llm_available=True, model_ref=entry.hf_id)  # fmt: skip
    assert default.runtime == "tensorrtllm"  # the engine path stays the default
    assert any("--runtime pytorch" in note for note in default.notes)
    result = CliRunner().invoke(cli, ["plan", "--offline", "--model", "Qwen2.5-7B-Instruct", "--runtime", "pytorch",
                                      "--gpu", "L4"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "runtime       pytorch: --runtime pytorch" in result.output and "memory / GPU" in result.output


@pytest.mark.parametrize(
    "model, gpu, options, words",
    [
        (
            "Llama-3.3-70B-Instruct",
            "A100-40GB",
            {},
            [
                "does not fit 1x A100-40GB",
                "weights 131.4 GiB per GPU of 40.0 GiB",
                "0 sequence(s) of 8192",
                "--gpu 'A100-40GB x4'",
            ],
        ),
        ("Llama-3.1-8B-Instruct", "L4", {}, ["3 sequence(s) of 8192", "--gpu 'L4 x2'", "--kv-cache-dtype fp8"]),
        ("Llama-3.1-8B-Instruct", "T4", {}, ["SM75", "Ampere (SM80)", "--runtime tensorrtllm"]),
        ("Llama-3.1-8B-Instruct", "H100-80GB", {"quantization": "fp8"}, ["--quantization", "FP8 checkpoint"]),
        ("Llama-3.1-8B-Instruct", "A100-40GB", {"kv_cache_dtype": "fp8"}, ["SM89"]),
        ("Llama-3.1-8B-Instruct", "H100-80GB x2", {"tp_size": 4}, ["needs 4 GPUs", "has 2"]),
    ],  # fmt: skip
)
def test_refusals_carry_the_numbers_and_what_would_fit(model, gpu, options, words):
    with pytest.raises(PlanError) as error:
        _plan(model, gpu, **options)
    text = f"{error.value} {error.value.hint or ''}"
    for word in words:
        assert word in text, text


def test_build_writes_a_trtllm_serve_deployment_for_a_dense_model(tmp_path):
    result = build(DeploymentRequest(model="Llama-3.1-8B-Instruct", runtime="pytorch", gpu="L4 x2",
                                     output=tmp_path / "llama", offline=True))  # fmt: skip
    folder = result.path
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["runtime"] == "pytorch" and manifest["serving"] == "trtllm-serve"
    assert manifest["plan"]["llmapi"]["sizing"]["tp_size"] == 2
    options = yaml.safe_load((folder / launch_files.OPTIONS_FILE).read_text())
    assert _keys(options) <= FLAT_OPTION_KEYS and options["cuda_graph_config"]["enable_padding"] is True
    assert "(dense model)" in (folder / launch_files.OPTIONS_FILE).read_text()
    serve = (folder / launch_files.SERVE_SCRIPT).read_text()
    assert "trtllm-serve meta-llama/Llama-3.1-8B-Instruct" in serve and "--tp_size 2" in serve


def test_build_with_serving_triton_writes_a_valid_llmapi_repository_for_a_dense_model(tmp_path):
    target = tmp_path / "qwen"
    build(DeploymentRequest(model="Qwen2.5-7B-Instruct", runtime="pytorch", gpu="H100-80GB", output=target,
                            offline=True, llmapi=LlmApiChoices(serving="triton")))  # fmt: skip
    check_repository(target)
    model_yaml = yaml.safe_load((target / "tensorrt_llm/1/model.yaml").read_text())
    assert _keys({k: v for k, v in model_yaml.items() if k != "triton_config"}) <= LLM_ARG_KEYS
    assert model_yaml["model"] == "Qwen/Qwen2.5-7B-Instruct" and model_yaml["tensor_parallel_size"] == 1
    assert model_yaml["triton_config"]["max_batch_size"] == model_yaml["max_batch_size"]


def test_the_cli_builds_with_runtime_pytorch_and_refuses_what_does_not_fit_writing_nothing(tmp_path):
    ok = CliRunner().invoke(cli, ["-q", "build", "--offline", "--model", "DeepSeek-R1-Distill-Qwen-7B", "--runtime",
                                  "pytorch", "--gpu", "A100-80GB", "--output", str(tmp_path / "ok")])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    refused = CliRunner().invoke(cli, ["-q", "build", "--offline", "--model", "Llama-3.3-70B-Instruct", "--runtime",
                                       "pytorch", "--gpu", "L4", "--output", str(tmp_path / "no")])  # fmt: skip
    assert refused.exit_code == 3 and "does not fit" in refused.output
    assert not (tmp_path / "no").exists()


def test_export_dstack_with_runtime_pytorch_is_a_trtllm_serve_service(tmp_path):
    out = tmp_path / "dstack"
    result = CliRunner().invoke(cli, ["export", "dstack", "--offline", "--model", "Llama-3.1-8B-Instruct",
                                      "--runtime", "pytorch", "--gpu", "H100-80GB", "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    service = yaml.safe_load((out / "serve.dstack.yml").read_text())
    assert service["type"] == "service" and not (out / "build.dstack.yml").exists()
    assert any(c.startswith("trtllm-serve meta-llama/Llama-3.1-8B-Instruct") for c in service["commands"])


def test_dynamo_dense_workers_are_sized_by_the_same_rule():
    entry = lookup("Llama-3.3-70B-Instruct")
    hardware = parse_gpu("H100-80GB x8")
    plan = plan_dynamo(entry.name, entry.hf_id, entry.facts, hardware,
                       DeploymentRequest(entry.name, dynamo=DynamoChoices()))  # fmt: skip
    chosen = layout(entry.name, entry.facts, hardware, max_seq_len=plan.max_seq_len, max_num_tokens=8192,
                    max_batch_size=64, kv_fraction=0.85, kv_bytes=2, allow_pp=False)  # fmt: skip
    assert [w.gpus_per_worker for w in plan.workers] == [chosen.tp_size] and plan.workers[0].replicas == 8 // 2
