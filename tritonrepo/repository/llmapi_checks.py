"""Checks of the llmapi model (TensorRT-LLM's PyTorch backend in one Python model): its config.pbtxt and model.yaml
must agree, and the checkpoint it loads must be a Hugging Face id or a folder inside the repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tritonrepo.pytorch_path.triton_repo import LLMAPI_INPUT, MODEL_YAML
from tritonrepo.repository.limits import LLMAPI_LIMITS, MAX_MODEL_YAML_BYTES, too_large
from tritonrepo.repository.location import is_inside
from tritonrepo.repository.problem import Problem

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


def _version_dirs(model: Any) -> list[Path]:
    return sorted((p for p in model.directory.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def is_llmapi(model: Any) -> bool:
    """A Python model declaring the llmapi inputs, or with a model.yaml beside its model.py."""
    if model.config.backend != "python":
        return False
    declared = any(tensor.name == LLMAPI_INPUT for tensor in model.config.input)
    return declared or any((version / MODEL_YAML).is_file() for version in _version_dirs(model))


def check_llmapi(model: Any, root: Path) -> list[Problem]:
    problems = []
    tensors = (("input", model.config.input, "text_input"), ("output", model.config.output, "text_output"))
    for kind, declared, name in tensors:
        if name not in {tensor.name for tensor in declared}:
            message = f'the llmapi model has no {kind} "{name}" (TYPE_STRING): its clients send and read text there'
            problems.append(Problem(model.file, None, message))
    for version in _version_dirs(model):
        problems += _check_model_yaml(model, root, version)
    return problems


def _check_model_yaml(model: Any, root: Path, version: Path) -> list[Problem]:
    import yaml

    file = f"{model.name}/{version.name}/{MODEL_YAML}"
    path = version / MODEL_YAML
    if not path.is_file():
        message = "missing: the llmapi model reads its LLM API arguments (model, backend, parallel sizes) from it"
        return [Problem(file, None, message)]
    if (size := path.stat().st_size) > MAX_MODEL_YAML_BYTES:
        return [
            Problem(file, None, f"is {size:,} bytes, above the limit of {MAX_MODEL_YAML_BYTES:,} for LLM API arguments")
        ]
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
        elif _positive_int(value) and key in LLMAPI_LIMITS and value > LLMAPI_LIMITS[key]:
            problems.append(problem((key,), too_large(f"`{key}`", value, LLMAPI_LIMITS[key])))
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
    """None for a Hugging Face id or a folder inside the repository (relative paths resolve against its root)."""
    path = Path(model)
    if not path.is_absolute() and not (root / path).exists() and _HUB_ID.match(model):
        return None  # downloaded when the model loads
    local = path if path.is_absolute() else root / path
    if path.is_absolute() and not local.exists():
        return f"`model` {model} does not exist"
    if not local.exists():
        return f"`model` {model} is neither a folder (relative to the repository root, {root}) nor a Hugging Face id"
    if not is_inside(local.resolve(), root.resolve()):
        return (
            f"`model` {model} resolves to {local.resolve()}, outside the repository: the model would load weights "
            "from elsewhere under this repository's name (put the checkpoint inside the repository, or use a Hub id)"
        )
    return None


def _triton_config(model: Any, config: Any, present: bool, problem: Any) -> list[Problem]:
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
    elif model.index.field_line("max_batch_size") is not None and not model.approximate:
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
