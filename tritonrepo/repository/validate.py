"""Find what would stop a Triton model repository loading, or make it unsafe to serve; relative path parameters
resolve against its root."""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonrepo.errors import ValidationError
from tritonrepo.repository.config_lines import ConfigLines
from tritonrepo.repository.integrity import link_problems, manifest_problems
from tritonrepo.repository.limits import MAX_CONFIG_BYTES, size_problems
from tritonrepo.repository.llmapi_checks import check_llmapi, is_llmapi
from tritonrepo.repository.location import ABSOLUTE_PARAMETERS, is_inside, repository_relative
from tritonrepo.repository.problem import Problem

__all__ = ["Problem", "check_repository", "validate_repository"]

_PLACEHOLDER = re.compile(r"\$\{([^}\s]*)\}")
# A quoted string or a placeholder: placeholders inside strings are kept, the others are stubbed so the rest parses.
# String bodies are unrolled (no alternation inside a repeat), so a megabyte-long string is matched in linear time.
_STRING_OR_PLACEHOLDER = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|\'[^\'\\\n]*(?:\\.[^\'\\\n]*)*\'|\$\{[^}\s]*\}')
_PARSE_POSITION = re.compile(r"^(\d+):(\d+)\s*:\s*")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_ENGINE_PARAMETERS = frozenset({"gpt_model_path", "engine_dir", "encoder_model_path"})
_MODEL_NAME_PARAMETERS = ("tensorrt_llm_model_name", "tensorrt_llm_draft_model_name")
# These point into the tritonserver installation (upstream default /opt/tritonserver/...), which need not exist here.
_SERVER_INSTALL_PARAMETERS = frozenset({"executor_worker_path"})
_MODEL_DIRECTORY_VARIABLE = "$$TRITON_MODEL_DIRECTORY"


@dataclass
class _Model:
    name: str
    directory: Path
    file: str
    index: ConfigLines = ConfigLines([])  # its lines, scanned once
    config: Any = None  # model_config_pb2.ModelConfig once it parses
    approximate: bool = False  # parsed with unquoted placeholders stubbed out, so its numbers are not the real ones


@dataclass
class _Ensemble:
    model: _Model
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    producers: dict[str, tuple[str, Any]]  # ensemble tensor -> (step model name, that model's output)
    produced: set[str]  # every output_map value, valid key or not


@dataclass(frozen=True)
class _Where:
    """The repository being checked (`root`) and where it is served from (`location`: a build's staging folder is
    checked before it takes the target's place, and its engine paths already name the target)."""

    root: Path
    location: Path

    def local(self, path: Path) -> Path:
        """A parameter's path as it is found here: relative ones against the root, the location's mapped to root."""
        if not path.is_absolute():
            return self.root / path
        if self.location != self.root and is_inside(path, self.location):
            return self.root / path.relative_to(self.location)
        return path


def validate_repository(root: Path, *, location: Path | None = None, digests: Any = None) -> list[Problem]:
    """Every problem found in the repository at `root`, sorted by file then line; empty when it looks loadable and
    safe to serve. `location`: where it will be served from when that is not `root` (a build's staging folder).
    `digests` remembers large files' sha256 (stage_cache.FileDigests; by default the shared memo in the cache)."""
    root = Path(root)
    if not root.is_dir():
        state = "is not a directory" if root.exists() else "does not exist"
        return [Problem(".", None, f"repository root {root} {state}")]
    where = _Where(root.absolute(), Path(location).absolute() if location is not None else root.absolute())
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
        problems += size_problems(model.file, model.config, model.index)
        problems += _check_parameters(model, where, models)
        if model.config.platform == "ensemble":
            problems += _check_ensemble(model, models)
        if is_llmapi(model):
            problems += check_llmapi(model, root)
    problems += link_problems(root)
    problems += _integrity_problems(root, digests)
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.message))


def check_repository(root: Path, *, location: Path | None = None) -> None:
    """Raise ValidationError listing every problem when the repository at `root` has any."""
    problems = validate_repository(root, location=location)
    if problems:
        raise ValidationError([str(p) for p in problems], root=str(root))


