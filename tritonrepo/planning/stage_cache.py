"""Content-addressed stage cache: a build stage is skipped when the hash of its inputs (file contents + settings)
is unchanged. Keys never include a model's name, so a renamed or re-downloaded checkpoint with the same bytes hits,
and a changed file or setting misses."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from tritonrepo.files import write_atomically
from tritonrepo.repository.manifest import now_utc, sha256_file

COMPLETE = "complete.json"


def digest(value: object) -> str:
    """sha256 of a JSON-serialisable value in canonical form."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class FileDigests:
    """sha256 of files, remembered by (path, size, mtime) so multi-GB checkpoints are hashed once."""

    def __init__(self, memo_path: Path) -> None:
        self.memo_path = memo_path
        self._memo: dict[str, list] = _read_memo(memo_path)
        self._dirty = False

    def of(self, path: Path) -> str:
        # Keyed by the absolute path, not the resolved one: resolving costs a syscall per path component per file.
        key = os.path.abspath(path)
        stat = os.stat(key)
        known = self._memo.get(key)
        if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2]
        value = sha256_file(Path(key))
        self._memo[key] = [stat.st_size, stat.st_mtime_ns, value]
        self._dirty = True
        return value

    def remember(self, path: Path, digest: str) -> None:
        """A digest computed elsewhere (e.g. while downloading), for the file as it is now."""
        key = os.path.abspath(path)
        stat = os.stat(key)
        self._memo[key] = [stat.st_size, stat.st_mtime_ns, digest]
        self._dirty = True

    def of_files(self, paths: Iterable[Path]) -> dict[str, str]:
        return {path.name: self.of(path) for path in sorted(paths)}

    def save(self) -> None:
        """Writes the memo (atomically); OSError when its folder cannot be written."""
        if not self._dirty:
            return
        self.memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.memo_path, json.dumps(self._memo).encode())
        self._dirty = False


def _read_memo(path: Path) -> dict[str, list]:
    """The remembered digests; none when the memo is missing, unreadable or not ours (it is only a cache)."""
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


class StageCache:
    """Folders <root>/<stage>/<key>/; a stage's folder counts only once its completion marker is written (last)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def is_complete(self, stage: str, key: str) -> bool:
        return (self.folder(stage, key) / COMPLETE).is_file()

    def mark_complete(self, stage: str, key: str, inputs: dict) -> None:
        folder = self.folder(stage, key)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / COMPLETE).write_text(json.dumps({"completed": now_utc(), "inputs": inputs}, indent=2, default=str))

    def invalidate(self, stage: str, key: str) -> None:
        (self.folder(stage, key) / COMPLETE).unlink(missing_ok=True)
