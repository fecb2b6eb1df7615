"""`tritonrepo build`: a complete, validated, self-contained repository with a truthful manifest, written safely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tritonrepo.cli.main import cli
from tritonrepo.errors import HardwareError, PlanError, ValidationError
from tritonrepo.planning import build as build_module
from tritonrepo.planning.build import build
from tritonrepo.planning.request import DeploymentRequest
from tritonrepo.repository.manifest import MANIFEST, file_digests, sha256_file
from tritonrepo.repository.validate import validate_repository
from tritonrepo.repository.writer import OutputError


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def built(tmp_path) -> Path:
    return build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo")).path


def test_the_repository_validates_and_holds_its_tokenizer_and_weights(built):
    assert validate_repository(built) == []
    assert (built / "preprocessing/1/tokenizer/tokenizer.json").is_file()
    assert (built / "tensorrt_llm/1/hf_model/model.safetensors").is_file()
    assert (built / "ensemble/1").is_dir()


def test_configs_use_only_paths_relative_to_the_repository(built):
    for config in built.glob("*/config.pbtxt"):
        text = config.read_text()
        assert str(built) not in text and "/root" not in text and "/tmp" not in text, config


def test_the_manifest_lists_every_file_with_its_sha256(built):
    manifest = json.loads((built / MANIFEST).read_text())
    assert manifest["files"] == file_digests(built)
    on_disk = {p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()} - {MANIFEST}
    assert set(manifest["files"]) == on_disk
    some = "tensorrt_llm/1/hf_model/model.safetensors"
    assert manifest["files"][some]["sha256"] == sha256_file(built / some)


def test_the_manifest_records_model_runtime_parameters_and_versions(built):
    manifest = json.loads((built / MANIFEST).read_text())
    assert manifest["model"] == {"name": "tiny-llama", "source": "embedded", "id": "tiny-llama", "revision": "0.1.0"}
    assert manifest["runtime"] == "hf" and "portable runtime" in manifest["runtime_reason"]
    assert manifest["parameters"]["max_seq_len"] == 2048 and manifest["parameters"]["triton_backend"] == "python"
    assert manifest["limits"] == {"max_batch_size": 8, "max_input_len": 1024, "max_seq_len": 2048}
    assert manifest["versions"]["transformers"] and manifest["versions"]["tritonclient"]
    assert manifest["tool"]["name"] == "tritonrepo"


def test_default_output_is_build_slash_model_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = build(DeploymentRequest(model="tiny-llama"))
    assert result.path == (tmp_path / "build" / "tiny-llama").resolve()


def test_rebuilding_replaces_the_repository_and_leaves_no_temporary_folders(built):
    (built / "stale-file").write_text("from an older build")
    build(DeploymentRequest(model="tiny-llama", output=built, max_seq_len=1024))
    assert not (built / "stale-file").exists()
    assert json.loads((built / MANIFEST).read_text())["limits"]["max_seq_len"] == 1024
    assert [p.name for p in built.parent.iterdir()] == [built.name]


def test_a_failed_rebuild_leaves_the_previous_repository_untouched(built, monkeypatch):
    before = _tree(built)

    def failing_check(root, **_):
        raise ValidationError(["tensorrt_llm/config.pbtxt:3: simulated failure"], root=str(root))

    monkeypatch.setattr(build_module, "check_repository", failing_check)
    with pytest.raises(ValidationError, match="simulated failure"):
        build(DeploymentRequest(model="tiny-llama", output=built, max_seq_len=1024))
    assert _tree(built) == before
    assert [p.name for p in built.parent.iterdir()] == [built.name]


def test_a_folder_that_is_not_a_repository_is_never_replaced(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="not a tritonrepo repository"):
        build(DeploymentRequest(model="tiny-llama", output=precious))
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_a_local_checkpoint_folder_builds(tiny_model_dir, tmp_path):
    result = build(DeploymentRequest(model=str(tiny_model_dir), output=tmp_path / "local"))
    assert result.source.kind == "local" and result.source.name == tiny_model_dir.name
    assert validate_repository(result.path) == []


def test_tensorrtllm_runtime_without_tensorrt_llm_writes_nothing(tmp_path):
    with pytest.raises(PlanError, match="needs TensorRT-LLM"):
        build(DeploymentRequest(model="tiny-llama", runtime="tensorrtllm", output=tmp_path / "trt"))
    assert not (tmp_path / "trt").exists()


def test_cli_build_then_validate(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli-repo"
    result = runner.invoke(cli, ["build", "--model", "tiny-llama", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(str(out.resolve()))
    assert "portable runtime" in result.stderr  # the runtime choice is announced
    result = runner.invoke(cli, ["validate", str(out)])
    assert result.exit_code == 0 and "OK" in result.output


def test_cli_errors_are_one_line_with_the_error_exit_code(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["build", "--model", "no-such-model", "--output", str(tmp_path / "x")])
    assert result.exit_code == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: unknown model 'no-such-model'. Use an embedded model")
    assert "Traceback" not in result.output
    broken = tmp_path / "broken"
    (broken / "m" / "1").mkdir(parents=True)
    (broken / "m" / "config.pbtxt").write_text('name: "m"\nmax_batch_size: ${triton_max_batch_size}\n')
    result = runner.invoke(cli, ["validate", str(broken)])
    assert result.exit_code == 4
    assert "m/config.pbtxt:2:" in result.stderr and "triton_max_batch_size" in result.stderr


def test_cli_rejects_bad_flag_values_before_doing_work(tmp_path):
    result = CliRunner().invoke(
        cli, ["build", "--model", "tiny-llama", "--max-batch-size", "0", "-o", str(tmp_path / "y")]
    )
    assert result.exit_code == 2 and "--max-batch-size" in result.output
    assert not (tmp_path / "y").exists()


def test_validation_catches_an_ensemble_that_triton_rejects_for_mixed_decoupled_sources(built):
    """Seen on the real server: postprocessing fed both the request's `stream` and the decoupled model's tokens
    fails with 'receives inputs originated from different decoupled models'."""
    post = built / "postprocessing/config.pbtxt"
    post.write_text(post.read_text().replace(
        '{ name: "OUTPUT_LOG_PROBS" data_type: TYPE_FP32 dims: [ -1, -1 ] optional: true }',
        '{ name: "OUTPUT_LOG_PROBS" data_type: TYPE_FP32 dims: [ -1, -1 ] optional: true },\n'
        '  { name: "STREAM" data_type: TYPE_BOOL dims: [ 1 ] optional: true }',
    ))  # fmt: skip
    ensemble = built / "ensemble/config.pbtxt"
    mapping = 'input_map { key: "OUTPUT_LOG_PROBS" value: "_OUTPUT_LOG_PROBS" }'
    ensemble.write_text(
        ensemble.read_text().replace(mapping, mapping + '\n      input_map { key: "STREAM" value: "stream" }')
    )
    problems = validate_repository(built)
    edited = sorted(p.file for p in problems if "changed since the build" in p.message)
    assert edited == ["ensemble/config.pbtxt", "postprocessing/config.pbtxt"]  # the manifest's digests see the edits
    problems = [str(p) for p in problems if "changed since the build" not in p.message]
    assert len(problems) == 1
    assert "postprocessing" in problems[0] and "different decoupled sources (ensemble, tensorrt_llm)" in problems[0]


def test_an_unchanged_rebuild_is_skipped_and_a_changed_one_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONREPO_CACHE", str(tmp_path / "cache"))
    first = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo"))
    stamp = (first.path / MANIFEST).stat().st_mtime_ns
    assert (
        build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo")).manifest["inputs_digest"]
        == first.manifest["inputs_digest"]
    )
    assert (first.path / MANIFEST).stat().st_mtime_ns == stamp
    changed = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo", max_seq_len=1024))
    assert changed.manifest["inputs_digest"] != first.manifest["inputs_digest"]
    forced = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "repo", max_seq_len=1024, force=True))
    assert (forced.path / MANIFEST).stat().st_mtime_ns != stamp


def test_a_changed_checkpoint_file_changes_the_inputs(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("TRITONREPO_CACHE", str(tmp_path / "cache"))
    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, copy)
    first = build(DeploymentRequest(model=str(copy), output=tmp_path / "repo"))
    config = copy / "generation_config.json"
    config.write_text(config.read_text().replace("}", ', "note": "changed"}', 1))
    second = build(DeploymentRequest(model=str(copy), output=tmp_path / "repo"))
    assert second.manifest["inputs_digest"] != first.manifest["inputs_digest"]


def test_the_manifest_records_the_checkpoints_sampling_defaults(built, tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    from tritonrepo.source.tiny_llama import TINY_LLAMA_SAMPLING

    assert json.loads((built / MANIFEST).read_text())["generation_defaults"] == TINY_LLAMA_SAMPLING
    monkeypatch.setenv("TRITONREPO_CACHE", str(tmp_path / "cache"))
    greedy = tmp_path / "greedy-ckpt"
    shutil.copytree(tiny_model_dir, greedy)
    (greedy / "generation_config.json").write_text(json.dumps({"eos_token_id": 1, "do_sample": False}))
    result = build(DeploymentRequest(model=str(greedy), output=tmp_path / "greedy"))
    assert result.manifest["generation_defaults"] == {"do_sample": False}


def test_a_quiet_command_does_not_silence_the_next_one(tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["-q", "build", "--model", "tiny-llama", "-o", str(tmp_path / "a")]).stderr == ""
    loud = runner.invoke(cli, ["build", "--model", "tiny-llama", "-o", str(tmp_path / "b")])
    assert "==> Resolving model tiny-llama" in loud.stderr


def test_an_unknown_gpu_is_refused_by_name_on_the_engine_path_as_plan_refuses_it(tmp_path):
    with pytest.raises(HardwareError) as caught:
        build(DeploymentRequest(model="tiny-llama", output=tmp_path / "t", gpu="XYZ x2"))
    message = str(caught.value)
    assert message.startswith("unknown GPU 'XYZ'") and "Known profiles: A10, A100-40GB" in message and "H200" in message
    assert not (tmp_path / "t").exists()
    built_cli = CliRunner().invoke(cli, ["build", "-m", "tiny-llama", "-o", str(tmp_path / "t"), "--gpu", "XYZ"])
    planned = CliRunner().invoke(cli, ["plan", "-m", "tiny-llama", "--gpu", "XYZ"])
    assert built_cli.exit_code == planned.exit_code == 3
    assert built_cli.stderr == planned.stderr  # one parser, one message
    with pytest.raises(PlanError, match="engines compile for the GPU they run on"):  # a known one: the engine rule
        build(DeploymentRequest(model="tiny-llama", output=tmp_path / "t", gpu="H200"))
