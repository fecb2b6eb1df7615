"""The repository manifest (tritonrepo.json): what was built, from what, with which tools, and every file's sha256."""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from tritonrepo.files import write_atomically
from tritonrepo.repository.limits import MAX_CONFIG_BYTES
from tritonrepo.repository.location import is_model_config, portable_bytes
from tritonrepo.repository.tree import walk

MANIFEST = "tritonrepo.json"
FORMAT = 1
_LIBRARIES = (
    "tritonclient",
    "nvidia-pytriton",
    "torch",
    "transformers",
    "tokenizers",
    "tensorrt_llm",
    "jinja2",
    "protobuf",
)


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(root: Path, relative: str, digest_of: Callable[[Path], str | None] = sha256_file, location=None) -> dict:
    """{size, sha256} of one file as the manifest records it. A model's config.pbtxt counts in its portable form
    (engine paths relative to the root, repository/location.py), so where the repository lives changes no digest;
    it is always hashed (it is small), whatever `digest_of` does."""
    path = root / relative
    data = portable_config(root, relative, location)
    if data is not None:
        return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return {"size": path.stat().st_size, "sha256": digest_of(path)}


def portable_config(root: Path, relative: str, location: Path | None = None) -> bytes | None:
    """A model config's bytes in the portable form the manifest lists and push stores; None for any other file (and
    for a config too large to be one, which is listed as it is and refused by validation)."""
    path = root / relative
    if not is_model_config(relative) or path.stat().st_size > MAX_CONFIG_BYTES:
        return None
    return portable_bytes(path.read_bytes(), root, location)


def file_digests(
    root: Path, digest_of: Callable[[Path], str | None] = sha256_file, location: Path | None = None
) -> dict[str, dict[str, object]]:
    """{relative path: {size, sha256}} for every file under root except the manifest, sorted by path.
    `digest_of` may remember digests of unchanged files (stage_cache.FileDigests.of); `location` is where a staging
    folder will be served from (see file_entry). Symbolic links are never followed out of the tree (tree.walk): a
    link to a file inside root counts as that content, others are left out."""
    return {
        relative: file_entry(root, relative, digest_of, location)
        for relative in walk(root).files  # sorted the way Path sorting sorts
        if relative != MANIFEST
    }


@contextlib.contextmanager
def hashing_with_progress(root: Path, desc: str) -> Iterator[Callable[[Path], str]]:
    """A `digest_of` for file_digests that advances one progress bar, in bytes, over every file under root (a
    deployment may hold hundreds of GB of weights: hashing them is long work)."""
    from tritonrepo import progress

    total = sum((root / relative).stat().st_size for relative in walk(root).files)
    with progress.bar(total, desc) as bar:

        def digest_of(path: Path) -> str:
            value = sha256_file(path)
            bar.update(path.stat().st_size)
            return value

        yield digest_of


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_manifest(root: Path, manifest: dict) -> None:
    """Atomically: a temp file in the same folder, then rename."""
    write_atomically(root / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
