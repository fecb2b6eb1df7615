"""Write a rendered repository: everything goes into a staging folder that replaces the target only when complete."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from tritonrepo.errors import TritonRepoError
from tritonrepo.files import create_hidden_folder
from tritonrepo.repository.location import is_model_config, localized_text
from tritonrepo.repository.manifest import MANIFEST
from tritonrepo.repository.render import RenderedRepository


class OutputError(TritonRepoError):
    exit_code = 2


@contextlib.contextmanager
def staged_directory(target: Path, *, manifest: str = MANIFEST) -> Iterator[Path]:
    """Yield an empty folder next to `target`; on success it takes target's place, on any failure it is removed.

    An existing target is replaced only if it is one of ours (it holds `manifest`) or empty, so a mistyped --output
    never deletes someone's files.
    """
    target = target.resolve()
    if target.exists() and not _replaceable(target, manifest):
        raise OutputError(
            f"{target} exists and is not a tritonrepo {'repository' if manifest == MANIFEST else 'deployment'} "
            f"(no {manifest})",
            hint="Choose another --output, or remove that folder yourself.",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = create_hidden_folder(target.parent, target.name, ".staging")
    try:
        yield staging
        _swap(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replaceable(target: Path, manifest: str) -> bool:
    return target.is_dir() and ((target / manifest).is_file() or not any(target.iterdir()))


def _swap(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
        return
    retired = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, retired)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(retired, target)  # put the previous repository back
        raise
    shutil.rmtree(retired, ignore_errors=True)


def write_rendered(root: Path, rendered: RenderedRepository, *, location: Path | None = None) -> None:
    """Write the files into `root`; the engine paths in model configs are made absolute for `location`, the folder
    the repository will be served from (default `root`): the tensorrtllm backend does not resolve them itself."""
    for directory in rendered.directories:
        (root / directory).mkdir(parents=True, exist_ok=True)
    for relative, content in rendered.files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(localized_text(content, location or root) if is_model_config(relative) else content)


def place_files(source_dir: Path, names: Iterable[str], destination: Path) -> list[str]:
    """Hard-link (or copy, across file systems) the files of source_dir matching `names` (glob patterns)."""
    destination.mkdir(parents=True, exist_ok=True)
    placed = []
    for pattern in names:
        for path in sorted(source_dir.glob(pattern)):
            if not path.is_file() or (destination / path.name).exists():
                continue
            real = path.resolve()  # the Hugging Face cache keeps symlinks to blobs
            try:
                os.link(real, destination / path.name)
            except OSError:
                shutil.copy2(real, destination / path.name)
            placed.append(path.name)
    return placed
