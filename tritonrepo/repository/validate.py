"""Find what would stop a Triton model repository loading; relative path parameters resolve against its root."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonrepo.errors import ValidationError
from tritonrepo.pytorch_path.triton_repo import LLMAPI_INPUT, MODEL_YAML

_PLACEHOLDER = re.compile(r"\$\{([^}\s]*)\}")
# A quoted string or a placeholder: placeholders inside strings are kept, the others are stubbed so the rest parses.
_STRING_OR_PLACEHOLDER = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|\$\{[^}\s]*\}')
_PARSE_POSITION = re.compile(r"^(\d+):(\d+)\s*:\s*")
_MAP_KIND = re.compile(r"\b(input_map|output_map)\b")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_ENGINE_PARAMETERS = frozenset({"gpt_model_path", "engine_dir", "encoder_model_path"})
_MODEL_NAME_PARAMETERS = ("tensorrt_llm_model_name", "tensorrt_llm_draft_model_name")
# These point into the tritonserver installation (upstream default /opt/tritonserver/...), which need not exist here.
_SERVER_INSTALL_PARAMETERS = frozenset({"executor_worker_path"})
_MODEL_DIRECTORY_VARIABLE = "$$TRITON_MODEL_DIRECTORY"


@dataclass(frozen=True)
class Problem:
    """One finding: `file` is relative to the repository root; `line` is 1-based, None when unknown."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


@dataclass
class _Model:
    name: str
    directory: Path
    file: str
    lines: list[str] = field(default_factory=list)
    config: Any = None  # model_config_pb2.ModelConfig once it parses
    approximate: bool = False  # parsed with unquoted placeholders stubbed out, so its numbers are not the real ones


@dataclass
class _Ensemble:
    model: _Model
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    producers: dict[str, tuple[str, Any]]  # ensemble tensor -> (step model name, that model's output)
    produced: set[str]  # every output_map value, valid key or not


def validate_repository(root: Path) -> list[Problem]:
    """Every problem found in the repository at `root`, sorted by file then line; empty when it looks loadable."""
    root = Path(root)
    if not root.is_dir():
        state = "is not a directory" if root.exists() else "does not exist"
        return [Problem(".", None, f"repository root {root} {state}")]
    problems: list[Problem] = []
    models = _load_models(root, problems)
    if not models and not problems:
        problems.append(Problem(".", None, "no model directories found"))
    for model in models.values():
        if model.config is None:
            continue
        problems += _check_identity(model)
        problems += _check_versions(model)
        problems += _check_tensors(model)
        problems += _check_parameters(model, root, models)
        if model.config.platform == "ensemble":
            problems += _check_ensemble(model, models)
        if _is_llmapi(model):
            problems += _check_llmapi(model, root)
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.message))


def check_repository(root: Path) -> None:
    """Raise ValidationError listing every problem when the repository at `root` has any."""
    problems = validate_repository(root)
    if problems:
        raise ValidationError([str(p) for p in problems], root=str(root))


# --- loading and parsing -------------------------------------------------------------------------------------------
def _load_models(root: Path, problems: list[Problem]) -> dict[str, _Model]:
    models: dict[str, _Model] = {}
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (directory / "config.pbtxt").is_file():
            message = "model directory has no config.pbtxt; Triton fails to load it (add one or move the directory out)"
            problems.append(Problem(directory.name, None, message))
            continue
        model = _Model(directory.name, directory, f"{directory.name}/config.pbtxt")
        problems += _parse(model)
        models[model.name] = model
    return models


