"""The llmapi repository (TensorRT-LLM's PyTorch backend in one Triton Python model): rendering, validation, the
launch it gets from `tritonrepo serve`, and how the front end serves it. Nothing here starts a server."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tritonrepo.errors import RenderError, ServerError, ServerNotFoundError, ValidationError
from tritonrepo.pytorch_path.triton_repo import (
    find_llmapi_model,
    llmapi_world_size,
    render_llmapi_repository,
    world_size,
)
from tritonrepo.repository.validate import check_repository, validate_repository

ROOT = Path(__file__).resolve().parent.parent
DEEPSEEK_ARGS = {
    "model": "deepseek-ai/DeepSeek-R1",
    "backend": "pytorch",
    "tensor_parallel_size": 8,
    "pipeline_parallel_size": 1,
    "moe_expert_parallel_size": 8,
    "max_batch_size": 161,
    "max_num_tokens": 1160,
    "max_seq_len": 2048,
    "trust_remote_code": True,
    "enable_attention_dp": True,
    "kv_cache_config": {"free_gpu_memory_fraction": 0.85, "dtype": "fp8"},
    "cuda_graph_config": {"enable_padding": True, "max_batch_size": 161},
    "moe_config": {"backend": "CUTLASS"},
    "speculative_config": {"decoding_type": "MTP", "num_nextn_predict_layers": 1},
}


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def rendered(tmp_path: Path, args: dict | None = None, **options) -> Path:
    options.setdefault("triton_max_batch_size", 0)
    return write(tmp_path / "repo", render_llmapi_repository(args or DEEPSEEK_ARGS, **options))


def model_yaml(repo: Path) -> Path:
    return repo / "tensorrt_llm" / "1" / "model.yaml"


def edit_yaml(repo: Path, change) -> None:
    settings = yaml.safe_load(model_yaml(repo).read_text())
    change(settings)
    model_yaml(repo).write_text(yaml.safe_dump(settings, sort_keys=False))


# --- rendering -----------------------------------------------------------------------------------------------------
def test_render_gives_the_three_files_of_one_model():
    files = render_llmapi_repository(DEEPSEEK_ARGS, triton_max_batch_size=0)
    assert sorted(files) == ["tensorrt_llm/1/model.py", "tensorrt_llm/1/model.yaml", "tensorrt_llm/config.pbtxt"]
    template = ROOT / "all_models" / "llmapi" / "tensorrt_llm" / "1" / "model.py"
    assert files["tensorrt_llm/1/model.py"] == template.read_text()


@pytest.mark.parametrize(("batch", "decoupled"), [(0, True), (8, False)])
def test_config_parses_with_upstreams_tensor_contract(batch, decoupled):
    text = render_llmapi_repository(DEEPSEEK_ARGS, triton_max_batch_size=batch, decoupled=decoupled)
    config = text_format.Parse(text["tensorrt_llm/config.pbtxt"], model_config_pb2.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("tensorrt_llm", "python", batch)
    assert config.model_transaction_policy.decoupled is decoupled
    kind = model_config_pb2.DataType.Name
    inputs = {tensor.name: (kind(tensor.data_type), list(tensor.dims), tensor.optional) for tensor in config.input}
    assert inputs["text_input"] == ("TYPE_STRING", [-1], False)
    assert inputs["streaming"] == ("TYPE_BOOL", [1], True)
    assert inputs["sampling_param_max_tokens"] == ("TYPE_INT32", [1], True)
    assert inputs["sampling_param_temperature"] == ("TYPE_FP32", [1], True)
    assert inputs["sampling_param_seed"] == ("TYPE_UINT64", [1], True)
    assert inputs["sampling_param_stop"] == ("TYPE_STRING", [-1], True)
    assert inputs["sampling_param_exclude_input_from_output"] == ("TYPE_BOOL", [1], True)
    assert inputs["stop"] == ("TYPE_BOOL", [1], True)
    outputs = {tensor.name: kind(tensor.data_type) for tensor in config.output}
    assert outputs == {"text_output": "TYPE_STRING", "finish_reason": "TYPE_STRING", "stop_reason": "TYPE_STRING"}
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_model_yaml_round_trips_the_llm_api_arguments():
    files = render_llmapi_repository(DEEPSEEK_ARGS, triton_max_batch_size=4, decoupled=False, model_name="r1")
    settings = yaml.safe_load(files["r1/1/model.yaml"])
    assert settings.pop("triton_config") == {"max_batch_size": 4, "decoupled": False}
    assert settings == DEEPSEEK_ARGS
    assert 'name: "r1"' in files["r1/config.pbtxt"]


def test_paths_and_tuples_become_plain_yaml_and_backend_defaults_to_pytorch(tmp_path):
    files = render_llmapi_repository(
        {"model": tmp_path / "ckpt", "cuda_graph_config": {"batch_sizes": (1, 2, 4)}}, triton_max_batch_size=0
    )
    settings = yaml.safe_load(files["tensorrt_llm/1/model.yaml"])
    assert settings["model"] == str(tmp_path / "ckpt")
    assert settings["cuda_graph_config"] == {"batch_sizes": [1, 2, 4]}
    assert settings["backend"] == "pytorch"


@pytest.mark.parametrize(
    ("args", "options", "words"),
    [
        ({"backend": "pytorch"}, {}, "no `model`"),
        ({"model": "m", "backend": "tensorrt"}, {}, "backend is 'tensorrt'"),
        ({"model": "m", "triton_config": {}}, {}, "must not hold triton_config"),
        ({"model": "m", "kv_cache_config": {"dtype": object()}}, {}, "llm_args.kv_cache_config.dtype is a object"),
        ({"model": "m"}, {"triton_max_batch_size": -1}, "triton_max_batch_size must be an integer >= 0"),
        ({"model": "m"}, {"decoupled": "yes"}, "decoupled must be a boolean"),
        ({"model": "m"}, {"model_name": "a/b"}, "cannot be a model folder name"),
    ],
)
def test_render_refuses_what_would_make_a_broken_repository(args, options, words):
    with pytest.raises(RenderError, match=words):
        render_llmapi_repository(args, **{"triton_max_batch_size": 0, **options})


# --- validation ----------------------------------------------------------------------------------------------------
def test_validate_accepts_a_rendered_repository_with_or_without_a_manifest(tmp_path):
    from click.testing import CliRunner

    from tritonrepo.cli.main import cli

    repo = rendered(tmp_path)
    assert validate_repository(repo) == []
    result = CliRunner().invoke(cli, ["validate", str(repo)])
    assert result.exit_code == 0 and result.output.strip() == f"{repo}: OK"
    (repo / "tritonrepo.json").write_text(json.dumps({"format": 1, "entry_points": ["tensorrt_llm"]}))
    assert validate_repository(repo) == []


def test_a_local_checkpoint_folder_relative_to_the_repository_is_accepted(tmp_path):
    repo = rendered(tmp_path, {"model": "checkpoints/r1", "backend": "pytorch"})
    (repo / "checkpoints" / "r1").mkdir(parents=True)
    (repo / "checkpoints" / "r1" / "config.json").write_text("{}")
    assert [p for p in validate_repository(repo) if p.file.endswith("model.yaml")] == []


def _problems(repo: Path) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        check_repository(repo)
    return caught.value.problems


def test_missing_model_yaml_is_named(tmp_path):
    repo = rendered(tmp_path)
    model_yaml(repo).unlink()
    assert _problems(repo) == [
        "tensorrt_llm/1/model.yaml: missing: the llmapi model reads its LLM API arguments (model, backend, "
        "parallel sizes) from it"
    ]


def test_decoupled_mismatch_names_both_files_and_the_line(tmp_path):
    repo = rendered(tmp_path, decoupled=True)
    edit_yaml(repo, lambda s: s["triton_config"].update(decoupled=False))
    line = model_yaml(repo).read_text().splitlines().index("  decoupled: false") + 1
    assert _problems(repo) == [
        f"tensorrt_llm/1/model.yaml:{line}: `triton_config.decoupled` is false but tensorrt_llm/config.pbtxt has "
        "decoupled: true; make them equal"
    ]


def test_max_batch_size_mismatch_is_named(tmp_path):
    repo = rendered(tmp_path, triton_max_batch_size=8)
    edit_yaml(repo, lambda s: s["triton_config"].update(max_batch_size=16))
    (problem,) = _problems(repo)
    assert problem.startswith("tensorrt_llm/1/model.yaml:")
    assert "`triton_config.max_batch_size` is 16 but tensorrt_llm/config.pbtxt has max_batch_size: 8" in problem


def test_a_backend_other_than_pytorch_is_refused(tmp_path):
    repo = rendered(tmp_path)
    edit_yaml(repo, lambda s: s.update(backend="tensorrt"))
    (problem,) = _problems(repo)
    assert problem == (
        "tensorrt_llm/1/model.yaml:2: `backend` is 'tensorrt': this model serves TensorRT-LLM's PyTorch backend "
        "(backend: pytorch)"
    )


@pytest.mark.parametrize("value", ["eight", 1.5, True, 0, -2])
def test_a_parallel_size_that_is_not_a_positive_integer_is_refused(tmp_path, value):
    repo = rendered(tmp_path)
    edit_yaml(repo, lambda s: s.update(tensor_parallel_size=value))
    problems = _problems(repo)
    assert f"tensorrt_llm/1/model.yaml:3: `tensor_parallel_size` must be a positive integer, got {value!r}" in problems


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: s.pop("model"), "has no `model` (a Hugging Face id or a checkpoint folder)"),
        (lambda s: s.update(model="/nowhere/DeepSeek-R1"), "`model` /nowhere/DeepSeek-R1 does not exist"),
        (lambda s: s.update(model="../up/there"), "`model` ../up/there is neither a folder"),
        (lambda s: s.update(moe_expert_parallel_size=3), "`moe_expert_parallel_size` 3 does not divide"),
        (lambda s: s.update(max_num_tokens="many"), "`max_num_tokens` must be a positive integer, got 'many'"),
        (lambda s: s.update(kv_cache_config=0.9), "`kv_cache_config` must be a mapping of its options, got 0.9"),
        (lambda s: s.pop("triton_config"), "has no `triton_config` {max_batch_size, decoupled}"),
        (lambda s: s["triton_config"].update(decoupled="yes"), "`triton_config.decoupled` must be true or false"),
        (lambda s: s["triton_config"].update(cancellation_check_period_ms=0), "must be > 0, got 0"),
    ],
)
def test_bad_arguments_are_named_with_their_key(tmp_path, change, words):
    repo = rendered(tmp_path)
    edit_yaml(repo, change)
    problems = _problems(repo)
    assert len(problems) == 1 and problems[0].startswith("tensorrt_llm/1/model.yaml") and words in problems[0]


def test_yaml_that_does_not_parse_or_is_not_a_mapping_is_reported(tmp_path):
    repo = rendered(tmp_path)
    model_yaml(repo).write_text("model: deepseek-ai/DeepSeek-R1\nbackend: [pytorch\n")
    (problem,) = _problems(repo)
    assert problem.startswith("tensorrt_llm/1/model.yaml:") and "does not parse as YAML" in problem
    model_yaml(repo).write_text("- model\n- backend\n")
    assert _problems(repo) == [
        "tensorrt_llm/1/model.yaml: must be a mapping of LLM API arguments (model, backend, ...), not list"
    ]


def test_missing_model_py_and_a_config_without_text_input_are_reported(tmp_path):
    repo = rendered(tmp_path)
    (repo / "tensorrt_llm" / "1" / "model.py").unlink()
    config = repo / "tensorrt_llm" / "config.pbtxt"
    config.write_text(config.read_text().replace('"text_input"', '"prompt"'))
    problems = _problems(repo)
    assert "tensorrt_llm/1/model.py: missing: the python backend loads this file from each served version" in problems
    assert any('llmapi model has no input "text_input"' in p for p in problems)


# --- reading it back for serving -----------------------------------------------------------------------------------
def test_world_size_is_tensor_times_pipeline_parallel(tmp_path):
    assert world_size({"tensor_parallel_size": 4, "pipeline_parallel_size": 2}) == 8
    assert world_size({"model": "m"}) == 1
    assert llmapi_world_size(rendered(tmp_path)) == 8
    found = find_llmapi_model(tmp_path / "repo")
    assert found is not None and found.name == "tensorrt_llm" and found.settings["model"] == "deepseek-ai/DeepSeek-R1"


def test_a_repository_without_an_llmapi_model_has_no_llmapi_world_size(tmp_path):
    from tritonrepo.repository.params import RepositoryParams
    from tritonrepo.repository.render import render_repository

    write(tmp_path, render_repository(RepositoryParams(runtime="hf", max_input_len=64, max_seq_len=128)).files)
    assert llmapi_world_size(tmp_path) is None


def test_an_unreadable_model_yaml_stops_serving_with_the_file_named(tmp_path):
    repo = rendered(tmp_path)
    edit_yaml(repo, lambda s: s.update(tensor_parallel_size="eight"))
    with pytest.raises(ValidationError, match="tensorrt_llm/1/model.yaml: tensor_parallel_size must be a positive"):
        llmapi_world_size(repo)


# --- the launch `tritonrepo serve` chooses -------------------------------------------------------------------------
def test_several_gpus_launch_through_trtllm_llmapi_launch_under_mpirun():
    from tritonrepo.serving.mpi import llmapi_launch_command

    server = ["/opt/tritonserver/bin/tritonserver", "--model-repository=/r", "--http-port=8000"]
    command = llmapi_launch_command("/usr/bin/mpirun", "/usr/local/bin/trtllm-llmapi-launch", server, 8)
    assert command == [
        "/usr/bin/mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "8",
        "/usr/local/bin/trtllm-llmapi-launch", *server,
    ]  # fmt: skip


def test_the_llmapi_server_command_wraps_tritonserver_once(tmp_path, monkeypatch):
    from tritonrepo.serving import mpi
    from tritonrepo.serving.tritonserver import TritonServer, find_tritonserver

    found = {"mpirun": "/usr/bin/mpirun", "trtllm-llmapi-launch": "/usr/local/bin/trtllm-llmapi-launch"}
    monkeypatch.setattr(mpi.shutil, "which", found.get)
    server = TritonServer(find_tritonserver(), str(tmp_path), log_path=tmp_path / "log", world_size=4, llmapi=True)
    command = server.command()
    launcher = found["trtllm-llmapi-launch"]
    assert command[:6] == ["/usr/bin/mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "4", launcher]
    assert command[6].endswith("tritonserver") and ":" not in command  # one tritonserver, on rank 0
    assert "--disable-auto-complete-config" in command and not any("--load-model" in arg for arg in command)
    single = TritonServer(find_tritonserver(), str(tmp_path), log_path=tmp_path / "log", world_size=1, llmapi=True)
    assert single.command()[0].endswith("tritonserver")  # one GPU: plain tritonserver, no MPI


@pytest.mark.parametrize(
    ("present", "words"),
    [({"trtllm-llmapi-launch"}, "needs mpirun"), ({"mpirun"}, "needs TensorRT-LLM's trtllm-llmapi-launch")],
)
def test_a_missing_launcher_says_where_it_comes_from(tmp_path, monkeypatch, present, words):
    from tritonrepo.serving import mpi
    from tritonrepo.serving.tritonserver import TritonServer, find_tritonserver

    monkeypatch.setattr(mpi.shutil, "which", lambda name: f"/bin/{name}" if name in present else None)
    server = TritonServer(find_tritonserver(), str(tmp_path), log_path=tmp_path / "log", world_size=2, llmapi=True)
    with pytest.raises(ServerNotFoundError, match=f"{words}.*tritonserver:<yy.mm>-trtllm-python-py3"):
        server.command()


def test_serve_refuses_an_llmapi_model_wider_than_this_machine_before_starting(tmp_path):
    from tritonrepo.serving.launch import ServeOptions, launch_summary, serve_repository

    repo = rendered(tmp_path)  # tensor parallel 8; this machine has no GPU
    with pytest.raises(ServerError, match="'tensorrt_llm' needs 8 GPUs .* this machine has 0"):
        serve_repository(ServeOptions(repository=repo, openai_port=0))
    assert not (tmp_path / "repo.tritonserver.log").exists()
    assert "mpirun -n 8 trtllm-llmapi-launch tritonserver" in launch_summary(8, "tensorrt_llm")
    assert "on 1 GPU: one plain tritonserver" in launch_summary(1, "tensorrt_llm")


# --- the front end -------------------------------------------------------------------------------------------------
def test_the_front_end_serves_the_llmapi_model_itself_with_the_checkpoints_tokenizer(tmp_path, tiny_model_dir):
    from tritonrepo.frontend.app import load_repository_info

    repo = rendered(tmp_path, {"model": str(tiny_model_dir), "max_seq_len": 512})
    info = load_repository_info(repo)
    assert info.models.entry_points == ("tensorrt_llm",) and info.models.fast_path is None
    assert info.tokenizer_dir == tiny_model_dir and info.models.limits.max_seq_len == 512
    # A manifest that calls it the runtime model of a decoupled build must not send token ids to it either.
    manifest = {
        "format": 1,
        "entry_points": ["tensorrt_llm"],
        "tokenizer_dir": str(tiny_model_dir),
        "parameters": {"decoupled_mode": True, "tensorrt_llm_model_name": "tensorrt_llm"},
    }
    (repo / "tritonrepo.json").write_text(json.dumps(manifest))
    assert load_repository_info(repo).models.fast_path is None


def test_a_hub_id_that_is_not_downloaded_has_no_tokenizer_and_says_so(tmp_path):
    from tritonrepo.frontend.app import load_repository_info

    with pytest.raises(ServerError, match="Cannot find the tokenizer of 'deepseek-ai/DeepSeek-R1'"):
        load_repository_info(rendered(tmp_path))


def test_the_front_end_sends_upstreams_input_names():
    from tritonrepo.frontend.triton_client import EntryModel, GenerationParams, build_inputs

    text = render_llmapi_repository(DEEPSEEK_ARGS, triton_max_batch_size=0)["tensorrt_llm/config.pbtxt"]
    entry = EntryModel.from_config(text_format.Parse(text, model_config_pb2.ModelConfig()))
    params = GenerationParams(prompt="hi", max_tokens=7, temperature=0.5, seed=3, stop=("\n\n",), stream=True)
    sent = {tensor.name: tensor for tensor in build_inputs(entry, params)}
    assert set(sent) == {
        "text_input", "streaming", "sampling_param_max_tokens", "sampling_param_temperature", "sampling_param_seed",
        "sampling_param_stop", "sampling_param_exclude_input_from_output", "return_finish_reason",
        "sampling_param_top_p",  # 1.0: temperature 0.5 samples, which TensorRT-LLM needs a top_p or top_k for
    }  # fmt: skip
    assert struct.unpack("<f", sent["sampling_param_top_p"].data) == (1.0,)
    assert entry.cumulative_text and not entry.batched


def test_the_template_folder_is_shipped_next_to_the_pipeline_templates():
    from tritonrepo.repository.render import templates_root

    assert (templates_root() / "llmapi" / "tensorrt_llm" / "config.pbtxt.j2").is_file()
