"""Every key tritonrepo writes for TensorRT-LLM's LLM API, nested keys included, is a field of the class that reads
it: Dynamo's engine YAMLs (`build --serving dynamo`) and the PyTorch path's extra options and `LLM(...)` arguments,
against the field lists of `tensorrt_llm/llmapi/llm_args.py` vendored in tests/data/trtllm-llmapi-fields.json (its
SOURCE note says which upstream commit and how it relates to 1.3.0rc29, the version Dynamo 1.6.1 runs).
TensorRT-LLM cannot run here: the check reads the classes' field names, as pydantic's extra="forbid" would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from dynamo_acceptance import WITH_VARIANTS

from tritonrepo.cli.main import cli
from tritonrepo.dynamo.manifest import load
from tritonrepo.hardware import parse_gpu
from tritonrepo.planning.llmapi import plan_llmapi
from tritonrepo.planning.planner import plan_deployment
from tritonrepo.planning.request import DeploymentRequest, LlmApiChoices
from tritonrepo.pytorch_path.llm_options import extra_options, llm_args
from tritonrepo.source.catalog import lookup

FIELDS = json.loads((Path(__file__).parent / "data" / "trtllm-llmapi-fields.json").read_text())
TOP = "TorchLlmArgs"


def _fields(cls: str) -> set[str]:
    names = set(FIELDS["classes"][cls])
    for base in FIELDS["bases"].get(cls, []):
        names |= _fields(base)
    return names


def _nested_class(cls: str, key: str, value: dict) -> str | None:
    target = FIELDS["nested"].get(cls, {}).get(key)
    if target and target.startswith("speculative_config"):
        spec = FIELDS["speculative_config"]
        return spec.get(value.get(spec["discriminator"]))
    return target


def unknown_keys(data: dict, cls: str = TOP, prefix: str = "") -> list[str]:
    """Dotted keys of `data` that `cls` (and the classes of its nested configs) does not declare."""
    unknown = []
    known = _fields(cls)
    for key, value in data.items():
        if key not in known:
            unknown.append(f"{prefix}{key} (not a field of {cls})")
        elif isinstance(value, dict):
            nested = _nested_class(cls, key, value)
            if nested is None:
                unknown.append(f"{prefix}{key} (no vendored class for this nested config)")
            else:
                unknown += unknown_keys(value, nested, f"{prefix}{key}.")
    return unknown


def bad_values(engine: dict) -> list[str]:
    """Values outside the choices the target's Literal/validators accept, for the keys whose values we pick."""
    bad = []
    for dotted, allowed in FIELDS["values"].items():
        section = {"TorchLlmArgs": engine, "MoeConfig": engine.get("moe_config"),
                   "CacheTransceiverConfig": engine.get("cache_transceiver_config"),
                   "KvCacheConfig": engine.get("kv_cache_config")}[dotted.split(".")[0]]  # fmt: skip
        key = dotted.split(".")[1]
        if section and key in section and section[key] not in allowed:
            bad.append(f"{dotted} = {section[key]!r}, not one of {allowed}")
    return bad


@pytest.fixture(scope="module", params=sorted(WITH_VARIANTS))
def engines(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "out"
    result = CliRunner().invoke(
        cli, ["-q", "build", "--serving", "dynamo", *WITH_VARIANTS[request.param], "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    manifest = load(out)
    return request.param, {g.role: yaml.safe_load((out / g.engine_config).read_text()) for g in manifest.workers}


def test_every_engine_yaml_key_is_an_llm_api_field_of_the_target_version(engines):
    name, by_role = engines
    assert by_role
    for role, engine in by_role.items():
        assert not unknown_keys(engine), f"{name} {role}: {unknown_keys(engine)}"


def test_engine_yaml_values_are_ones_the_target_version_accepts(engines):
    name, by_role = engines
    for role, engine in by_role.items():
        assert not bad_values(engine), f"{name} {role}: {bad_values(engine)}"


def test_the_nested_configs_we_write_are_all_checked(engines):
    """Guards the check itself: each nested config is walked into, not passed over."""
    _, by_role = engines
    for engine in by_role.values():
        for key, value in engine.items():
            if isinstance(value, dict):
                assert _nested_class(TOP, key, value), key


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda e: e.update(free_gpu_memory_fraction=0.9), "free_gpu_memory_fraction (not a field of TorchLlmArgs)"),
        (lambda e: e["kv_cache_config"].update(kv_cache_dtype="fp8"),
         "kv_cache_config.kv_cache_dtype (not a field of KvCacheConfig)"),
        (lambda e: e.update(cache_transceiver_config={"backend": "UCX", "max_tokens_in_buf": 1}),
         "cache_transceiver_config.max_tokens_in_buf (not a field of CacheTransceiverConfig)"),
        (lambda e: e.update(speculative_config={"decoding_type": "MTP", "num_nextn_layers": 1}),
         "speculative_config.num_nextn_layers (not a field of MTPDecodingConfig)"),
        (lambda e: e.update(pytorch_backend_config={"use_cuda_graph": True}),  # the 0.x schema
         "pytorch_backend_config (not a field of TorchLlmArgs)"),
        (lambda e: e.update(moe_config={"backend": "CUTLASS", "load_balancer": {"num_slot": 8}}),
         "moe_config.load_balancer.num_slot (not a field of MoeLoadBalancerConfig)"),
    ],
)  # fmt: skip
def test_a_wrong_key_is_named_with_its_class(change, expected):
    engine = {"backend": "pytorch", "kv_cache_config": {"free_gpu_memory_fraction": 0.8}}
    assert unknown_keys(engine) == []
    change(engine)
    assert unknown_keys(engine) == [expected]