def _parse(model: _Model) -> list[Problem]:
    from google.protobuf import text_format

    try:
        text = (model.directory / "config.pbtxt").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return [Problem(model.file, None, f"cannot read: {error}")]
    model.lines = text.splitlines()
    problems = _placeholder_problems(model)
    stubbed = _STRING_OR_PLACEHOLDER.sub(lambda m: m.group(0) if m.group(0)[0] in "\"'" else "0", text)
    model.approximate = stubbed != text
    try:
        model.config = text_format.Parse(stubbed, _config_module().ModelConfig())
    except text_format.ParseError as error:
        line, message = _parse_error_position(error)
        # A parse error on a placeholder's line is that placeholder's fault, already reported with a better hint.
        if line is None or line not in {p.line for p in problems}:
            problems.append(Problem(model.file, line, f"does not parse as a Triton ModelConfig: {message}"))
    return problems


def _config_module() -> Any:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _parse_error_position(error: Exception) -> tuple[int | None, str]:
    message = str(error)
    match = _PARSE_POSITION.match(message)
    line = error.GetLine() if hasattr(error, "GetLine") else None
    if line is None and match:
        line = int(match.group(1))
    return line, _PARSE_POSITION.sub("", message, count=1)


def _placeholder_problems(model: _Model) -> list[Problem]:
    problems = []
    for number, line in enumerate(model.lines, start=1):
        for token in _STRING_OR_PLACEHOLDER.findall(_code_part(line)):
            effect = "the model reads the literal text" if token[0] in "\"'" else "Triton cannot parse the config"
            for variable in _PLACEHOLDER.findall(token):
                hint = f"give it a value (fill_template.py -i {model.file} {variable}:<value>) or edit the line"
                message = f"unfilled template variable ${{{variable}}} ({effect}): {hint}"
                problems.append(Problem(model.file, number, message))
    return problems


