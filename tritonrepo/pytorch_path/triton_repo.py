"""The Triton "llmapi" repository (TensorRT-LLM's PyTorch backend in one Python model): rendered from LLM API
arguments (pure), and read back when serving (how many GPU ranks it needs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from tritonrepo.errors import RenderError, ValidationError

MODEL_YAML = "model.yaml"
TEMPLATE_DIR = "llmapi/tensorrt_llm"
# Declared by llmapi models (ours and upstream's) and by no other model: how a repository's llmapi model is found.
LLMAPI_INPUT = "sampling_param_max_tokens"
# LLM API arguments whose product is the number of GPU ranks (TensorRT-LLM's Mapping: world size = tp * pp * cp).
RANK_KEYS = ("tensor_parallel_size", "pipeline_parallel_size", "context_parallel_size")

_HEADER = (
    "# LLM API arguments for tensorrt_llm.LLM(**arguments) (TensorRT-LLM PyTorch backend), read by model.py;\n"
    "# triton_config repeats config.pbtxt's max_batch_size and decoupled (upstream's llmapi model reads them here).\n"
)


def render_llmapi_repository(
    llm_args: dict,
    *,
    triton_max_batch_size: int,
    decoupled: bool = True,
    model_name: str = "tensorrt_llm",
) -> dict[str, str]:
    """{relative path: file text} of a one-model llmapi repository: config.pbtxt, 1/model.yaml, 1/model.py."""
    import jinja2
    import yaml

    from tritonrepo.repository.render import template_environment, templates_root

    _check_arguments(llm_args, triton_max_batch_size, decoupled, model_name)
    settings = _plain(llm_args, "llm_args")
    settings.setdefault("backend", "pytorch")
    settings["triton_config"] = {"max_batch_size": triton_max_batch_size, "decoupled": decoupled}
    root = templates_root()
    template_name = f"{TEMPLATE_DIR}/config.pbtxt.j2"
    try:
        config = (
            template_environment(root)
            .get_template(template_name)
            .render(model_name=model_name, triton_max_batch_size=triton_max_batch_size, decoupled=decoupled)
        )
    except jinja2.TemplateError as error:
        raise RenderError(f"{template_name}: {error}") from None
    return {
        f"{model_name}/config.pbtxt": config,
        f"{model_name}/1/{MODEL_YAML}": _HEADER + yaml.safe_dump(settings, sort_keys=False, allow_unicode=True),
        f"{model_name}/1/model.py": (root / TEMPLATE_DIR / "1" / "model.py").read_text(),
    }


def _check_arguments(llm_args: Any, max_batch_size: Any, decoupled: Any, model_name: Any) -> None:
    if not isinstance(llm_args, Mapping):
        raise RenderError(f"llm_args must be a dict of LLM API arguments, got {type(llm_args).__name__}")
    model = llm_args.get("model")
    if not isinstance(model, (str, PurePath)) or not str(model):
        raise RenderError("llm_args has no `model` (a Hugging Face id or a checkpoint folder)")
    if llm_args.get("backend", "pytorch") != "pytorch":
        raise RenderError(f"llm_args backend is {llm_args['backend']!r}; the llmapi repository serves backend pytorch")
    if "triton_config" in llm_args:
        raise RenderError("llm_args must not hold triton_config; pass triton_max_batch_size and decoupled instead")
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 0:
        raise RenderError(f"triton_max_batch_size must be an integer >= 0, got {max_batch_size!r}")
    if not isinstance(decoupled, bool):
        raise RenderError(f"decoupled must be a boolean, got {decoupled!r}")
    if not isinstance(model_name, str) or not model_name or "/" in model_name or model_name.startswith("."):
        raise RenderError(f"model_name {model_name!r} cannot be a model folder name")


def _plain(value: Any, where: str) -> Any:
    """`value` as YAML-safe data (dicts, lists, str, numbers, booleans, None); paths become strings."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise RenderError(f"{where} is a {type(value).__name__}, which model.yaml cannot hold (use plain data)")


# --- reading a repository back (serving) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LlmapiModel:
    """An llmapi model in a repository: its folder name and the LLM API arguments of its model.yaml."""

    name: str
    settings: dict

    @property
    def world_size(self) -> int:
        return world_size(self.settings)


def world_size(settings: Mapping) -> int:
    """GPU ranks the LLM API arguments ask for (absent sizes count as 1)."""
    size = 1
    for key in RANK_KEYS:
        size *= int(settings.get(key) or 1)
    return size


def find_llmapi_model(repository: Path) -> LlmapiModel | None:
    """The first llmapi model in a local repository (by folder name), or None when it has none.

    Raises ValidationError when the model's model.yaml is missing or is not a mapping of arguments."""
    repository = Path(repository)
    for folder in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
        if not _declares_llmapi_input(folder / "config.pbtxt"):
            continue
        path = folder / "1" / MODEL_YAML
        problem = f"{folder.name}/1/{MODEL_YAML}: "
        try:
            import yaml

            settings = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ValidationError([problem + f"cannot read it ({error.strerror})"], root=str(repository)) from None
        except yaml.YAMLError as error:
            raise ValidationError([problem + f"does not parse as YAML: {error}"], root=str(repository)) from None
        if not isinstance(settings, dict):
            raise ValidationError([problem + "is not a mapping of LLM API arguments"], root=str(repository))
        for key in RANK_KEYS:
            value = settings.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                message = f"{key} must be a positive integer, got {value!r}"
                raise ValidationError([problem + message], root=str(repository))
        return LlmapiModel(folder.name, settings)
    return None


def llmapi_world_size(repository: Path) -> int | None:
    """tensor x pipeline (x context) parallel size of the repository's llmapi model; None when it has none."""
    model = find_llmapi_model(repository)
    return None if model is None else model.world_size


def _declares_llmapi_input(config_path: Path) -> bool:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    try:
        config = text_format.Parse(config_path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    except (OSError, UnicodeDecodeError, text_format.ParseError):
        return False  # not ours to judge here: `tritonrepo validate` reports it
    return config.backend == "python" and any(tensor.name == LLMAPI_INPUT for tensor in config.input)
