"""Where a repository lives: the engine paths the tensorrtllm backend reads must be absolute, and their portable form.

The tensorrtllm backend opens `gpt_model_path` as given, so a relative path resolves against tritonserver's working
directory, not the repository (Triton's rule for it: a local absolute path). A repository therefore names its own
location in those parameters. Their portable form, the path relative to the repository root, is what the manifest's
digests, push and pull see, so moving, pulling or relocating a repository changes no digest."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path, PurePosixPath

from tritonrepo.errors import RenderError

# Parameters the tensorrtllm backend (and upstream's Python TensorRT-LLM model) opens relative to its working directory.
ABSOLUTE_PARAMETERS = ("gpt_model_path", "encoder_model_path")
CONFIG = "config.pbtxt"
_ENGINE_PATH = re.compile(
    r'(\bkey\s*:\s*"(?:gpt_model_path|encoder_model_path)"\s*value\s*:?\s*\{\s*string_value\s*:\s*")([^"\\\n]*)(")'
)
_UNQUOTABLE = ('"', "\\", "\n")


def is_model_config(relative: str) -> bool:
    """Whether a repository-relative path is a model's config.pbtxt (`<model>/config.pbtxt`)."""
    parts = relative.split("/")
    return len(parts) == 2 and parts[1] == CONFIG


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path` is `root` or below it, both taken as they are (resolve them first to follow links)."""
    return path == root or root in path.parents


def repository_relative(value: str, root: Path, location: Path | None = None) -> str | None:
    """The path inside the repository at `root` that an engine path parameter names, or None when it names none.

    A relative value is taken as it is (unless `..` leaves the root). An absolute one is made relative when it lies
    under the repository's location: `root` itself, or `location` (where a build's staging folder will be served from).
    A repository moved since its paths were written keeps its old location in them: then the longest tail of the
    value that names something inside `root` is the answer."""
    path = PurePosixPath(value)
    if not value or ".." in path.parts:
        return None
    if not path.is_absolute():
        return path.as_posix()
    bases = [Path(location).absolute()] if location is not None else []
    bases += [Path(root).absolute(), Path(root).resolve()]
    for base in bases:
        if path.is_relative_to(base.as_posix()) and path != PurePosixPath(base.as_posix()):
            return path.relative_to(base.as_posix()).as_posix()
    parts = path.parts[1:]
    for start in range(len(parts)):
        tail = PurePosixPath(*parts[start:])
        if (Path(root) / tail).exists():
            return tail.as_posix()
    return None


def _rewrite(text: str, new_value) -> str:
    def replace(match: re.Match[str]) -> str:
        value = new_value(match.group(2))
        return match.group(0) if value is None else f"{match.group(1)}{value}{match.group(3)}"

    return _ENGINE_PATH.sub(replace, text) if "_model_path" in text else text


def localized_text(text: str, root: Path) -> str:
    """`text` (a config.pbtxt) with each engine path that names something in the repository made absolute for `root`."""
    base = Path(root).resolve()

    def absolute(value: str) -> str | None:
        relative = repository_relative(value, root)
        if relative is None:
            return None
        if any(char in str(base) for char in _UNQUOTABLE):
            raise RenderError(
                f"the repository folder {base} holds a quote, backslash or newline, which a config.pbtxt path cannot "
                "hold",
                hint="Choose another folder for the repository.",
            )
        return (base / relative).as_posix()

    return _rewrite(text, absolute)


def portable_text(text: str, root: Path, location: Path | None = None) -> str:
    """`text` (a config.pbtxt) with each engine path that names something in the repository made root-relative."""
    return _rewrite(text, lambda value: repository_relative(value, root, location))


def portable_bytes(data: bytes, root: Path, location: Path | None = None) -> bytes:
    """The portable form of a config.pbtxt's bytes (any bytes that are not UTF-8 come back unchanged)."""
    text = data.decode("utf-8", errors="surrogateescape")
    return portable_text(text, root, location).encode("utf-8", errors="surrogateescape")


def relocate(root: Path) -> list[str]:
    """Make every model config's engine paths absolute for where the repository is now; returns the configs changed.

    Each rewrite is atomic (a temp file beside it, then a rename). The portable form, and so every digest in the
    manifest, stays the same."""
    from tritonrepo.repository.limits import MAX_CONFIG_BYTES

    root = Path(root)
    changed = []
    for config in sorted(root.glob(f"*/{CONFIG}")):
        if not config.is_file() or config.stat().st_size > MAX_CONFIG_BYTES:
            continue  # too large to be a config; validation reports it
        data = config.read_bytes()
        text = data.decode("utf-8", errors="surrogateescape")
        new = localized_text(text, root)
        if new != text:
            _replace(config, new.encode("utf-8", errors="surrogateescape"))
            changed.append(config.relative_to(root).as_posix())
    return changed


def _replace(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, path.stat().st_mode & 0o7777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
