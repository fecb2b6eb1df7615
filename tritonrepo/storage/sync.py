"""Pure planning of a transfer: compare local files with the remote manifest and decide what moves, stays or goes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

from tritonrepo.errors import StorageError
from tritonrepo.repository.manifest import MANIFEST
from tritonrepo.storage.url import check_relative

# {relative path: {"size": int, "sha256": str}}, the shape of the build manifest's `files` map.
Files = dict[str, dict]


@dataclass
class Plan:
    transfer: list[str] = field(default_factory=list)  # upload (push) or download (pull), sorted
    skip: list[str] = field(default_factory=list)  # same content on both sides
    delete: list[str] = field(default_factory=list)  # only with --delete; markers end in '/'
    directories: list[str] = field(default_factory=list)  # markers to create (push) or folders to make (pull)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def bytes_to_move(self) -> int:
        return sum(self.sizes[p] for p in self.transfer)

    @property
    def bytes_skipped(self) -> int:
        return sum(self.sizes[p] for p in self.skip)


def _same(a: dict | None, b: dict | None) -> bool:
    return bool(a and b) and a.get("size") == b.get("size") and a.get("sha256") == b.get("sha256")


def parents(paths) -> set[str]:
    return {str(parent) for p in paths for parent in PurePosixPath(p.rstrip("/")).parents if str(parent) != "."}


def digests_to_check(local: Files, remote_objects: dict[str, int], manifest_files: Files) -> list[str]:
    """Remote objects whose content the manifest cannot vouch for (absent there, or another digest) but whose size
    matches: an interrupted push uploaded them without writing the manifest. Their stored sha256 decides."""
    return sorted(
        path
        for path, entry in local.items()
        if remote_objects.get(path) == entry["size"] and manifest_files.get(path, {}).get("sha256") != entry["sha256"]
    )


def plan_push(
    local: Files, empty_dirs: list[str], remote_objects: dict[str, int], remote_digests: dict[str, str], delete: bool
) -> Plan:
    """`remote_digests` is the manifest's sha256 per path, overlaid with what digests_to_check found. A local sha256
    may be None where the size differs from the remote object's (not worth hashing before the upload)."""
    plan = Plan(sizes={p: e["size"] for p, e in local.items()})
    for path, entry in sorted(local.items()):
        # A file without a digest was not hashed because its size already differs: it moves.
        unchanged = (
            entry["sha256"] is not None
            and remote_objects.get(path) == entry["size"]
            and remote_digests.get(path) == entry["sha256"]
        )
        (plan.skip if unchanged else plan.transfer).append(path)
    plan.directories = sorted(f"{d}/" for d in empty_dirs if f"{d}/" not in remote_objects)
    if delete:
        local_dirs = set(empty_dirs) | parents(local)
        for key in sorted(remote_objects):
            if key == MANIFEST:
                continue
            gone = key.rstrip("/") not in local_dirs if key.endswith("/") else key not in local
            if gone:
                plan.delete.append(key)
    return plan


def plan_pull(remote: Files, remote_dirs: list[str], local: Files, delete: bool) -> Plan:
    """`local` holds every local file; sha256 may be None where the size already differs (not worth hashing)."""
    plan = Plan(sizes={p: int(e["size"]) for p, e in remote.items()})
    for path, entry in sorted(remote.items()):
        (plan.skip if _same(local.get(path), entry) else plan.transfer).append(path)
    plan.directories = sorted(set(remote_dirs))
    if delete:
        plan.delete = sorted(p for p in local if p not in remote and p != MANIFEST)
    return plan


def parse_remote_manifest(raw: bytes, where: str) -> Files:
    """The `files` map of a remote manifest, each path checked to be safe before anything is written."""
    try:
        manifest = json.loads(raw)
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a map")
    except (ValueError, KeyError, TypeError) as error:
        raise StorageError(f"the manifest at {where} is not a tritonrepo manifest ({error})") from error
    for path, entry in files.items():
        check_relative(path, what="manifest path")
        if path == MANIFEST or path.endswith("/"):
            raise StorageError(f"the manifest at {where} lists {path!r} as a file")
        valid = isinstance(entry, dict) and isinstance(entry.get("size"), int) and isinstance(entry.get("sha256"), str)
        if not valid or len(entry["sha256"]) != 64:
            raise StorageError(f"the manifest at {where} has no valid size and sha256 for {path!r}")
    return files


@dataclass
class TransferSummary:
    action: str  # "push" or "pull"
    source: str
    destination: str
    dry_run: bool
    files_moved: int
    bytes_moved: int
    files_skipped: int
    bytes_skipped: int
    directories: int
    deleted: list[str]
    moved: list[str]
    seconds: float
    skipped_links: list[dict] = field(default_factory=list)  # push: folder links and broken links, never followed

    @property
    def mb_per_s(self) -> float:
        return self.bytes_moved / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 2), "seconds": round(self.seconds, 3)}


def summarize(
    action: str, source: str, destination: str, plan: Plan, *, dry_run: bool, seconds: float, skipped_links=()
):
    return TransferSummary(
        action=action,
        source=source,
        destination=destination,
        dry_run=dry_run,
        files_moved=len(plan.transfer),
        bytes_moved=plan.bytes_to_move,
        files_skipped=len(plan.skip),
        bytes_skipped=plan.bytes_skipped,
        directories=len(plan.directories),
        deleted=list(plan.delete),
        moved=list(plan.transfer),
        seconds=seconds,
        skipped_links=list(skipped_links),
    )


def format_summary(summary: TransferSummary) -> str:
    verb = {"push": "upload", "pull": "download"}[summary.action]
    skipped = [
        f"skipped symbolic link {link['path']} -> {link['target']} "
        f"({'a folder link: never followed' if link['kind'] == 'folder' else 'it points to nothing'})"
        for link in summary.skipped_links
    ]
    if summary.dry_run:
        lines = [f"would {verb} {p}" for p in summary.moved] + [f"would delete {p}" for p in summary.deleted]
        lines += skipped
        lines.append(
            f"dry run: {summary.files_moved} file(s), {summary.bytes_moved / 1e6:.1f} MB would move; "
            f"{summary.files_skipped} unchanged; {len(summary.deleted)} would be deleted"
        )
        return "\n".join(lines)
    line = (
        f"{summary.action} {summary.source} -> {summary.destination}: "
        f"{summary.files_moved} file(s) {verb}ed ({summary.bytes_moved / 1e6:.1f} MB), "
        f"{summary.files_skipped} unchanged ({summary.bytes_skipped / 1e6:.1f} MB), "
        f"{len(summary.deleted)} deleted, in {summary.seconds:.1f}s ({summary.mb_per_s:.1f} MB/s)"
    )
    return "\n".join([*skipped, line])
