"""What Linux /proc says about a process: state, session, start time, command line (no third-party library)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    state: str  # "R", "S", ..., "Z" for a zombie (exited, not yet reaped)
    group: int
    session: int
    start_time: int  # clock ticks since boot: with the pid, names one process even after the pid is reused

    @property
    def alive(self) -> bool:
        return self.state != "Z"


def process(pid: int) -> ProcessInfo | None:
    """The process, or None when it has exited."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields after the command name: state, ppid, pgrp, session, ... starttime is field 22 of stat(5).
    return ProcessInfo(pid, fields[0], int(fields[2]), int(fields[3]), int(fields[19]))


def processes() -> Iterator[ProcessInfo]:
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (info := process(int(entry.name))) is not None:
            yield info


def start_time(pid: int) -> int | None:
    """The start time of a live process (a zombie counts as gone), None when it is gone."""
    info = process(pid)
    return info.start_time if info is not None and info.alive else None


def command_line(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