def _code_part(line: str) -> str:
    """The line without its trailing `#` comment (a `#` inside a quoted string is kept)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote and line[index - 1] != "\\":
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:index]
    return line


def _find_line(model: _Model, pattern: str | re.Pattern[str], start: int = 0, end: int | None = None) -> int | None:
    """1-based number of the first code line in [start, end) matching `pattern`."""
    regex = re.compile(pattern)
    for index in range(start, len(model.lines) if end is None else end):
        if regex.search(_code_part(model.lines[index])):
            return index + 1
    return None


def _quoted(field_name: str, value: str) -> str:
    return rf'\b{field_name}\s*:\s*"{re.escape(value)}"'


# --- per-model checks ----------------------------------------------------------------------------------------------
def _check_identity(model: _Model) -> list[Problem]:
    name = model.config.name
    if not name or name == model.name:
        return []
    message = f'name "{name}" differs from its directory "{model.name}"; Triton rejects it (make them equal)'
    return [Problem(model.file, _find_line(model, _quoted("name", name)), message)]


def _check_versions(model: _Model) -> list[Problem]:
    versions = sorted(int(p.name) for p in model.directory.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        message = f"no numeric version directory (e.g. {model.name}/1/); Triton finds no version to load"
        return [Problem(model.name, None, message)]
    problems = []
    policy = model.config.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "specific":
        missing = sorted(set(policy.specific.versions) - set(versions))
        if missing:
            line = _find_line(model, r"\bspecific\b")
            problems.append(Problem(model.file, line, f"version_policy names versions {missing} with no directory"))
        served = [v for v in versions if v in policy.specific.versions]
    elif kind == "all":
        served = versions
    else:
        latest = policy.latest.num_versions if kind == "latest" else 1
        served = versions[-max(latest, 1) :]
    if model.config.backend == "python":
        filename = model.config.default_model_filename or "model.py"
        missing = [v for v in served if not (model.directory / str(v) / filename).is_file()]
        message = "missing: the python backend loads this file from each served version"
        problems += [Problem(f"{model.name}/{v}/{filename}", None, message) for v in missing]
    return problems


def _check_tensors(model: _Model) -> list[Problem]:
    # A stubbed placeholder (e.g. data_type: ${logits_datatype}) would show up here as a second, misleading problem.
    if model.approximate:
        return []
    problems = []
    batching = model.config.max_batch_size > 0
    for kind, tensors in (("input", model.config.input), ("output", model.config.output)):
        for tensor in tensors:
            line = _find_line(model, _quoted("name", tensor.name)) if tensor.name else None
            label = f'{kind} "{tensor.name}"'
            if not tensor.name:
                problems.append(Problem(model.file, None, f"an {kind} has no name"))
            if tensor.data_type == 0:
                problems.append(Problem(model.file, line, f"{label} has no data_type"))
            if not tensor.dims:
                hint = "(for a scalar use dims: [ 1 ] with reshape: { shape: [ ] })"
                problems.append(Problem(model.file, line, f"{label} has empty dims; Triton requires dims {hint}"))
            elif any(d < 1 and d != -1 for d in tensor.dims):
                problems.append(Problem(model.file, line, f"{label} dims {list(tensor.dims)} must each be >= 1 or -1"))
            if tensor.HasField("reshape") and not tensor.reshape.shape and not batching:
                message = f"{label} has an empty reshape, which Triton allows only when max_batch_size > 0"
                problems.append(Problem(model.file, line, message))
    return problems


def _check_parameters(model: _Model, root: Path, models: dict[str, _Model]) -> list[Problem]:
    problems = []
    for key, parameter in sorted(model.config.parameters.items()):
        value = parameter.string_value
        if not value or _PLACEHOLDER.search(value):
            continue
        line = _find_line(model, _quoted("key", key))
        if key in _MODEL_NAME_PARAMETERS:
            if value not in models:
                message = f'parameter {key} names model "{value}", which is not in the repository'
                problems.append(Problem(model.file, line, message))
        elif key.lower().endswith(("_dir", "_path")) and key not in _SERVER_INSTALL_PARAMETERS:
            problems += _check_path(model, root, key, value, line)
    return problems


def _check_path(model: _Model, root: Path, key: str, value: str, line: int | None) -> list[Problem]:
    def problem(message: str) -> list[Problem]:
        return [Problem(model.file, line, f'parameter {key}: "{value}" {message}')]

    path = Path(value.replace(_MODEL_DIRECTORY_VARIABLE, str(model.directory)))
    relative = not path.is_absolute()
    if relative:
        path = root / path
    if not path.exists():
        where = f" (relative paths resolve against the repository root, {root})" if relative else ""
        return problem(f"does not exist{where}")
    if key.endswith("_dir") and not path.is_dir():
        return problem("is not a directory")
    if key == "tokenizer_dir" and not any((path / name).is_file() for name in _TOKENIZER_FILES):
        return problem(f"holds no tokenizer files (expected one of {', '.join(_TOKENIZER_FILES)})")
    if key in _ENGINE_PARAMETERS and model.config.backend == "tensorrtllm":
        missing = [] if (path / "config.json").is_file() else ["config.json"]
        if not path.is_dir() or not any(path.glob("*.engine")):
            missing.append("a *.engine file")
        if missing:
            return problem(f"is not a TensorRT-LLM engine directory: no {' and no '.join(missing)} (build it first)")
    return []


# --- ensembles -----------------------------------------------------------------------------------------------------
def _check_ensemble(model: _Model, models: dict[str, _Model]) -> list[Problem]:
    steps = model.config.ensemble_scheduling.step
    if not steps:
        return [Problem(model.file, _find_line(model, r"\bensemble_scheduling\b"), "ensemble has no steps")]
    produced = {tensor for step in steps for tensor in step.output_map.values()}
    inputs, outputs = {t.name: t for t in model.config.input}, {t.name: t for t in model.config.output}
    ensemble = _Ensemble(model, inputs, outputs, {}, produced)
    for step in steps:
        target = models.get(step.model_name)
        outputs = {t.name: t for t in target.config.output} if target and target.config else {}
        for key, tensor in step.output_map.items():
            if key in outputs:
                ensemble.producers[tensor] = (step.model_name, outputs[key])
    problems = []
    for step, span in zip(steps, _step_spans(model, len(steps)), strict=True):
        problems += _check_step(ensemble, step, span, models)
    problems += _check_data_flow(ensemble, steps)
    problems += _check_decoupled_origins(ensemble, steps, models)
    return problems


def _check_decoupled_origins(ensemble: _Ensemble, steps: Any, models: dict[str, _Model]) -> list[Problem]:
    """Triton refuses a step whose inputs come from different decoupled sources (the ensemble's own inputs count as
    one source): a decoupled model's responses cannot be joined with tensors from elsewhere."""
    origin = {tensor: ensemble.model.name for tensor in ensemble.inputs}
    problems = []
    for _ in range(len(steps)):  # steps may be listed out of order: propagate until nothing changes
        changed = False
        for step in steps:
            sources = {origin[t] for t in step.input_map.values() if t in origin}
            if len(sources) > 1:
                line = _find_line(ensemble.model, _quoted("model_name", step.model_name))
                message = (
                    f'step "{step.model_name}" mixes inputs from different decoupled sources '
                    f"({', '.join(sorted(sources))}); Triton rejects this ensemble"
                )
                problems.append(Problem(ensemble.model.file, line, message))
                return problems
            target = models.get(step.model_name)
            decoupled = bool(target and target.config and target.config.model_transaction_policy.decoupled)
            source = step.model_name if decoupled else next(iter(sources), ensemble.model.name)
            for tensor in step.output_map.values():
                if origin.get(tensor) != source:
                    origin[tensor], changed = source, True
        if not changed:
            break
    return problems


