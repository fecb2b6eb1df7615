"""Serving straight from S3 (moto's real S3 server): pulled into a verified local cache, or read by Triton itself."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from test_storage_s3 import _credentials, bucket, built, endpoint, options, s3  # noqa: F401 (fixtures)

from tritonrepo.errors import ServerError
from tritonrepo.repository.manifest import sha256_file
from tritonrepo.serving.launch import ServeOptions, _local_repository, triton_s3_url
from tritonrepo.storage import push


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_triton_names_a_custom_endpoint_inside_the_url():
    assert triton_s3_url("b", "models/tiny", None) == "s3://b/models/tiny"
    assert triton_s3_url("b", "models/tiny", "http://127.0.0.1:9005") == "s3://127.0.0.1:9005/b/models/tiny"
    assert triton_s3_url("b", "", "https://minio.local:9000") == "s3://https://minio.local:9000/b"


def test_serving_s3_pulls_a_verified_local_copy_and_only_what_changed(
    built, bucket, endpoint, options, monkeypatch, tmp_path
):
    monkeypatch.setenv("TRITONREPO_CACHE", str(tmp_path / "cache"))
    push(built, f"s3://{bucket}/models/tiny", options)
    serve = ServeOptions(repository=f"s3://{bucket}/models/tiny", s3_endpoint_url=endpoint)
    local, for_triton = _local_repository(serve)
    assert for_triton == str(local) and local.is_relative_to(tmp_path / "cache")
    assert _tree(local) == _tree(built)
    before = {p: p.stat().st_mtime_ns for p in local.rglob("*") if p.is_file()}
    _local_repository(serve)  # unchanged: nothing is downloaded again
    assert before == {p: p.stat().st_mtime_ns for p in local.rglob("*") if p.is_file()}


def test_direct_is_refused_for_local_folders(tmp_path):
    with pytest.raises(ServerError, match="s3:// repositories only"):
        _local_repository(ServeOptions(repository=tmp_path, direct=True))


@pytest.mark.e2e
def test_tritonserver_loads_the_repository_straight_from_s3_and_answers(
    built, bucket, endpoint, options, monkeypatch, tmp_path
):
    monkeypatch.setenv("TRITONREPO_CACHE", str(tmp_path / "cache"))
    push(built, f"s3://{bucket}/models/tiny", options)
    http, grpc, metrics, openai = (str(free_port()) for _ in range(4))
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "tritonrepo.cli.main", "serve", f"s3://{bucket}/models/tiny", "--direct",
               "--endpoint-url", endpoint, "--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics,
               "--openai-port", openai, "--log-file", str(tmp_path / "triton.log")]  # fmt: skip
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{openai}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            triton_tail = (tmp_path / "triton.log").read_text()[-3000:] if (tmp_path / "triton.log").exists() else ""
            pytest.fail(
                f"not healthy after 300 s\n--- serve:\n{log.read_text()[-3000:]}\n--- tritonserver:\n{triton_tail}"
            )
        output = log.read_text()
        assert f"Triton loads s3://{endpoint.removeprefix('http://')}/{bucket}/models/tiny directly" in output
        body = {"text_input": "Hello world", "max_tokens": 8, "exclude_input_in_output": True}
        answer = httpx.post(f"http://127.0.0.1:{http}/v2/models/ensemble/generate", json=body, timeout=60)
        assert answer.status_code == 200 and answer.json()["num_output_tokens"] == 8
        # Triton's own options table: it read the bucket itself, not the local copy
        triton_log = (tmp_path / "triton.log").read_text()
        assert re.search(rf"model_repository_path\[0\]\s*\|\s*s3://127\.0\.0\.1:\d+/{bucket}/models/tiny", triton_log)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-2000:]
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