def _integrity_problems(root: Path, digests: Any) -> list[Problem]:
    if digests is not None:
        return manifest_problems(root, digests.of)
    from tritonrepo.planning.stage_cache import FileDigests
    from tritonrepo.source.resolve import cache_root

    memo = FileDigests(cache_root() / "file-digests.json")
    try:
        return manifest_problems(root, memo.of)
    finally:
        with contextlib.suppress(OSError):  # a read-only cache (e.g. a container's): the next check hashes again
            memo.save()


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

    path = model.directory / "config.pbtxt"
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:  # refused before reading: parsing is what costs memory
            message = f"is {size:,} bytes, above the limit of {MAX_CONFIG_BYTES:,} for a model configuration"
            return [Problem(model.file, None, f"{message} (real ones are a few KB); it is not parsed")]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return [Problem(model.file, None, f"cannot read: {error}")]
    model.index = ConfigLines(text.splitlines())
    problems = _placeholder_problems(model) if "${" in text else []
    stubbed = _STRING_OR_PLACEHOLDER.sub(_stub, text) if "${" in text else text
    model.approximate = stubbed != text
    try:
        model.config = text_format.Parse(stubbed, _config_module().ModelConfig())
    except text_format.ParseError as error:
        line, message = _parse_error_position(error)
        # A parse error on a placeholder's line is that placeholder's fault, already reported with a better hint.
        if line is None or line not in {p.line for p in problems}:
            problems.append(Problem(model.file, line, f"does not parse as a Triton ModelConfig: {message}"))
    return problems


def _stub(match: re.Match[str]) -> str:
    return match.group(0) if match.group(0)[0] in "\"'" else "0"


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
    for number, code in enumerate(model.index.code, start=1):
        if "${" not in code:
            continue
        for token in _STRING_OR_PLACEHOLDER.findall(code):
            effect = "the model reads the literal text" if token[0] in "\"'" else "Triton cannot parse the config"
            for variable in _PLACEHOLDER.findall(token):
                hint = f"give it a value (fill_template.py -i {model.file} {variable}:<value>) or edit the line"
                message = f"unfilled template variable ${{{variable}}} ({effect}): {hint}"
                problems.append(Problem(model.file, number, message))
    return problems


# --- per-model checks ----------------------------------------------------------------------------------------------
def _check_identity(model: _Model) -> list[Problem]:
    name = model.config.name
    if not name or name == model.name:
        return []
    message = f'name "{name}" differs from its directory "{model.name}"; Triton rejects it (make them equal)'
    return [Problem(model.file, model.index.value_line("name", name), message)]


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
            line = model.index.field_line("specific")
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
            line = model.index.value_line("name", tensor.name) if tensor.name else None
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


def _check_parameters(model: _Model, where: _Where, models: dict[str, _Model]) -> list[Problem]:
    problems = []
    for key, parameter in sorted(model.config.parameters.items()):
        value = parameter.string_value
        if not value or _PLACEHOLDER.search(value):
            continue
        line = model.index.value_line("key", key)
        if key in _MODEL_NAME_PARAMETERS:
            if value not in models:
                message = f'parameter {key} names model "{value}", which is not in the repository'
                problems.append(Problem(model.file, line, message))
        elif key.lower().endswith(("_dir", "_path")) and key not in _SERVER_INSTALL_PARAMETERS:
            problems += _check_path(model, where, key, value, line)
    return problems


def _check_path(model: _Model, where: _Where, key: str, value: str, line: int | None) -> list[Problem]:
    def problem(message: str) -> list[Problem]:
        return [Problem(model.file, line, f'parameter {key}: "{value}" {message}')]

    given = Path(value.replace(_MODEL_DIRECTORY_VARIABLE, str(where.root / model.name)))
    path = where.local(given)
    if not is_inside(path.resolve(), where.root.resolve()):
        return problem(_outside(key, value, where, path))
    if not path.exists():
        relative = "" if given.is_absolute() else f" (relative paths resolve against the repository root, {where.root})"
        return problem(f"does not exist{relative}")
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
    if key in ABSOLUTE_PARAMETERS and not given.is_absolute():
        return problem(
            "is relative: the tensorrtllm backend opens it from tritonserver's working directory, not the repository "
            f"(Triton needs a local absolute path here); run `tritonrepo relocate {where.root}`"
        )
    return []


def _outside(key: str, value: str, where: _Where, path: Path) -> str:
    """Why a path parameter that leaves the repository is refused, with the fix when the repository was moved."""
    if key in ABSOLUTE_PARAMETERS and Path(value).is_absolute():
        inside = repository_relative(value, where.root)
        if inside is not None:
            return (
                f"points outside the repository: it names {inside} of the repository's old location (it was moved "
                f"or copied since); run `tritonrepo relocate {where.root}` to point it here"
            )
    return (
        f"resolves to {path.resolve()}, outside the repository {where.root}: a served model must read only files "
        "inside its repository (copy them in)"
    )


