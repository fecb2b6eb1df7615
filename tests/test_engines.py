"""The engine stage: plan -> trtllm-build settings, a build through the real adapter against the TensorRT-LLM
TEST DOUBLE (TensorRT-LLM cannot run here), and the guard that refuses mismatched engines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from doubles import trtllm_double
from test_storage_s3 import _credentials, bucket, endpoint, options, s3  # noqa: F401 (fixtures)
from test_trtllm_commands import SEED_BUILD_FLAGS, flags

from tritonrepo.cli.main import cli
from tritonrepo.errors import EngineBuildError, EngineMismatchError
from tritonrepo.hardware import parse_gpu
from tritonrepo.planning import build as build_module
from tritonrepo.planning.build import build
from tritonrepo.planning.engines import build_command, check_engines, engine_spec
from tritonrepo.planning.planner import plan_deployment
from tritonrepo.planning.request import DeploymentRequest
from tritonrepo.repository.manifest import MANIFEST
from tritonrepo.repository.validate import validate_repository
from tritonrepo.source.catalog import lookup
from tritonrepo.trtllm.commands import trtllm_build_args


def _seed_plan():
    entry = lookup("DeepSeek-R1-Distill-Llama-8B")
    request = DeploymentRequest(entry.name, max_seq_len=8192, max_input_len=4096, max_batch_size=256)
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
    result = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo"))
    repo = result.path
    assert result.runtime.runtime == "tensorrtllm"
    assert (repo / "tensorrt_llm/1/engine/config.json").is_file() and (
        repo / "tensorrt_llm/1/engine/rank0.engine"
    ).is_file()
    assert not (repo / "tensorrt_llm/1/model.py").exists()
    config = (repo / "tensorrt_llm/config.pbtxt").read_text()
    # The tensorrtllm backend resolves gpt_model_path against its working directory: it names the final folder.
    assert 'backend: "tensorrtllm"' in config and f'string_value: "{repo / "tensorrt_llm/1/engine"}"' in config
    assert "staging" not in config
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
        build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo"))
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
    first = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo"))
    stamp = (first.path / MANIFEST).stat().st_mtime_ns
    again = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo"))
    assert (again.path / MANIFEST).stat().st_mtime_ns == stamp  # nothing re-rendered
    assert len(double.events("trtllm-build")) == 1  # nothing recompiled
    build(
        DeploymentRequest(model="tiny-llama", output=tmp_path / "elsewhere")
    )  # same inputs, another folder: engines reused
    assert len(double.events("trtllm-build")) == 1
    build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo", max_batch_size=64))  # a new plan: new engines
    assert len(double.events("trtllm-build")) == 2
    build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo", max_batch_size=64, force=True))
    assert len(double.events("trtllm-build")) == 3 and len(double.events("from_hugging_face")) == 3


# --- where the engine repository lives (issue 12, item 15) ----------------------------------------------------------
def _engine_path_line(repo: Path) -> str:
    return next(
        line for line in (repo / "tensorrt_llm/config.pbtxt").read_text().splitlines() if "gpt_model_path" in line
    )


def test_a_moved_engine_repository_is_named_by_validate_with_the_command_that_fixes_it(
    h100_with_tensorrt_llm, tmp_path
):
    built = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo")).path
    moved = tmp_path / "moved"
    shutil.move(built, moved)
    problems = validate_repository(moved)
    assert [(p.file, "gpt_model_path" in p.message) for p in problems] == [("tensorrt_llm/config.pbtxt", True)]
    assert "points outside the repository" in problems[0].message  # moved, not changed: the digests still match
    assert f"run `tritonrepo relocate {moved}`" in problems[0].message
    result = CliRunner().invoke(cli, ["relocate", str(moved)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"{moved}: OK"
    assert f'"{moved / "tensorrt_llm/1/engine"}"' in _engine_path_line(moved)
    assert validate_repository(moved) == []


def test_a_relative_engine_path_is_refused_because_the_backend_reads_it_from_its_working_directory(
    h100_with_tensorrt_llm, tmp_path
):
    repo = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo")).path
    config = repo / "tensorrt_llm/config.pbtxt"
    config.write_text(config.read_text().replace(f"{repo}/tensorrt_llm/1/engine", "tensorrt_llm/1/engine"))
    problems = validate_repository(repo)  # as an earlier tritonrepo wrote it: the manifest's digest still matches
    assert len(problems) == 1 and "is relative: the tensorrtllm backend opens it from tritonserver's working" in str(
        problems[0]
    )
    assert CliRunner().invoke(cli, ["relocate", str(repo)]).exit_code == 0
    assert validate_repository(repo) == []


def test_a_pulled_engine_repository_names_its_new_folder_and_syncs_without_moving_anything(
    h100_with_tensorrt_llm, tmp_path, bucket, s3, options
):
    from tritonrepo.storage import pull, push

    built = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo")).path
    url = f"s3://{bucket}/engines"
    push(built, url, options)
    stored = s3.get_object(Bucket=bucket, Key="engines/tensorrt_llm/config.pbtxt")["Body"].read().decode()
    assert 'string_value: "tensorrt_llm/1/engine"' in stored and str(tmp_path) not in stored  # the portable form
    pulled = tmp_path / "elsewhere" / "pulled"
    pull(url, pulled, options)
    assert f'"{pulled / "tensorrt_llm/1/engine"}"' in _engine_path_line(pulled)
    assert validate_repository(pulled) == []  # digests included
    assert pull(url, pulled, options).files_moved == 0
    assert push(pulled, url, options).files_moved == 0
    assert push(built, url, options).files_moved == 0
