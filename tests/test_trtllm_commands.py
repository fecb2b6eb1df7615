"""The pure translations: spec validation, trtllm-build argv per version, and the convert worker's request."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tritonrepo.trtllm.commands import convert_request, trtllm_build_args
from tritonrepo.trtllm.spec import EngineBuildSpec

# trtllm-build settings of the seed recipe (dstack, DeepSeek-R1-Distill-Llama-8B on one A100-40GB, TensorRT-LLM 0.17).
SEED_BUILD_FLAGS = {
    "--gemm_plugin": "bfloat16",
    "--gpt_attention_plugin": "bfloat16",
    "--use_paged_context_fmha": "enable",
    "--max_seq_len": "8192",
    "--max_input_len": "4096",
    "--max_batch_size": "256",
}


def flags(args: list[str]) -> dict[str, str]:
    """argv -> {flag: value}; every flag takes a value and appears once (what argparse would accept)."""
    assert len(args) % 2 == 0, args
    names = args[0::2]
    assert all(name.startswith("--") for name in names), args
    assert len(set(names)) == len(names), f"repeated flag in {args}"
    return dict(zip(names, args[1::2], strict=True))


def seed_spec(tmp_path: Path, **changes) -> EngineBuildSpec:
    """The dstack recipe (seed 000): DeepSeek-R1-Distill-Llama-8B, bf16, one GPU, paged context FMHA."""
    spec = EngineBuildSpec(
        architecture="LlamaForCausalLM",
        hf_dir=tmp_path / "DeepSeek-R1-Distill-Llama-8B",
        checkpoint_dir=tmp_path / "tllm_checkpoint_1gpu_bf16",
        engine_dir=tmp_path / "tllm_engine_1gpu_bf16",
        log_path=tmp_path / "build.log",
        dtype="bfloat16",
        tp_size=1,
        max_batch_size=256,
        max_input_len=4096,
        max_seq_len=8192,
        gemm_plugin="bfloat16",
        gpt_attention_plugin="bfloat16",
        use_paged_context_fmha=True,
    )
    return replace(spec, **changes)


def test_seed_recipe_flags(tmp_path):
    spec = seed_spec(tmp_path)
    got = flags(trtllm_build_args(spec, "0.17.0"))
    expected = {
        "--checkpoint_dir": str(tmp_path / "tllm_checkpoint_1gpu_bf16"),
        "--output_dir": str(tmp_path / "tllm_engine_1gpu_bf16"),
        **SEED_BUILD_FLAGS,
    }
    assert expected.items() <= got.items()
    assert got["--kv_cache_type"] == "paged"
    assert "--workers" not in got  # one rank, one worker
    assert "--max_num_tokens" not in got  # left to trtllm-build's default unless asked for


def test_output_dir_override_for_staging(tmp_path):
    got = flags(trtllm_build_args(seed_spec(tmp_path), "0.17.0", output_dir=tmp_path / "x.partial"))
    assert got["--output_dir"] == str(tmp_path / "x.partial")


@pytest.mark.parametrize(("tp", "pp", "workers", "expected"), [(4, 1, None, "4"), (2, 2, None, "4"), (4, 1, 2, "2")])
def test_workers_for_multi_gpu(tmp_path, tp, pp, workers, expected):
    spec = seed_spec(tmp_path, tp_size=tp, pp_size=pp, workers=workers)
    assert spec.world_size == tp * pp
    assert flags(trtllm_build_args(spec, "0.17.0"))["--workers"] == expected


def test_workers_never_exceed_ranks(tmp_path):
    spec = seed_spec(tmp_path, tp_size=2, workers=8)
    assert flags(trtllm_build_args(spec, "0.20.0"))["--workers"] == "2"


@pytest.mark.parametrize("version", ["0.14.0", "0.17.0", "0.20.0", "1.0.0", "1.2.1"])
def test_kv_cache_type_flag_for_supported_versions(tmp_path, version):
    got = flags(trtllm_build_args(seed_spec(tmp_path), version))
    assert got["--kv_cache_type"] == "paged" and "--paged_kv_cache" not in got


def test_version_without_kv_cache_type_gets_the_older_flag(tmp_path):
    got = flags(trtllm_build_args(seed_spec(tmp_path), "0.12.0"))
    assert got["--paged_kv_cache"] == "enable" and "--kv_cache_type" not in got


@pytest.mark.parametrize(("quantization", "fp8_fmha"), [("none", "disable"), ("fp8", "enable")])
def test_fp8_context_fmha_follows_fp8_weights(tmp_path, quantization, fp8_fmha):
    got = flags(trtllm_build_args(seed_spec(tmp_path, quantization=quantization), "1.0.0"))
    assert got["--use_fp8_context_fmha"] == fp8_fmha


def test_fp8_kv_without_paged_context_fmha(tmp_path):
    spec = seed_spec(tmp_path, quantization="fp8_kv", use_paged_context_fmha=False)
    got = flags(trtllm_build_args(spec, "0.17.0"))
    assert got["--use_paged_context_fmha"] == "disable" and got["--use_fp8_context_fmha"] == "disable"


def test_max_num_tokens_when_set(tmp_path):
    got = flags(trtllm_build_args(seed_spec(tmp_path, max_num_tokens=16384), "0.17.0"))
    assert got["--max_num_tokens"] == "16384"


def test_convert_request_is_json_and_complete(tmp_path):
    spec = seed_spec(tmp_path, tp_size=4)
    request = json.loads(json.dumps(convert_request(spec)))
    assert request["architecture"] == "LlamaForCausalLM"
    assert request["hf_dir"] == str(spec.hf_dir) and request["checkpoint_dir"] == str(spec.checkpoint_dir)
    assert (request["tp_size"], request["pp_size"], request["world_size"]) == (4, 1, 4)
    assert request["dtype"] == "bfloat16"
    assert (request["quant_algo"], request["kv_cache_quant_algo"]) == (None, None)
    assert convert_request(spec, checkpoint_dir=tmp_path / "c.partial")["checkpoint_dir"] == str(tmp_path / "c.partial")


@pytest.mark.parametrize(
    ("quantization", "algos", "paged"), [("fp8", ("FP8", "FP8"), True), ("fp8_kv", (None, "FP8"), False)]
)
def test_convert_request_quantization(tmp_path, quantization, algos, paged):
    spec = seed_spec(tmp_path, quantization=quantization, use_paged_context_fmha=paged)
    request = convert_request(spec)
    assert (request["quant_algo"], request["kv_cache_quant_algo"]) == algos
    assert request["calib_dataset"] == "cnn_dailymail" and request["calib_size"] == 512


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architecture": "MistralForCausalLM"}, "architecture"),
        ({"dtype": "float32"}, "dtype"),
        ({"quantization": "int4"}, "quantization"),
        ({"gemm_plugin": "half"}, "gemm_plugin"),
        ({"tp_size": 0}, "tp_size"),
        ({"max_input_len": 9000}, "exceeds max_seq_len"),
        ({"quantization": "fp8_kv"}, "paged context FMHA"),
        ({"workers": 0}, "workers"),
    ],
)
def test_spec_rejects_what_trtllm_would(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        seed_spec(tmp_path, **changes)


def test_spec_rejects_shared_folders(tmp_path):
    with pytest.raises(ValueError, match="different folders"):
        seed_spec(tmp_path, engine_dir=tmp_path / "tllm_checkpoint_1gpu_bf16")


def test_spec_accepts_strings_for_paths(tmp_path):
    spec = seed_spec(tmp_path, log_path=str(tmp_path / "x.log"))
    assert isinstance(spec.log_path, Path)
