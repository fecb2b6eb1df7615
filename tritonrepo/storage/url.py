"""Parse and validate s3://bucket/prefix URLs, and check that remote keys are safe to turn into local paths."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tritonrepo.errors import StorageError, UnsafeKeyError

# AWS bucket naming rules (lowercase, 3-63 chars); dots allowed for legacy buckets.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Url:
    bucket: str
    prefix: str  # no leading or trailing slash; "" means the bucket root

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def relative(self, key: str) -> str:
        """The part of `key` below the prefix (the caller lists only keys under it)."""
        return key[len(self.prefix) + 1 :] if self.prefix else key

    @property
    def list_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_s3_url(text: str) -> S3Url:
    if not text.startswith("s3://"):
        raise StorageError(f"not an S3 URL: {text!r}", hint="Use s3://bucket/prefix.")
    bucket, _, prefix = text[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise StorageError(f"invalid bucket name {bucket!r} in {text!r}", hint="Buckets are 3-63 lowercase characters.")
    prefix = prefix.strip("/")
    if prefix:
        check_relative(prefix, what="prefix")
    return S3Url(bucket, prefix)


def check_relative(path: str, *, what: str = "key") -> str:
    """Refuse paths that could escape a folder: absolute, backslashes, '.', '..' or empty segments, drive letters."""
    problem = None
    if not path:
        problem = "is empty"
    elif "\\" in path:
        problem = "contains a backslash"
    elif path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        problem = "is absolute"
    elif "\x00" in path:
        problem = "contains a NUL byte"
    elif any(part in ("", ".", "..") for part in path.rstrip("/").split("/")):
        problem = "has '.', '..' or empty path segments"
    if problem:
        raise UnsafeKeyError(f"refusing {what} {path!r}: it {problem}")
    return path


def safe_target(root: Path, relative: str, *, folder: bool = False) -> Path:
    """root/relative, refused when a folder on the way there is a symbolic link: pull never writes through a link, so
    nothing it writes can land outside root. A link standing where a file goes is fine (the download replaces the link
    itself, never its target); a link standing where a folder goes (`folder=True`) is refused too."""
    check_relative(relative)
    parts = relative.rstrip("/").split("/")
    path = Path(root)
    for depth, part in enumerate(parts, start=1):
        path = path / part
        if (depth < len(parts) or folder) and path.is_symlink():
            raise UnsafeKeyError(
                f"refusing to write {relative!r}: {path} is a symbolic link (-> {os.readlink(path)}), and pull never "
                f"writes through one, so nothing can land outside {root}",
                hint="Remove the link, or pull into another folder.",
            )
    return path
