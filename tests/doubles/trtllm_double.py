"""Installs the TensorRT-LLM TEST DOUBLE for one test: PATH and PYTHONPATH point at it, its calls are read back."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAKE_PACKAGE_ROOT = HERE / "fake_tensorrt_llm"
FAKE_TRTLLM_BUILD = HERE / "bin" / "trtllm-build"


@dataclass
class TensorRTLLMDouble:
    """Handle on the installed double: what it recorded, and switches to make it fail."""

    record_path: Path
    site_dir: Path
    monkeypatch: pytest.MonkeyPatch

    def events(self, kind: str | None = None) -> list[dict]:
        if not self.record_path.exists():
            return []
        events = json.loads(self.record_path.read_text())
        return [e for e in events if kind is None or e["event"] == kind]

    def fail(self, stage: str) -> None:
        """'convert' (from_hugging_face of the last rank, or quantize, raises) or 'build' (trtllm-build exits 1)."""
        self.monkeypatch.setenv("FAKE_TRTLLM_FAIL", stage)

    def drop_engine_rank(self, rank: int) -> None:
        self.monkeypatch.setenv("FAKE_TRTLLM_DROP_RANK", str(rank))


def install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, version: str = "0.17.0", trtllm_build: bool = True
) -> TensorRTLLMDouble:
    """Make the double the TensorRT-LLM of subprocesses (and of importlib.metadata in this process)."""
    site_dir = tmp_path / "double-site"
    dist_info = site_dir / f"tensorrt_llm-{version}.dist-info"
    dist_info.mkdir(parents=True)
    # Wheel metadata as the real wheel ships it, so installed_version() reads the pretended version.
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tensorrt_llm\nVersion: {version}\n")
    bin_dir = tmp_path / "double-bin"
    bin_dir.mkdir()
    if trtllm_build:
        # A copy with this interpreter in the shebang and the executable bit set, whatever the checkout kept.
        script = bin_dir / "trtllm-build"
        body = FAKE_TRTLLM_BUILD.read_text().split("\n", 1)[1]
        script.write_text(f"#!{sys.executable}\n{body}")
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    path = os.environ.get("PATH", "")
    if not trtllm_build and shutil.which("trtllm-build"):
        pytest.skip("a real trtllm-build is on PATH")
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), path]))
    python_path = [str(site_dir), str(FAKE_PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in python_path if p))
    record_path = tmp_path / "double-record.json"
    monkeypatch.setenv("FAKE_TRTLLM_RECORD", str(record_path))
    monkeypatch.delenv("FAKE_TRTLLM_FAIL", raising=False)
    monkeypatch.delenv("FAKE_TRTLLM_DROP_RANK", raising=False)
    monkeypatch.syspath_prepend(str(site_dir))
    return TensorRTLLMDouble(record_path=record_path, site_dir=site_dir, monkeypatch=monkeypatch)
