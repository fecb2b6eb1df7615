"""The repository manifest (tritonrepo.json): what was built, from what, with which tools, and every file's sha256."""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from tritonrepo.files import write_atomically
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


def file_digests(root: Path, digest_of: Callable[[Path], str] = sha256_file) -> dict[str, dict[str, object]]:
    """{relative path: {size, sha256}} for every file under root except the manifest, sorted by path.
    `digest_of` may remember digests of unchanged files (stage_cache.FileDigests.of). Symbolic links are never
    followed out of the tree (tree.walk): a link to a file inside root counts as that content, others are left out."""
    digests = {}
    for relative in walk(root).files:
        if relative != MANIFEST:
            path = root / relative
            digests[relative] = {"size": path.stat().st_size, "sha256": digest_of(path)}
    return digests


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
