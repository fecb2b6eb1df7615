"""The executor of a planned transfer: parallel, multipart, verified, with the manifest written last."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from tritonrepo import progress
from tritonrepo.errors import IntegrityError, StorageError, UnsafeLinkError
from tritonrepo.files import create_hidden, write_atomically
from tritonrepo.planning.stage_cache import FileDigests
from tritonrepo.repository.location import is_model_config, relocate
from tritonrepo.repository.manifest import FORMAT, MANIFEST, file_entry, portable_config, read_manifest
from tritonrepo.repository.tree import SKIPPED_FOLDERS, Tree, walk
from tritonrepo.source.resolve import cache_root
from tritonrepo.storage import sync
from tritonrepo.storage.s3 import Connection, S3Store
from tritonrepo.storage.url import S3Url, check_relative, parse_s3_url, safe_target

PART_SUFFIX = ".tritonrepo-part"  # downloads in progress; removed on failure or Ctrl-C, swept by the next pull
# Uploads take smaller parts than downloads: 16 MiB parts (awscli uses 8) keep less in flight per upload and pushed a
# 1.5 GB file 20% faster than 64 MiB ones in benchmarks/s3_sync.py; a download's ranged GETs cost the store a read
# each (moto reads the whole object per range), so pulls keep 64 MiB. boto3 grows parts to stay within 10,000.
PUSH_PART_SIZE = 16 << 20
PULL_PART_SIZE = 64 << 20


@dataclass(frozen=True)
class TransferOptions:
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    part_size: int | None = None  # None: PUSH_PART_SIZE or PULL_PART_SIZE
    concurrency: int = 16
    delete: bool = False
    dry_run: bool = False
    check_remote: bool = False  # push: list the prefix even when the remote manifest already matches

    def for_push(self) -> TransferOptions:
        return self if self.part_size else replace(self, part_size=PUSH_PART_SIZE)

    def for_pull(self) -> TransferOptions:
        return self if self.part_size else replace(self, part_size=PULL_PART_SIZE)

    def connection(self) -> Connection:
        return Connection(self.profile, self.region, self.endpoint_url, self.part_size, self.concurrency)


class Cancelled(Exception):
    """Raised inside a transfer's byte callback once the transfer as a whole has failed or been interrupted."""


