"""Rendering is pure: parameters in, file contents out; a missing variable is an error, never a gap."""

from __future__ import annotations

import shutil

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tritonrepo.errors import RenderError
from tritonrepo.repository.params import MODELS, RepositoryParams
from tritonrepo.repository.render import render_repository, templates_root


def _configs(rendered):
    return {
        path.split("/")[0]: text_format.Parse(content, model_config_pb2.ModelConfig())
        for path, content in rendered.files.items()
        if path.endswith("config.pbtxt")
    }


@pytest.mark.parametrize("runtime", ["hf", "tensorrtllm"])
def test_every_config_parses_as_triton_model_config(runtime):
    configs = _configs(render_repository(RepositoryParams(runtime=runtime, max_input_len=512, max_seq_len=1024)))
    assert sorted(configs) == sorted(MODELS)
    assert configs["tensorrt_llm"].backend == ("python" if runtime == "hf" else "tensorrtllm")
    assert all(cfg.max_batch_size == 8 for cfg in configs.values())


def test_parameters_reach_the_configs():
    params = RepositoryParams(
        runtime="hf",
        max_input_len=300,
        max_seq_len=900,
        triton_max_batch_size=3,
        decoupled_mode=False,
        skip_special_tokens=False,
    )
    configs = _configs(render_repository(params))
    llm = configs["tensorrt_llm"]
    assert llm.max_batch_size == 3
    assert llm.model_transaction_policy.decoupled is False
    assert llm.parameters["max_seq_len"].string_value == "900"
    assert configs["preprocessing"].parameters["max_input_len"].string_value == "300"
    assert configs["postprocessing"].parameters["skip_special_tokens"].string_value == "false"
    assert configs["tensorrt_llm_bls"].model_transaction_policy.decoupled is False


def test_no_placeholder_survives_rendering():
    rendered = render_repository(RepositoryParams(runtime="tensorrtllm", max_input_len=512, max_seq_len=1024))
    assert not any("${" in content or "{{" in content for content in rendered.files.values() if content)


def test_python_models_get_their_code_and_the_shared_helpers():
    files = render_repository(RepositoryParams(runtime="hf", max_input_len=512, max_seq_len=1024)).files
    for model in ("preprocessing", "postprocessing", "tensorrt_llm", "tensorrt_llm_bls"):
        assert f"{model}/1/model.py" in files and f"{model}/1/model_utils.py" in files
    assert "tensorrt_llm/1/hf_engine.py" in files


def test_the_tensorrtllm_backend_gets_no_python_runtime_code():
    files = render_repository(RepositoryParams(runtime="tensorrtllm", max_input_len=512, max_seq_len=1024)).files
    assert not any(path.startswith("tensorrt_llm/1/") for path in files)
    assert 'key: "gpt_model_path"' in files["tensorrt_llm/config.pbtxt"]


def test_a_missing_template_variable_is_a_render_error_naming_the_template(tmp_path):
    root = tmp_path / "all_models"
    shutil.copytree(templates_root(), root)
    config = root / "inflight_batcher_llm" / "postprocessing" / "config.pbtxt.j2"
    config.write_text(config.read_text() + '\nparameters { key: "x" value: { string_value: "{{ no_such_value }}" } }\n')
    with pytest.raises(RenderError, match=r"postprocessing/config.pbtxt.j2: 'no_such_value' is undefined"):
        render_repository(RepositoryParams(runtime="hf", max_input_len=512, max_seq_len=1024), root=root)


def test_a_non_boolean_where_a_boolean_belongs_is_refused():
    params = RepositoryParams(runtime="hf", max_input_len=512, max_seq_len=1024, decoupled_mode="yes")  # type: ignore[arg-type]
    with pytest.raises(RenderError, match="boolean"):
        render_repository(params)


# --- upstream's tensor contract: an upstream ensemble or BLS maps onto our tensorrt_llm model ------------------------
@pytest.mark.parametrize("runtime", ["hf", "tensorrtllm"])
def test_tensorrt_llm_declares_every_upstream_input_and_output_as_upstream_does(runtime):
    from upstream_contract import SCALAR, TENSORRT_LLM_INPUTS, TENSORRT_LLM_OUTPUTS

    config = _configs(render_repository(RepositoryParams(runtime=runtime, max_input_len=512, max_seq_len=1024)))[
        "tensorrt_llm"
    ]
    inputs = {tensor.name: tensor for tensor in config.input}
    for expected in TENSORRT_LLM_INPUTS:
        declared = inputs.get(expected.name)
        assert declared is not None, f"input {expected.name} is not declared"
        assert model_config_pb2.DataType.Name(declared.data_type) == expected.data_type, expected.name
        assert tuple(declared.dims) == expected.declared_dims, expected.name
        assert declared.HasField("reshape") == (expected.dims == SCALAR), expected.name
        # input_ids stays required here: both runtimes serve decoder-only models, which always need it
        assert declared.optional == (expected.name not in ("input_ids", "input_lengths", "request_output_len"))
    outputs = {tensor.name: tensor for tensor in config.output}
    for expected in TENSORRT_LLM_OUTPUTS:
        declared = outputs.get(expected.name)
        assert declared is not None, f"output {expected.name} is not declared"
        assert model_config_pb2.DataType.Name(declared.data_type) == expected.data_type, expected.name
        assert tuple(declared.dims) == expected.declared_dims, expected.name


@pytest.mark.parametrize("runtime", ["hf", "tensorrtllm"])
def test_upstream_v017_ensemble_validates_against_our_models(tmp_path, runtime):
    from upstream_contract import ensemble_v017_config

    from tritonrepo.repository.validate import validate_repository
    from tritonrepo.repository.writer import write_rendered

    write_rendered(tmp_path, render_repository(RepositoryParams(runtime=runtime, max_input_len=512, max_seq_len=1024)))
    (tmp_path / "ensemble" / "config.pbtxt").write_text(ensemble_v017_config(8))
    problems = [str(problem) for problem in validate_repository(tmp_path)]
    assert [p for p in problems if p.startswith("ensemble/")] == []