def _step_spans(model: _Model, count: int) -> list[tuple[int, int]]:
    """Line ranges [start, end) of each step, assuming each step's model_name comes first (as upstream writes it)."""
    begin = (_find_line(model, r"\bensemble_scheduling\b") or 1) - 1
    starts = [i for i in range(begin, len(model.lines)) if re.search(r"\bmodel_name\s*:", _code_part(model.lines[i]))]
    if len(starts) != count:
        return [(0, len(model.lines))] * count
    return list(zip(starts, starts[1:] + [len(model.lines)], strict=True))


def _map_line(model: _Model, kind: str, field_name: str, name: str, span: tuple[int, int]) -> int | None:
    """Line of `key:`/`value:` "name" inside an input_map or output_map block of one step."""
    pattern = re.compile(_quoted(field_name, name))
    current = None
    for index in range(*span):
        code = _code_part(model.lines[index])
        for found in _MAP_KIND.finditer(code):
            current = found.group(1)
        if current == kind and pattern.search(code):
            return index + 1
    return _find_line(model, pattern, *span)


def _check_step(ensemble: _Ensemble, step: Any, span: tuple[int, int], models: dict[str, _Model]) -> list[Problem]:
    head = _find_line(ensemble.model, _quoted("model_name", step.model_name), *span)
    target = models.get(step.model_name)
    if target is None:
        message = f'step model "{step.model_name}" is not in the repository (models: {", ".join(sorted(models))})'
        return [Problem(ensemble.model.file, head, message)]
    if target.config is None:
        return []  # its own parse problem is already reported
    problems = [
        Problem(ensemble.model.file, head, f'step "{target.name}" has an empty {kind}; Triton requires one')
        for kind in ("input_map", "output_map")
        if not getattr(step, kind)
    ]
    problems += _check_step_inputs(ensemble, step, span, target, head)
    problems += _check_step_outputs(ensemble, step, span, target)
    problems += _batch_problem(ensemble.model, target, head)
    return problems