def _run_parallel(work: Callable[[str], None], paths: Iterable[str], workers: int, cancel: threading.Event) -> None:
    """Run `work` on each path. On the first failure, or Ctrl-C (KeyboardInterrupt reaches only this thread), set
    `cancel` so transfers in flight stop at their next chunk and clean up after themselves, wait for them, re-raise."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    futures = []
    try:  # submitting inside: a Ctrl-C between two submissions must cancel the transfers already started too
        for path in paths:
            futures.append(pool.submit(work, path))
        pending = set(futures)
        while pending:
            # Woken every 0.2 s: a signal the kernel hands to a worker thread runs its Python handler (Ctrl-C's
            # KeyboardInterrupt) only when this, the main thread, runs again, so an endless wait would let it slip.
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()
    except BaseException:
        cancel.set()
        for future in futures:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True)


def _byte_counter(bar, cancel: threading.Event) -> Callable[[int], None]:
    lock = threading.Lock()  # boto3 calls back from its own worker threads

    def add(amount: int) -> None:
        if cancel.is_set():
            raise Cancelled("the transfer was stopped")
        with lock:
            bar.update(amount)

    return add


def _share_parts(store: S3Store, plan: sync.Plan, options: TransferOptions) -> None:
    # --concurrency bounds files and parts together: few large files get many parts each, many get few.
    large = sum(1 for p in plan.transfer if plan.sizes[p] >= options.part_size)
    store.parts_in_flight = max(1, options.concurrency // max(1, min(large, options.concurrency)))


def _manifest_bytes(root: Path, files: sync.Files) -> bytes:
    """The build manifest verbatim when it matches the files; else a copy with the files as they are now."""
    manifest = read_manifest(root)
    if manifest is not None and manifest.get("files") == files:
        return (root / MANIFEST).read_bytes()
    if manifest is None:
        manifest = {"format": FORMAT}
    else:
        progress.say(f"    {MANIFEST} is out of date with the files; the remote manifest lists them as they are")
    manifest = {**manifest, "files": files}
    return (json.dumps(manifest, indent=2) + "\n").encode()


def upload_one(store: S3Store, root: Path, path: str, entry: dict, callback: Callable[[int], None]) -> None:
    data = portable_config(root, path)  # a model config: its portable form (engine paths relative to the root)
    if data is not None:
        store.put_bytes(path, data, sha256=entry["sha256"])
        callback(len(data))
        return
    store.upload(root / path, path, size=entry["size"], sha256=entry["sha256"], callback=callback)


def download_one(
    store: S3Store, root: Path, path: str, entry: dict, callback: Callable[[int], None], memo: FileDigests
) -> None:
    """Into a part file next to the target, made with the usual mode (0666 less the umask); renamed into place only
    once its sha256 matches the manifest, and removed whatever stops it first (a bad digest, an error, Ctrl-C)."""
    target = safe_target(root, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = create_hidden(target.parent, target.name, PART_SUFFIX)
    os.close(fd)
    try:
        digest = store.download(path, temp, size=entry["size"], callback=callback)
        if digest != entry["sha256"]:
            raise IntegrityError(
                f"{store.url.key(path)} has sha256 {digest[:12]}..., the manifest says {entry['sha256'][:12]}...",
                hint="The remote object changed after the push; push the repository again.",
            )
        callback(0)  # raises once the pull is stopped: after Ctrl-C nothing more is put in place, even if complete
        os.replace(temp, target)  # over a link standing there, the link itself is replaced, never its target
        memo.remember(target, digest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _local_tree(source: Path) -> Tree:
    """The files push uploads. Refused whole, before anything is sent, when a symbolic link leads outside the
    repository: uploading its target would publish a file the repository does not hold (e.g. /etc/passwd)."""
    tree = walk(source)
    if outside := tree.outside_links:
        listed = ", ".join(f"{link.describe()} ({link.kind})" for link in outside)
        raise UnsafeLinkError(
            f"refusing to push {source}: {len(outside)} symbolic link(s) lead outside it: {listed}",
            links=[link.as_dict() for link in outside],
            hint="Push never uploads anything from outside the repository. Replace each link with a copy of what it "
            'points to (e.g. cp --remove-destination "$(readlink -f LINK)" LINK), or remove it.',
        )
    return tree  # links skipped (folder links, broken ones) are listed in the summary


def push(source: Path, destination: str | S3Url, options: TransferOptions = TransferOptions()):
    """Upload what differs from the remote manifest, then directory markers, then the manifest, then deletions.

    A file is hashed before planning only when its size matches what the remote holds (it may be unchanged); a file
    whose size differs must move anyway, so its upload worker hashes it, overlapping the other transfers."""
    started = time.monotonic()
    options = options.for_push()
    url = destination if isinstance(destination, S3Url) else parse_s3_url(destination)
    source = Path(source)
    if not source.is_dir():
        raise StorageError(f"{source} is not a folder", hint="Push a repository folder made by `tritonrepo build`.")
    tree = _local_tree(source)
    # sizes now (model configs: their portable form, hashed at once); other digests below, only where they decide
    local = {p: file_entry(source, p, lambda path: None) for p in tree.files if p != MANIFEST}
    for path in local:
        check_relative(path, what="local path")
    empty_dirs = tree.empty_folders
    skipped_links = [link.as_dict() for link in tree.skipped_links]
    store = S3Store(url, options.connection())
    remote_raw = store.get_bytes(MANIFEST)
    try:
        manifest_files = sync.parse_remote_manifest(remote_raw, str(url)) if remote_raw is not None else {}
    except StorageError as error:
        progress.say(f"    ignoring the remote manifest, it will be replaced: {error}")
        manifest_files = {}
    # Files whose size and mtime are unchanged keep their remembered digest: a no-op re-push reads no file.
    memo = FileDigests(cache_root() / "file-digests.json")

    def hash_where(same_size: Callable[[str, int], bool]) -> None:
        for path, entry in local.items():
            if entry["sha256"] is None and same_size(path, entry["size"]):
                entry["sha256"] = memo.of(source / path)

    def summary(plan: sync.Plan):
        seconds = time.monotonic() - started
        return sync.summarize(
            "push", str(source), str(url), plan, dry_run=options.dry_run, seconds=seconds, skipped_links=skipped_links
        )

    with progress.step(f"Hashing {source}"):
        hash_where(lambda path, size: manifest_files.get(path, {}).get("size") == size)
    if all(entry["sha256"] for entry in local.values()) and not options.delete and not options.check_remote:
        # The manifest is written only after every file it lists, so an identical one means nothing is left to send.
        # Listing a large prefix costs more than the whole no-op; --check-remote (or --delete) lists it anyway.
        if _manifest_bytes(source, local) == remote_raw and all(store.exists(f"{d}/") for d in empty_dirs):
            memo.save()
            return summary(sync.Plan(skip=sorted(local), sizes={p: e["size"] for p, e in local.items()}))
    remote_objects = store.list()
    hash_where(lambda path, size: remote_objects.get(path) == size)  # an interrupted push may have left it
    memo.save()
    digests = {p: e["sha256"] for p, e in manifest_files.items()}
    hashed = {p: e for p, e in local.items() if e["sha256"]}
    for path in sync.digests_to_check(hashed, remote_objects, manifest_files):
        if stored := store.head_sha256(path):
            digests[path] = stored
    plan = sync.plan_push(local, empty_dirs, remote_objects, digests, options.delete)
    if options.dry_run:
        return summary(plan)
    _share_parts(store, plan, options)

    def upload(path: str) -> None:
        entry = local[path]
        if entry["sha256"] is None:
            entry["sha256"] = memo.of(source / path)
        upload_one(store, source, path, entry, count)

    try:
        with progress.bar(plan.bytes_to_move, f"push {len(plan.transfer)} file(s)") as bar:
            cancel = threading.Event()
            count = _byte_counter(bar, cancel)
            largest_first = sorted(plan.transfer, key=lambda p: -plan.sizes[p])  # the long ones start first
            _run_parallel(upload, largest_first, options.concurrency, cancel)
    finally:
        memo.save()
    for marker in plan.directories:
        store.put_bytes(marker, b"")
    # Last, so a reader never sees a manifest that names files not yet uploaded.
    manifest = _manifest_bytes(source, local)
    if manifest != remote_raw:
        store.put_bytes(MANIFEST, manifest)
    if plan.delete:
        store.delete(plan.delete)
    return summary(plan)


def _local_files(root: Path, remote: sync.Files, memo: FileDigests) -> sync.Files:
    """Every local file; hashed (or its digest remembered) only where the size matches the manifest. Links are never
    followed nor read: each is an entry (size -1) that the remote's file replaces, or that --delete removes."""
    files: sync.Files = {}
    if not root.is_dir():
        return files
    for folder, subfolders, names in os.walk(root, followlinks=False):
        base = Path(folder)
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_FOLDERS]
        names += [name for name in subfolders if (base / name).is_symlink()]  # a folder link is an entry too
        for name in names:
            path = base / name
            relative = path.relative_to(root).as_posix()
            if relative == MANIFEST or _is_part(name):
                continue
            if path.is_symlink():
                files[relative] = {"size": -1, "sha256": None}
            elif path.is_file() and is_model_config(relative):  # compared in its portable form, as pushed (small)
                files[relative] = file_entry(root, relative)
            elif path.is_file():
                size = path.stat().st_size
                same_size = remote.get(relative, {}).get("size") == size
                files[relative] = {"size": size, "sha256": memo.of(path) if same_size else None}
    return files


