"""Render the five-model repository from our templates: a pure function from parameters to file contents."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonrepo.errors import RenderError
from tritonrepo.repository.params import MODELS, RepositoryParams

PIPELINE = "inflight_batcher_llm"
SHARED_MODULE = "_shared/model_utils.py"


def templates_root() -> Path:
    """all_models/ inside an installed wheel, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "all_models", here.parent / "all_models"):
        if (candidate / PIPELINE).is_dir():
            return candidate
    raise RenderError(
        "the model templates (all_models/) are missing from this installation", hint="Reinstall tritonrepo."
    )


@dataclass(frozen=True)
class RenderedRepository:
    """Relative path -> file content, and the version folders that must exist even when empty."""

    files: dict[str, str]
    directories: tuple[str, ...]


def _pbtxt_bool(value: object) -> str:
    if not isinstance(value, bool):
        raise RenderError(f"expected a boolean template value, got {value!r}")
    return "true" if value else "false"


def template_environment(root: Path):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,  # a missing value fails here, never leaves a gap in a config
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["pbtxt_bool"] = _pbtxt_bool
    return env


def _python_files(model_dir: Path) -> list[Path]:
    version = model_dir / "1"
    return sorted(p for p in version.glob("*.py")) if version.is_dir() else []


def render_repository(params: RepositoryParams, root: Path | None = None) -> RenderedRepository:
    """All config.pbtxt files and Python model files for `params`; raises RenderError naming the template."""
    import jinja2

    root = root or templates_root()
    env = template_environment(root)
    variables = params.template_vars()
    shared = (root / PIPELINE / SHARED_MODULE).read_text()
    files: dict[str, str] = {}
    for model in MODELS:
        template_name = f"{PIPELINE}/{model}/config.pbtxt.j2"
        try:
            files[f"{model}/config.pbtxt"] = env.get_template(template_name).render(**variables)
        except jinja2.UndefinedError as error:
            raise RenderError(
                f"{template_name}: {error.message}", hint="Every template variable needs a value."
            ) from None
        except jinja2.TemplateError as error:
            raise RenderError(f"{template_name}: {error}") from None
        python_files = _python_files(root / PIPELINE / model)
        if model == "tensorrt_llm" and params.runtime != "hf":
            python_files = []  # the C++ backend runs the engine; our runtime's code would only mislead
        for path in python_files:
            files[f"{model}/1/{path.name}"] = path.read_text()
        if python_files:
            files[f"{model}/1/model_utils.py"] = shared
    directories = tuple(f"{model}/1" for model in MODELS)
    return RenderedRepository(files=files, directories=directories)
