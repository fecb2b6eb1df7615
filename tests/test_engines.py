"""The engine stage: plan -> trtllm-build settings, a build through the real adapter against the TensorRT-LLM
TEST DOUBLE (TensorRT-LLM cannot run here), and the guard that refuses mismatched engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from doubles import trtllm_double
from test_trtllm_commands import SEED_BUILD_FLAGS, flags

from tritonrepo import build as build_module
from tritonrepo.build import BuildRequest, build
from tritonrepo.engines import build_command, check_engines, engine_spec
from tritonrepo.errors import EngineBuildError, EngineMismatchError
from tritonrepo.hardware import parse_gpu
from tritonrepo.plan import PlanRequest, plan_deployment
from tritonrepo.repository.manifest import MANIFEST
from tritonrepo.repository.validate import validate_repository
from tritonrepo.source.catalog import lookup
from tritonrepo.trtllm.commands import trtllm_build_args


def _seed_plan():
    entry = lookup("DeepSeek-R1-Distill-Llama-8B")
    request = PlanRequest(max_seq_len=8192, max_input_len=4096, max_batch_size=256)
    return plan_deployment(entry.name, entry.facts, parse_gpu("A100-40GB"), request, tensorrt_llm_available=True)


def test_the_seed_recipe_plan_gives_the_seed_trtllm_build_settings(tmp_path):
    spec = engine_spec(_seed_plan(), tmp_path / "hf", tmp_path / "work")
    got = flags(trtllm_build_args(spec, "0.17.0"))  # the 25.01 container of the seed
    assert {flag: got.get(flag) for flag in SEED_BUILD_FLAGS} == SEED_BUILD_FLAGS
    assert got["--checkpoint_dir"].endswith("checkpoint") and got["--output_dir"].endswith("engine")
    assert "tp_size" not in json.dumps(got)  # one GPU: nothing parallel to configure


def test_plan_command_shows_the_trtllm_build_line():
    line = build_command(_seed_plan(), "0.17.0")
    assert line.startswith("trtllm-build --checkpoint_dir WORK/checkpoint")
    assert "--max_batch_size 256" in line and "--use_paged_context_fmha enable" in line


@pytest.fixture
def h100_with_tensorrt_llm(monkeypatch, tmp_path):
    """This machine as if it had one H100 and TensorRT-LLM; the TensorRT-LLM here is the TEST DOUBLE."""
    monkeypatch.setenv("TRITONREPO_CACHE", str(tmp_path / "cache"))  # each test builds its engines afresh
    double = trtllm_double.install(monkeypatch, tmp_path, version="0.17.0")
    monkeypatch.setattr(build_module.hardware, "detect_hardware", lambda: parse_gpu("H100-80GB"))
    monkeypatch.setattr(build_module.hardware, "tensorrt_llm_installed", lambda: True)
    return double


def test_build_converts_compiles_and_renders_an_engine_repository(h100_with_tensorrt_llm, tmp_path):
    result = build(BuildRequest(model="tiny-llama", output=tmp_path / "repo"))
    repo = result.path
    assert result.runtime.runtime == "tensorrtllm"
    assert (repo / "tensorrt_llm/1/engine/config.json").is_file() and (
        repo / "tensorrt_llm/1/engine/rank0.engine"
    ).is_file()
    assert not (repo / "tensorrt_llm/1/model.py").exists()
    config = (repo / "tensorrt_llm/config.pbtxt").read_text()
    assert 'backend: "tensorrtllm"' in config and '"tensorrt_llm/1/engine"' in config
    assert validate_repository(repo) == []
    manifest = json.loads((repo / MANIFEST).read_text())
    assert manifest["engine"]["tensorrt_llm_version"] == "0.17.0"
    assert manifest["engine"]["compute_capability"] == [9, 0] and manifest["engine"]["world_size"] == 1
    assert manifest["plan"]["max_num_tokens"] == 8192
    engine_folder = tmp_path / "cache" / "stages" / "engines" / manifest["engine"]["inputs_digest"]
    assert (engine_folder / "build.log").is_file()  # the full trtllm-build output, kept with the engines
    converted = h100_with_tensorrt_llm.events("from_hugging_face")
    assert len(converted) == 1 and Path(converted[0]["hf_model_or_dir"]) == result.source.path
    argv = h100_with_tensorrt_llm.events("trtllm-build")[0]["argv"]
    assert flags(argv)["--max_seq_len"] == "2048"  # the tiny model's context length


def test_a_failed_engine_build_leaves_no_repository_and_keeps_the_log(h100_with_tensorrt_llm, tmp_path):
    h100_with_tensorrt_llm.fail("build")
    with pytest.raises(EngineBuildError, match="trtllm-build") as raised:
        build(BuildRequest(model="tiny-llama", output=tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()
    assert raised.value.log_path and Path(raised.value.log_path).is_file()


RECORD = {"tensorrt_llm_version": "0.17.0", "gpu_name": "H100-80GB", "compute_capability": [9, 0],
          "tp_size": 2, "pp_size": 1, "world_size": 2}  # fmt: skip


def test_matching_engines_pass_the_guard():
    check_engines(RECORD, parse_gpu("H100-80GB x2"), "0.17.0")


@pytest.mark.parametrize(
    "gpu, version, words",
    [
        ("A100-80GB x2", "0.17.0", "built for H100-80GB (SM90); this machine has A100-80GB (SM80)"),
        ("H100-80GB x2", "0.18.0", "built with TensorRT-LLM 0.17.0, and this machine has 0.18.0"),
        ("H100-80GB", "0.17.0", "need 2 GPUs (tensor parallel 2 x pipeline parallel 1); this machine has 1"),
    ],
)
def test_mismatched_engines_are_refused_with_how_to_rebuild(gpu, version, words):
    with pytest.raises(EngineMismatchError) as raised:
        check_engines(RECORD, parse_gpu(gpu), version)
    assert words in str(raised.value)
    assert "Rebuild" in str(raised.value) or "rebuild" in str(raised.value)


def test_unchanged_inputs_skip_every_stage_and_changes_or_force_rebuild(h100_with_tensorrt_llm, tmp_path):
    double = h100_with_tensorrt_llm
    first = build(BuildRequest(model="tiny-llama", output=tmp_path / "repo"))
    stamp = (first.path / MANIFEST).stat().st_mtime_ns
    again = build(BuildRequest(model="tiny-llama", output=tmp_path / "repo"))
    assert (again.path / MANIFEST).stat().st_mtime_ns == stamp  # nothing re-rendered
    assert len(double.events("trtllm-build")) == 1  # nothing recompiled
    build(
        BuildRequest(model="tiny-llama", output=tmp_path / "elsewhere")
    )  # same inputs, another folder: engines reused
    assert len(double.events("trtllm-build")) == 1
    build(BuildRequest(model="tiny-llama", output=tmp_path / "repo", max_batch_size=64))  # a new plan: new engines
    assert len(double.events("trtllm-build")) == 2
    build(BuildRequest(model="tiny-llama", output=tmp_path / "repo", max_batch_size=64, force=True))
    assert len(double.events("trtllm-build")) == 3 and len(double.events("from_hugging_face")) == 3