def _is_part(name: str) -> bool:
    return name.startswith(".") and name.endswith(PART_SUFFIX)


def _remove_empty_folders(root: Path, keep: set[str]) -> None:
    """--delete: folders the remote has no file or marker under go too, deepest first (links are not folders)."""
    for folder, _subfolders, _names in os.walk(root, topdown=False, followlinks=False):
        relative = Path(folder).relative_to(root).as_posix()
        if relative != "." and relative not in keep and not os.listdir(folder):
            os.rmdir(folder)


def pull(source: str | S3Url, target: Path, options: TransferOptions = TransferOptions()):
    """Download what differs from the local files, verified; every remote key is checked before anything is written."""
    started = time.monotonic()
    options = options.for_pull()
    url = source if isinstance(source, S3Url) else parse_s3_url(source)
    target = Path(target)
    store = S3Store(url, options.connection())
    remote_objects = store.list()
    raw = store.get_bytes(MANIFEST)
    if raw is None:
        raise StorageError(f"no {MANIFEST} at {url}", hint="Nothing was pushed there, or a push did not finish.")
    remote = sync.parse_remote_manifest(raw, str(url))
    remote_dirs = [key.rstrip("/") for key in remote_objects if key.endswith("/")]
    # Refuse the whole pull before any write: no key may escape, nor lead through a link in the target.
    for path in remote:
        safe_target(target, path)
    for directory in remote_dirs:
        safe_target(target, directory, folder=True)
    # Digests of local files are remembered by size and mtime (as push does), so a no-op pull reads no file.
    memo = FileDigests(cache_root() / "file-digests.json")
    with progress.step(f"Comparing with {target}"):
        plan = sync.plan_pull(remote, remote_dirs, _local_files(target, remote, memo), options.delete)
    if not options.dry_run:
        target.mkdir(parents=True, exist_ok=True)
        _sweep_parts(target)
        for directory in plan.directories:
            safe_target(target, directory, folder=True).mkdir(parents=True, exist_ok=True)
        _share_parts(store, plan, options)
        try:
            with progress.bar(plan.bytes_to_move, f"pull {len(plan.transfer)} file(s)") as bar:
                cancel = threading.Event()
                count = _byte_counter(bar, cancel)
                _run_parallel(
                    lambda p: download_one(store, target, p, remote[p], count, memo),
                    plan.transfer,
                    options.concurrency,
                    cancel,
                )
        finally:
            memo.save()  # what did land is remembered, so a rerun after a failure does not hash it again
        for path in plan.delete:
            safe_target(target, path).unlink()
        if options.delete:
            _remove_empty_folders(target, set(remote_dirs) | sync.parents(remote))
        # Configs arrive in their portable form: their engine paths now name this folder (the digests stay the same).
        relocate(target)
        # Last, like push: a local manifest means the files it lists are all in place.
        manifest = target / MANIFEST
        if manifest.is_symlink() or not manifest.is_file() or manifest.read_bytes() != raw:
            write_atomically(manifest, raw)  # the remote manifest verbatim, so the pulled tree is byte-identical
    else:
        memo.save()
    return sync.summarize(
        "pull", str(url), str(target), plan, dry_run=options.dry_run, seconds=time.monotonic() - started
    )


def _sweep_parts(root: Path) -> None:
    """Part files a killed pull left behind (a pull that fails or is interrupted removes its own)."""
    for folder, subfolders, names in os.walk(root, followlinks=False):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_FOLDERS]
        for name in names:
            if _is_part(name):
                os.unlink(os.path.join(folder, name))
