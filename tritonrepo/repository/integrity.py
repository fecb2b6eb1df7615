"""Whether a repository still holds what its manifest (tritonrepo.json) lists, and only files that live inside it.

Files below ALWAYS_HASHED_BELOW (code, configs, tokenizers) are hashed at every check. Larger ones (weights,
engines) are hashed once and then remembered by path, size and mtime in the digest memo that build, push and pull
share (stage_cache.FileDigests): a multi-GB repository checks in milliseconds, and a file rewritten in place changes
its mtime, so it is hashed again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from tritonrepo.repository.location import is_model_config
from tritonrepo.repository.manifest import MANIFEST, file_entry, sha256_file
from tritonrepo.repository.problem import Problem
from tritonrepo.repository.tree import walk

ALWAYS_HASHED_BELOW = 64 << 20


def manifest_problems(root: Path, digest_of_large) -> list[Problem]:
    """Files changed, missing or added since the manifest was written; [] when the repository has no manifest (one
    made with upstream tools) or one without digests. `digest_of_large(path)` gives a large file's sha256
    (FileDigests.of)."""
    path = root / MANIFEST
    if not path.is_file():
        return []
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return [Problem(MANIFEST, None, f"cannot be read as JSON ({error}); rebuild the repository")]
    if not isinstance(manifest, dict):
        return [Problem(MANIFEST, None, "is not a JSON object; rebuild the repository")]
    if "files" not in manifest:
        return []  # a hand-written manifest (e.g. entry points for the front end) vouches for no file
    files = manifest["files"]
    if not isinstance(files, dict):
        return [Problem(MANIFEST, None, "`files` is not a map of file digests; rebuild the repository")]
    problems = []
    for relative, entry in files.items():
        problem = _listed_file_problem(root, relative, entry, digest_of_large)
        if problem is not None:
            problems.append(Problem(relative, None, problem))
    for relative in _model_files(root):
        if relative not in files:
            problems.append(Problem(relative, None, f"not listed in {MANIFEST}: added after the build (remove it)"))
    return problems


def _listed_file_problem(root: Path, relative: str, entry: object, digest_of_large) -> str | None:
    parts = PurePosixPath(relative).parts
    if not relative or PurePosixPath(relative).is_absolute() or ".." in parts or "\\" in relative:
        return f"{MANIFEST} lists a path that is not inside the repository"
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("size"), int)
        or not isinstance(entry.get("sha256"), str)
    ):
        return f"{MANIFEST} has no valid size and sha256 for it; rebuild the repository"
    path = root / relative
    if not path.is_file():
        return f"missing: {MANIFEST} lists it ({entry['size']:,} bytes)"
    size = path.stat().st_size
    if is_model_config(relative):
        found = file_entry(root, relative)  # its portable form, as the manifest records it
    elif size != entry["size"]:
        found = {"size": size, "sha256": None}
    else:
        found = {"size": size, "sha256": sha256_file(path) if size < ALWAYS_HASHED_BELOW else digest_of_large(path)}
    if found["size"] != entry["size"]:
        return f"changed since the build: {found['size']:,} bytes, {MANIFEST} says {entry['size']:,}"
    if found["sha256"] != entry["sha256"]:
        return f"changed since the build: sha256 {found['sha256'][:12]}..., {MANIFEST} says {entry['sha256'][:12]}..."
    return None


def _model_files(root: Path) -> Iterator[str]:
    """Every file inside the model folders (Triton reads nothing else), walked as the manifest was made (tree.walk):
    folder links are not entered, links to files inside the repository count as files."""
    for relative in walk(root).files:
        if "/" in relative:  # Triton ignores files at the top level (the manifest, launch scripts)
            yield relative


def link_problems(root: Path) -> list[Problem]:
    """Links inside the repository that lead out of it: Triton would read files from elsewhere under our name."""
    return [
        Problem(link.path, None, f"is a link to {link.resolved}, outside the repository; copy what it points to inside")
        for link in walk(root).outside_links
    ]


def remember_large_files(digests, target: Path, files: dict) -> None:
    """Digests just computed for a manifest, remembered under the files' final paths (FileDigests.remember): the
    first check after a build then reads no weight file again."""
    for relative, entry in files.items():
        if entry["size"] >= ALWAYS_HASHED_BELOW:
            digests.remember(target / relative, entry["sha256"])
    digests.save()
