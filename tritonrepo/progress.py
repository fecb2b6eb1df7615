"""One progress/status channel for long work, with an off switch (TRITONREPO_QUIET=1 or set_enabled(False))."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

_enabled = os.environ.get("TRITONREPO_QUIET", "") in ("", "0")


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def enabled() -> bool:
    return _enabled


def say(message: str) -> None:
    """A status line on stderr (stdout stays clean for --json output and piping)."""
    if _enabled:
        print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning on stderr, printed even when progress output is off: something the operator must hear about."""
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Announce a pipeline step and report how long it took ('  done in 1.2s')."""
    say(f"==> {title}")
    started = time.monotonic()
    yield
    say(f"    done in {time.monotonic() - started:.1f}s")


def bar(total: int | None, desc: str, unit: str = "B"):
    """A tqdm bar in bytes (or items) that is silent when progress is off."""
    from tqdm.auto import tqdm  # lazy: tqdm comes with huggingface_hub

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", disable=not _enabled, file=sys.stderr)