def test_a_value_the_target_does_not_accept_is_named():
    engine = {"moe_config": {"backend": "WIDEEP"}, "cache_transceiver_config": {"backend": "ucx"}}
    assert len(bad_values(engine)) == 2 and "WIDEEP" in bad_values(engine)[0]


def _moe_plan(model: str, gpu: str, version: str):
    entry = lookup(model)
    request = DeploymentRequest(entry.name, llmapi=LlmApiChoices(trtllm_version=version))
    return plan_llmapi(entry.hf_id, entry.facts, parse_gpu(gpu), request, reasoning_parser="deepseek-r1",
                       display_name=entry.name)  # fmt: skip


def _dense_plan(model: str, gpu: str, **llmapi):
    entry = lookup(model)
    request = DeploymentRequest(entry.name, runtime="pytorch", llmapi=LlmApiChoices(**llmapi))
    deployment = plan_deployment(entry.name, entry.facts, parse_gpu(gpu), request, tensorrt_llm_available=False,
                                 model_ref=entry.hf_id)  # fmt: skip
    return deployment.llmapi


# PyTorch-path plans of the flat (1.x) schema: MoE rows of tests/test_pytorch_path.py's matrix (MTP, DeepGEMM with
# a MoE token budget, wide EP with the load balancer) and dense plans (chunked prefill, an FP8 KV cache).
PYTORCH_PLANS = {
    "r1-h200x8": lambda: _moe_plan("DeepSeek-R1", "H200 x8", "1.0.0"),
    "r1-b200x8-deepgemm": lambda: _moe_plan("DeepSeek-R1", "B200 x8", "1.0.0"),
    "r1-fp4-gb200x72-wideep": lambda: _moe_plan("DeepSeek-R1-FP4", "GB200 x72", "1.0.0"),
    "r1-0528-h20x8-1.2.1": lambda: _moe_plan("DeepSeek-R1-0528", "H20-141GB x8", "1.2.1"),
    "r1-h200x8-rc29": lambda: _moe_plan("DeepSeek-R1", "H200 x8", "1.3.0rc29"),
    "llama-70b-h100x8": lambda: _dense_plan("Llama-3.3-70B-Instruct", "H100-80GB x8"),
    "distill-8b-fp8-kv": lambda: _dense_plan("DeepSeek-R1-Distill-Llama-8B", "H100-80GB", kv_cache_dtype="fp8"),
}


@pytest.mark.parametrize("name", sorted(PYTORCH_PLANS))
def test_pytorch_path_options_and_llm_args_are_llm_api_fields(name):
    plan = PYTORCH_PLANS[name]()
    assert plan.schema == "flat"
    for what, data in (("extra options", extra_options(plan)), ("LLM(...) arguments", llm_args(plan))):
        assert not unknown_keys(data), f"{name} {what}: {unknown_keys(data)}"


# TensorRT-LLM removed the WIDEEP backend (PR #17797); the 1.3 target gets CUTEDSL (planning/llmapi_support.py)
def test_nvl72_wide_ep_engine_uses_a_moe_backend_the_target_accepts(tmp_path):
    args = ["--model", "nvidia/DeepSeek-R1-FP4", "--gpu", "GB200 x72"]
    result = CliRunner().invoke(cli, ["-q", "build", "--serving", "dynamo", *args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    engine = yaml.safe_load((tmp_path / "out" / "engine" / "agg.yaml").read_text())
    assert not unknown_keys(engine)
    assert not bad_values(engine), bad_values(engine)
