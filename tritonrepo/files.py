"""New files and folders made as open() and mkdir make them (0666/0777 less the umask, not mkstemp's 0600 or mkdtemp's
0700); files written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def create_hidden(folder: Path, name: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new file `.NAME.RANDOM SUFFIX` in folder, open for writing; O_EXCL, so never an existing file nor the target
    of a link planted there."""
    while True:
        path = Path(folder) / f".{name}.{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(path, _FLAGS, 0o666), path  # the kernel takes the umask off, as for any new file
        except FileExistsError:
            continue


def create_hidden_folder(parent: Path, name: str, suffix: str) -> Path:
    """A new folder `.NAME.RANDOM SUFFIX` in parent with the usual mode (0777 less the umask, not mkdtemp's 0700), so a
    server running as another user can read what is staged there once it is renamed into place."""
    while True:
        path = Path(parent) / f".{name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.mkdir(path, 0o777)  # the kernel takes the umask off
            return path
        except FileExistsError:
            continue


def write_atomically(path: Path, data: bytes) -> None:
    """A temp file beside `path`, then a rename over it: readers see the old content or the new, never a part."""
    path = Path(path)
    fd, temp = create_hidden(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