# --- ensembles -----------------------------------------------------------------------------------------------------
def _check_ensemble(model: _Model, models: dict[str, _Model]) -> list[Problem]:
    steps = model.config.ensemble_scheduling.step
    if not steps:
        return [Problem(model.file, model.index.field_line("ensemble_scheduling"), "ensemble has no steps")]
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
    for step in _in_data_order(steps):  # steps may be listed in any order; each is visited once, after its inputs
        sources = {origin[t] for t in step.input_map.values() if t in origin}
        if len(sources) > 1:
            line = ensemble.model.index.value_line("model_name", step.model_name)
            message = (
                f'step "{step.model_name}" mixes inputs from different decoupled sources '
                f"({', '.join(sorted(sources))}); Triton rejects this ensemble"
            )
            return [Problem(ensemble.model.file, line, message)]
        target = models.get(step.model_name)
        decoupled = bool(target and target.config and target.config.model_transaction_policy.decoupled)
        source = step.model_name if decoupled else next(iter(sources), ensemble.model.name)
        for tensor in step.output_map.values():
            origin[tensor] = source
    return []


def _in_data_order(steps: Any) -> list[Any]:
    """The steps with each after the steps writing its inputs (Kahn's algorithm); a cycle's steps come last, as listed."""
    writers: dict[str, list[int]] = {}
    for index, step in enumerate(steps):
        for tensor in step.output_map.values():
            writers.setdefault(tensor, []).append(index)
    waiting = [0] * len(steps)
    readers: list[list[int]] = [[] for _ in steps]
    for index, step in enumerate(steps):
        for writer in {w for tensor in step.input_map.values() for w in writers.get(tensor, ()) if w != index}:
            waiting[index] += 1
            readers[writer].append(index)
    ready = [index for index, count in enumerate(waiting) if count == 0]
    order = []
    while ready:
        index = ready.pop()
        order.append(index)
        for reader in readers[index]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                ready.append(reader)
    done = set(order)
    order += [index for index in range(len(steps)) if index not in done]
    return [steps[index] for index in order]


def _step_spans(model: _Model, count: int) -> list[tuple[int, int]]:
    """Line ranges [start, end) of each step, assuming each step's model_name comes first (as upstream writes it)."""
    begin = (model.index.field_line("ensemble_scheduling") or 1) - 1
    starts = [number - 1 for number in model.index.field_lines("model_name") if number > begin]
    if len(starts) != count:
        return [(0, model.index.count)] * count
    return list(zip(starts, starts[1:] + [model.index.count], strict=True))


def _check_step(ensemble: _Ensemble, step: Any, span: tuple[int, int], models: dict[str, _Model]) -> list[Problem]:
    head = ensemble.model.index.value_line("model_name", step.model_name, *span)
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
        line = ensemble.model.index.mapped_line("input_map", "key", key, *span)
        if key not in inputs:
            message = f'input_map key "{key}" is not an input of model "{target.name}" ({_listing(inputs)})'
            problems.append(Problem(file, line, message))
            continue
        line = ensemble.model.index.mapped_line("input_map", "value", tensor, *span) or line
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
        line = ensemble.model.index.mapped_line("output_map", "key", key, *span)
        if key not in outputs:
            message = f'output_map key "{key}" is not an output of model "{target.name}" ({_listing(outputs)})'
            problems.append(Problem(file, line, message))
        elif tensor in ensemble.outputs:
            line = ensemble.model.index.mapped_line("output_map", "value", tensor, *span) or line
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
    twice = sorted(t for t, count in Counter(writes).items() if count > 1)
    stray = sorted(set(writes) - consumed - set(ensemble.outputs))
    findings = [("value", t, f'ensemble tensor "{t}" is written by more than one output_map') for t in twice]
    findings += [
        ("name", t, f'ensemble input "{t}" is not used by any step') for t in ensemble.inputs if t not in consumed
    ]
    findings += [
        ("name", t, f'ensemble output "{t}" is not written by any step') for t in ensemble.outputs if t not in writes
    ]
    findings += [("value", t, f'ensemble tensor "{t}" is written but never used') for t in stray]
    return [Problem(model.file, model.index.value_line(key, t), message) for key, t, message in findings]
