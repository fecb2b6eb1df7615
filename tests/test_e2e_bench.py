"""`tritonrepo bench` end to end: aiperf 0.13 drives the real `tritonrepo serve` on tiny-llama; the JSON, the PNG charts,
the HTML report, --compare, Ctrl-C, and the errors for a wrong model name."""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from serve_support import Deployment, live_processes

from tritonrepo.bench.plots import DPI, PLOTS, SIZE_IN

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from tritonrepo.planning.build import build
    from tritonrepo.planning.request import DeploymentRequest

    root = tmp_path_factory.mktemp("e2e-bench")
    repository = build(DeploymentRequest(model="tiny-llama", output=root / "tiny-llama")).path
    deployment = Deployment(repository, root / "serve.log")
    try:
        deployment.wait_healthy()
        yield deployment
    finally:
        deployment.stop_cleanly()


def bench(deployment, out: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tritonrepo.cli.main", "bench", str(deployment.repository),
               "--openai-url", deployment.base_url, "--out", str(out), *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


SMALL = ("--concurrency", "1,2", "--requests", "4", "--input-len", "16", "--output-len", "8")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def aiperf_scratch() -> set[Path]:
    """aiperf 0.13's dataset folders in the system temp folder (where it puts them unless told otherwise)."""
    return set(Path(tempfile.gettempdir()).glob("aiperf_mmap_*"))


@pytest.fixture(scope="module")
def first_run(deployment, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    scratch_before = aiperf_scratch()
    run = bench(deployment, out, *SMALL)
    assert run.returncode == 0, run.stderr[-3000:]
    (folder,) = out.iterdir()
    run.new_scratch = aiperf_scratch() - scratch_before
    return out, folder, run


def test_sweep_leaves_no_scratch_files(first_run):
    """aiperf's memory-mapped prompt files go under the level's folder and are removed (it leaves them in /tmp)."""
    out, folder, run = first_run
    assert run.new_scratch == set()
    assert sorted(folder.glob("aiperf/concurrency-*")), "no level folders"
    assert not list(folder.glob("aiperf/concurrency-*/scratch")), "the scratch folder was left behind"


def test_sweep_writes_sane_json(first_run, deployment):
    _, folder, run = first_run
    result = json.loads((folder / "result.json").read_text())
    assert result["schema"] == "tritonrepo.bench/1"
    assert result["model"] == "tiny-llama" and not result["interrupted"]
    assert result["deployment"]["model"]["name"] == "tiny-llama"  # the repository's manifest
    assert result["tools"]["aiperf"] == "0.13.0" and result["hardware"]["host"]["cpus"] >= 1
    assert result["settings"]["tokenizer"] == str(deployment.repository / "preprocessing/1/tokenizer")
    assert [level["concurrency"] for level in result["levels"]] == [1, 2]
    for level in result["levels"]:
        assert level["errors"] == 0 and level["requests"] == 4
        assert level["output_tokens_per_s"] > 0 and level["requests_per_s"] > 0
        # per user and ITL may be 0 on a loaded machine: a reply that arrives as one chunk has no gap between tokens
        assert level["output_tokens_per_s_per_user"] >= 0
        assert level["output_tokens_avg"] == 8  # the server's count: ignore_eos made every reply 8 tokens
        for metric in ("ttft_ms", "itl_ms", "latency_ms"):
            p = level[metric]
            assert 0 <= p["p50"] <= p["p90"] <= p["p99"], (metric, p)
        assert level["ttft_ms"]["p50"] > 0 and level["latency_ms"]["p50"] >= level["ttft_ms"]["p50"]
    assert "==> concurrency 1 (1/2): 4 requests" in run.stderr and "==> concurrency 2 (2/2)" in run.stderr
    assert "TTFT p50/p90/p99 ms" in run.stdout and str(folder / "result.json") in run.stdout


def test_sweep_draws_charts_and_report(first_run):
    _, folder, _ = first_run
    for name in PLOTS:
        assert png_size(folder / name) == (int(SIZE_IN[0] * DPI), int(SIZE_IN[1] * DPI))
    report = (folder / "report.html").read_text()
    assert report.count("data:image/png;base64,") == len(PLOTS) and "<table>" in report


def test_compare_prints_ratios_into_a_new_folder(first_run, deployment):
    out, folder, _ = first_run
    run = bench(deployment, out, *SMALL, "--compare", str(folder / "result.json"))
    assert run.returncode == 0, run.stderr[-3000:]
    folders = sorted(out.iterdir())
    assert len(folders) == 2 and folder in folders  # the first run is left as it was, the second is beside it
    assert "Against " in run.stdout and "this run / the earlier one" in run.stdout
    lines = run.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Against "))
    ratios = [line.split() for line in lines[start + 3 : start + 5]]  # after the title, the header and the rule
    assert [row[0] for row in ratios] == ["1", "2"]
    assert all(float(cell.rstrip("x")) > 0 for row in ratios for cell in row[1:3])  # req/s, out tok/s
    assert all(cell == "n/a" or float(cell.rstrip("x")) >= 0 for row in ratios for cell in row[3:])
    second = next(f for f in folders if f != folder)
    assert "Against the earlier run" in (second / "report.html").read_text()


def test_duration_bounds_a_level(deployment, tmp_path):
    run = bench(deployment, tmp_path, "--concurrency", "1", "--duration", "3", "--input-len", "16", "--output-len", "8")
    assert run.returncode == 0, run.stderr[-3000:]
    (folder,) = tmp_path.iterdir()
    result = json.loads((folder / "result.json").read_text())
    assert result["settings"]["duration_s"] == 3 and result["settings"]["requests"] == {"1": None}
    (level,) = result["levels"]
    assert level["requests"] >= 1 and level["errors"] == 0 and level["output_tokens_per_s"] > 0


def test_every_request_failing_is_counted_and_exits_9(deployment, tmp_path):
    # 1,500 prompt tokens: over tiny-llama's 1,024, so the server refuses each request (400), and aiperf writes no export
    run = bench(deployment, tmp_path, "--concurrency", "1,2", "--requests", "2", "--input-len", "1500")
    assert run.returncode == 9, run.stderr[-3000:]
    assert "Every request failed" in run.stderr and "accepts at most 1024 input tokens" in run.stderr
    (folder,) = tmp_path.iterdir()
    levels = json.loads((folder / "result.json").read_text())["levels"]
    assert [(level["concurrency"], level["requests"], level["errors"]) for level in levels] == [(1, 2, 2), (2, 2, 2)]


@pytest.fixture(scope="module")
def limited_deployment(deployment, tmp_path_factory):
    """A copy of the repository served one request at a time, no queue: more in flight get 429. A copy, since each
    deployment's teardown checks that no process still uses its repository."""
    root = tmp_path_factory.mktemp("e2e-bench-limited")
    repository = Path(shutil.copytree(deployment.repository, root / "tiny-llama", symlinks=True))
    limited = Deployment(repository, root / "serve.log", "--max-concurrent-requests", "1",
                         "--max-queued-requests", "0")  # fmt: skip
    try:
        limited.wait_healthy()
        yield limited
    finally:
        limited.stop_cleanly()


def test_errors_under_load_are_counted_and_reported(limited_deployment, tmp_path):
    run = bench(limited_deployment, tmp_path, "--concurrency", "1,4", "--requests", "8", "--input-len", "16",
                "--output-len", "8")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "requests failed, e.g.:" in run.stderr and "at capacity" in run.stderr
    (folder,) = tmp_path.iterdir()
    alone, busy = json.loads((folder / "result.json").read_text())["levels"]
    assert (busy["concurrency"], busy["requests"]) == (4, 8) and 0 < busy["errors"] < 8
    assert "rate_limit_exceeded" in busy["error_messages"][0]
    assert (alone["concurrency"], alone["requests"]) == (1, 8) and alone["errors"] < 8


def test_wrong_model_name_is_refused(deployment, tmp_path):
    run = bench(deployment, tmp_path / "out", "--model", "no-such-model")
    assert run.returncode == 9
    assert "does not serve a model named 'no-such-model'" in run.stderr and "tiny-llama" in run.stderr
    assert not (tmp_path / "out").exists()


def test_interrupt_stops_aiperf_and_keeps_finished_levels(deployment, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tritonrepo.cli.main", "bench", str(deployment.repository),
               "--openai-url", deployment.base_url, "--out", str(out), "--concurrency", "1,2",
               "--requests", "4", "--input-len", "16", "--output-len", "8"]  # fmt: skip
    before = _aiperf_processes()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    # Interrupt once level 2 has started: its aiperf is running, level 1 is done.
    while time.monotonic() < deadline and not list(out.glob("*/aiperf/concurrency-2")):
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Interrupted" in stderr
    (folder,) = out.iterdir()
    result = json.loads((folder / "result.json").read_text())
    assert result["interrupted"] and [level["concurrency"] for level in result["levels"]] == [1]
    assert (folder / "report.html").is_file()
    assert not list(folder.glob("aiperf/concurrency-*/scratch")), "the interrupted level left its scratch folder"
    time.sleep(1)
    assert not _aiperf_processes() - before, "aiperf left running"


def _aiperf_processes() -> set[str]:
    """pid and command line of live aiperf processes (its services rename themselves "[aiperf worker_...]")."""
    return {f"{pid} {command}" for pid, command in live_processes("aiperf")}
