"""The Python backend's shared-memory regions in /dev/shm: a prefix per serve, and removing what a dead serve left.

tritonserver's Python backend makes one region per model stub, named `<prefix><uuid>`, and removes it when the model
unloads; a tritonserver that is killed leaves them behind. Every tritonserver we start gets a prefix naming the
process that started it (its PID namespace, pid and start time, so a reused pid is never mistaken for it), which lets
a later serve remove the regions of one that is gone, and never those of one that still runs. Containers that share
/dev/shm (`--ipc=host`) see each other's regions but not each other's processes: a region from another PID namespace
is never judged.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

from tritonrepo.serving import procfs

SHM_ROOT = Path("/dev/shm")
_PREFIX = re.compile(r"^tritonrepo_(\d+)_(\d+)_(\d+)_")
_servers_started = itertools.count(1)


def new_prefix() -> str:
    """A region prefix for one tritonserver started by this process: the process, then a number of its own, so two
    servers of one process (a restart, tests) never remove each other's regions."""
    pid = os.getpid()
    return f"tritonrepo_{pid_namespace()}_{pid}_{procfs.start_time(pid) or 0}_{next(_servers_started)}_"


def pid_namespace() -> int:
    """This process's PID namespace (the inode of /proc/self/ns/pid); 0 where that cannot be read."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def owner_alive(name: str) -> bool:
    """Whether the process named in a region's prefix still runs; names without our prefix, and regions made in
    another PID namespace (whose processes we cannot see), count as alive: not ours to judge."""
    match = _PREFIX.match(name)
    if match is None or int(match.group(1)) != pid_namespace():
        return True
    pid, started = int(match.group(2)), int(match.group(3))
    return procfs.start_time(pid) == started


def regions(prefix: str, root: Path = SHM_ROOT) -> list[Path]:
    try:
        return sorted(path for path in root.iterdir() if path.name.startswith(prefix))
    except OSError:
        return []


def remove_regions(prefix: str, root: Path = SHM_ROOT) -> list[Path]:
    """Remove the regions under `prefix`, once the tritonserver that made them has exited; returns those removed."""
    return _unlink(regions(prefix, root))


def remove_stale_regions(root: Path = SHM_ROOT) -> list[Path]:
    """Remove the regions of tritonrepo processes that no longer run; returns those removed."""
    return _unlink([path for path in regions("tritonrepo_", root) if not owner_alive(path.name)])


def _unlink(paths: list[Path]) -> list[Path]:
    removed = []
    for path in paths:
        try:
            path.unlink()
        except OSError:  # gone already, or not ours to remove after all: leave it
            continue
        removed.append(path)
    return removed