def _check_step_inputs(
    ensemble: _Ensemble, step: Any, span: tuple[int, int], target: _Model, head: int | None
) -> list[Problem]:
    file = ensemble.model.file
    inputs = {t.name: t for t in target.config.input}
    problems = []
    for key, tensor in step.input_map.items():
        line = _map_line(ensemble.model, "input_map", "key", key, span)
        if key not in inputs:
            message = f'input_map key "{key}" is not an input of model "{target.name}" ({_listing(inputs)})'
            problems.append(Problem(file, line, message))
            continue
        line = _map_line(ensemble.model, "input_map", "value", tensor, span) or line
        consumer = (f"{target.name} input {key}", inputs[key].data_type)
        source = _source_of(ensemble, tensor)
        if source is not None:
            problems += _type_problem(file, line, tensor, source, consumer)
        elif tensor not in ensemble.produced:  # one written under an invalid output_map key is reported there
            message = f'tensor "{tensor}" feeding {consumer[0]} is neither an ensemble input nor a step output'
            problems.append(Problem(file, line, message))
    for name, tensor in inputs.items():
        if not tensor.optional and name not in step.input_map:
            problems.append(Problem(file, head, f'required input "{name}" of model "{target.name}" is not mapped'))
    return problems


def _source_of(ensemble: _Ensemble, tensor: str) -> tuple[str, int] | None:
    if tensor in ensemble.inputs:
        return f"ensemble input {tensor}", ensemble.inputs[tensor].data_type
    if tensor in ensemble.producers:
        producer, output = ensemble.producers[tensor]
        return f"{producer} output {output.name}", output.data_type
    return None


def _check_step_outputs(ensemble: _Ensemble, step: Any, span: tuple[int, int], target: _Model) -> list[Problem]:
    file = ensemble.model.file
    outputs = {t.name: t for t in target.config.output}
    problems = []
    for key, tensor in step.output_map.items():
        line = _map_line(ensemble.model, "output_map", "key", key, span)
        if key not in outputs:
            message = f'output_map key "{key}" is not an output of model "{target.name}" ({_listing(outputs)})'
            problems.append(Problem(file, line, message))
        elif tensor in ensemble.outputs:
            line = _map_line(ensemble.model, "output_map", "value", tensor, span) or line
            produced = (f"{target.name} output {key}", outputs[key].data_type)
            wanted = (f"ensemble output {tensor}", ensemble.outputs[tensor].data_type)
            problems += _type_problem(file, line, tensor, produced, wanted)
    return problems


def _type_problem(
    file: str, line: int | None, tensor: str, source: tuple[str, int], sink: tuple[str, int]
) -> list[Problem]:
    (source_label, source_type), (sink_label, sink_type) = source, sink
    # TYPE_INVALID means unset or a stubbed placeholder; either is reported on its own.
    if source_type == sink_type or 0 in (source_type, sink_type):
        return []
    name = _config_module().DataType.Name
    message = f'tensor "{tensor}": {source_label} is {name(source_type)} but {sink_label} is {name(sink_type)}'
    return [Problem(file, line, f"{message}; make the data types equal")]


def _batch_problem(ensemble: _Model, target: _Model, line: int | None) -> list[Problem]:
    wanted, allowed = ensemble.config.max_batch_size, target.config.max_batch_size
    if ensemble.approximate or target.approximate or wanted <= 0 or allowed >= wanted:
        return []
    message = f"ensemble max_batch_size {wanted} exceeds {target.name}'s max_batch_size {allowed}; Triton rejects it"
    return [Problem(ensemble.file, line, message)]


def _listing(tensors: dict[str, Any]) -> str:
    return f"it has: {', '.join(tensors) or 'none'}"


def _check_data_flow(ensemble: _Ensemble, steps: Any) -> list[Problem]:
    """What Triton's ensemble graph check rejects: unused inputs, unwritten outputs, stray or twice-written tensors."""
    model = ensemble.model
    consumed = {tensor for step in steps for tensor in step.input_map.values()}
    writes = [tensor for step in steps for tensor in step.output_map.values()]
    twice = sorted(t for t in set(writes) if writes.count(t) > 1)
    stray = sorted(set(writes) - consumed - set(ensemble.outputs))
    findings = [("value", t, f'ensemble tensor "{t}" is written by more than one output_map') for t in twice]
    findings += [
        ("name", t, f'ensemble input "{t}" is not used by any step') for t in ensemble.inputs if t not in consumed
    ]
    findings += [
        ("name", t, f'ensemble output "{t}" is not written by any step') for t in ensemble.outputs if t not in writes
    ]
    findings += [("value", t, f'ensemble tensor "{t}" is written but never used') for t in stray]
    return [Problem(model.file, _find_line(model, _quoted(key, t)), message) for key, t, message in findings]


