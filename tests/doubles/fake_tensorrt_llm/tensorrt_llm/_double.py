"""TEST DOUBLE helpers: the recording file, the requested failure and the version this fake pretends to be."""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

RECORD_ENV = "FAKE_TRTLLM_RECORD"  # JSON file: a list of recorded calls
FAIL_ENV = "FAKE_TRTLLM_FAIL"  # "convert" or "build"
DROP_RANK_ENV = "FAKE_TRTLLM_DROP_RANK"  # trtllm-build "forgets" rank{N}.engine


def fake_version() -> str:
    # The version comes from a dist-info the tests write next to this package, as the real wheel's does.
    try:
        return metadata.version("tensorrt_llm")
    except metadata.PackageNotFoundError:
        return "0.0.0+double"


def record(event: str, **fields) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    file = Path(path)
    events = json.loads(file.read_text()) if file.exists() else []
    events.append({"event": event, **fields})
    file.write_text(json.dumps(events, indent=1, default=str))


def failing(stage: str) -> bool:
    return os.environ.get(FAIL_ENV, "") == stage


def dropped_rank() -> int | None:
    value = os.environ.get(DROP_RANK_ENV, "")
    return int(value) if value else None


def placeholder(path: Path, text: str) -> None:
    path.write_bytes(b"TEST DOUBLE placeholder, not TensorRT-LLM output: " + text.encode())
