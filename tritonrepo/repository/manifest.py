"""The repository manifest (tritonrepo.json): what was built, from what, with which tools, and every file's sha256."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from tritonrepo.repository.limits import MAX_CONFIG_BYTES
from tritonrepo.repository.location import is_model_config, portable_bytes

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
    folder will be served from (see file_entry)."""
    digests = {}
    # os.walk, not rglob: it skips __pycache__ without entering it and costs one stat per file, which is what keeps a
    # no-op push of thousands of files well under a second.
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = [name for name in subfolders if name != "__pycache__"]
        for name in names:
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            if relative == MANIFEST or not path.is_file():
                continue
            digests[relative] = file_entry(root, relative, digest_of, location)
    return dict(sorted(digests.items(), key=lambda item: item[0].split("/")))  # the order Path sorting gives


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
    fd, temp = tempfile.mkstemp(prefix=f".{MANIFEST}.", dir=root)
    with os.fdopen(fd, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(temp, root / MANIFEST)


def read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