# --- the llmapi model (TensorRT-LLM's PyTorch backend): config.pbtxt and its model.yaml must agree -------------------
_PARALLEL_KEYS = (
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "context_parallel_size",
    "moe_expert_parallel_size",
    "moe_tensor_parallel_size",
)
_LIMIT_KEYS = ("max_batch_size", "max_num_tokens", "max_seq_len", "max_input_len", "max_beam_width")
_SECTION_KEYS = (
    "kv_cache_config",
    "cuda_graph_config",
    "moe_config",
    "speculative_config",
    "scheduler_config",
    "pytorch_backend_config",
    "lora_config",
)
# A Hugging Face repository id (name or org/name); such a `model` is downloaded when the model loads.
_HUB_ID = re.compile(r"^(?!.*\.\.)[A-Za-z0-9_][\w.-]*(/[A-Za-z0-9_][\w.-]*)?$")


def _version_dirs(model: _Model) -> list[Path]:
    return sorted((p for p in model.directory.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _is_llmapi(model: _Model) -> bool:
    """A Python model declaring the llmapi inputs, or with a model.yaml beside its model.py."""
    if model.config.backend != "python":
        return False
    declared = any(tensor.name == LLMAPI_INPUT for tensor in model.config.input)
    return declared or any((version / MODEL_YAML).is_file() for version in _version_dirs(model))


def _check_llmapi(model: _Model, root: Path) -> list[Problem]:
    problems = []
    tensors = (("input", model.config.input, "text_input"), ("output", model.config.output, "text_output"))
    for kind, declared, name in tensors:
        if name not in {tensor.name for tensor in declared}:
            message = f'the llmapi model has no {kind} "{name}" (TYPE_STRING): its clients send and read text there'
            problems.append(Problem(model.file, None, message))
    for version in _version_dirs(model):
        problems += _check_model_yaml(model, root, version)
    return problems


def _check_model_yaml(model: _Model, root: Path, version: Path) -> list[Problem]:
    import yaml

    file = f"{model.name}/{version.name}/{MODEL_YAML}"
    path = version / MODEL_YAML
    if not path.is_file():
        message = "missing: the llmapi model reads its LLM API arguments (model, backend, parallel sizes) from it"
        return [Problem(file, None, message)]
    try:
        text = path.read_text(encoding="utf-8")
        lines = _key_lines(yaml.compose(text, Loader=yaml.SafeLoader))
        settings = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as error:
        return [Problem(file, None, f"cannot read: {error}")]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        detail = getattr(error, "problem", None) or str(error)
        return [Problem(file, mark.line + 1 if mark else None, f"does not parse as YAML: {detail}")]
    if not isinstance(settings, dict):
        message = f"must be a mapping of LLM API arguments (model, backend, ...), not {type(settings).__name__}"
        return [Problem(file, None, message)]

    def problem(key: tuple[str, ...], message: str) -> Problem:
        return Problem(file, lines.get(key) or lines.get(key[:1]), message)

    problems = _llmapi_arguments(settings, root, problem)
    problems += _triton_config(model, settings.get("triton_config"), "triton_config" in settings, problem)
    return problems


def _key_lines(node: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key in a composed YAML document, by key path."""
    import yaml

    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, str(key.value))
            lines[path] = key.start_mark.line + 1
            lines.update(_key_lines(value, path))
    return lines


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _llmapi_arguments(settings: dict, root: Path, problem: Any) -> list[Problem]:
    problems = []
    model = settings.get("model")
    if "model" not in settings:
        problems.append(problem(("model",), "has no `model` (a Hugging Face id or a checkpoint folder)"))
    elif not isinstance(model, str) or not model.strip():
        problems.append(problem(("model",), f"`model` must be a Hugging Face id or a checkpoint folder, got {model!r}"))
    elif (where := _model_location_problem(model, root)) is not None:
        problems.append(problem(("model",), where))
    backend = settings.get("backend")
    if backend != "pytorch":
        found = "has no `backend`" if "backend" not in settings else f"`backend` is {backend!r}"
        problems.append(
            problem(("backend",), f"{found}: this model serves TensorRT-LLM's PyTorch backend (backend: pytorch)")
        )
    for key in _PARALLEL_KEYS + _LIMIT_KEYS:
        value = settings.get(key)
        if key in settings and value is not None and not _positive_int(value):
            problems.append(problem((key,), f"`{key}` must be a positive integer, got {value!r}"))
    tp, ep = settings.get("tensor_parallel_size", 1), settings.get("moe_expert_parallel_size")
    if _positive_int(tp) and _positive_int(ep) and tp % ep:
        message = (
            f"`moe_expert_parallel_size` {ep} does not divide `tensor_parallel_size` {tp}: TensorRT-LLM splits the "
            "tensor-parallel ranks into expert x MoE-tensor parallel"
        )
        problems.append(problem(("moe_expert_parallel_size",), message))
    for key in _SECTION_KEYS:
        value = settings.get(key)
        if value is not None and not isinstance(value, dict):
            problems.append(problem((key,), f"`{key}` must be a mapping of its options, got {value!r}"))
    return problems


def _model_location_problem(model: str, root: Path) -> str | None:
    path = Path(model)
    if path.is_absolute():
        return None if path.exists() else f"`model` {model} does not exist"
    if (root / path).exists() or _HUB_ID.match(model):
        return None  # a folder relative to the repository root, or a Hugging Face id
    return f"`model` {model} is neither a folder (relative to the repository root, {root}) nor a Hugging Face id"


def _triton_config(model: _Model, config: Any, present: bool, problem: Any) -> list[Problem]:
    if not present:
        message = "has no `triton_config` {max_batch_size, decoupled} (upstream's llmapi model reads them there)"
        return [problem(("triton_config",), message)]
    if not isinstance(config, dict):
        return [problem(("triton_config",), f"`triton_config` must be a mapping, got {config!r}")]
    problems = []
    decoupled, batch = config.get("decoupled"), config.get("max_batch_size")
    where = ("triton_config", "decoupled")
    if not isinstance(decoupled, bool):
        problems.append(problem(where, f"`triton_config.decoupled` must be true or false, got {decoupled!r}"))
    elif model.config.HasField("model_transaction_policy") and not model.approximate:
        in_config = model.config.model_transaction_policy.decoupled
        if decoupled != in_config:
            message = (
                f"`triton_config.decoupled` is {str(decoupled).lower()} but {model.file} has decoupled: "
                f"{str(in_config).lower()}; make them equal"
            )
            problems.append(problem(where, message))
    where = ("triton_config", "max_batch_size")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        problems.append(problem(where, f"`triton_config.max_batch_size` must be an integer >= 0, got {batch!r}"))
    elif _find_line(model, r"\bmax_batch_size\s*:") is not None and not model.approximate:
        if batch != model.config.max_batch_size:
            message = (
                f"`triton_config.max_batch_size` is {batch} but {model.file} has max_batch_size: "
                f"{model.config.max_batch_size}; make them equal"
            )
            problems.append(problem(where, message))
    period = config.get("cancellation_check_period_ms")
    if period is not None and (isinstance(period, bool) or not isinstance(period, (int, float)) or period <= 0):
        where = ("triton_config", "cancellation_check_period_ms")
        problems.append(problem(where, f"`triton_config.cancellation_check_period_ms` must be > 0, got {period!r}"))
    return problems
