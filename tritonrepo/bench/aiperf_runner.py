"""One concurrency level with aiperf as the load generator, run as a child process in a folder of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tritonrepo.errors import BenchRunError, BenchToolMissingError

AIPERF_VERSION = "0.13.0"  # the version the command line below and the export parsing are written against
EXPORT = "profile_export_aiperf.json"
SCRATCH = "scratch"  # aiperf's dataset files while a level runs
RECORDS = "profile_export.jsonl"  # one line per finished request, appended while the level runs
INSTALL = "pip install 'tritonrepo[bench]'"


@dataclass(frozen=True)
class Workload:
    input_len: int
    output_len: int
    requests: int | None  # per level; None when `duration_s` bounds it
    duration_s: float | None
    stream: bool = True


def aiperf_executable() -> str:
    """aiperf beside this interpreter (a virtualenv not on PATH), else on PATH."""
    beside = Path(sys.executable).with_name("aiperf")
    found = str(beside) if beside.is_file() else shutil.which("aiperf")
    if not found:
        raise BenchToolMissingError(
            "aiperf, the load generator `tritonrepo bench` drives, is not installed.", hint=f"Install it: {INSTALL}"
        )
    return found


def aiperf_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("aiperf")
    except metadata.PackageNotFoundError:
        return None


def aiperf_command(
    executable: str,
    *,
    base_url: str,
    model: str,
    tokenizer: str,
    concurrency: int,
    workload: Workload,
    output: Path,
    api_key: str | None = None,
) -> list[str]:
    """The aiperf 0.13 command line for one level. Prompts are synthetic, exactly `input_len` tokens of the
    deployment's own tokenizer; `ignore_eos` makes every reply `output_len` tokens long; token counts are the
    server's (`usage`), since re-tokenizing the returned text overstates them."""
    command = [
        executable, "profile",
        "--url", base_url, "--model", model, "--endpoint-type", "chat",
        "--tokenizer", tokenizer, "--use-server-token-count",
        "--concurrency", str(concurrency),
        "--prompt-input-tokens-mean", str(workload.input_len), "--prompt-input-tokens-stddev", "0",
        "--prompt-output-tokens-mean", str(workload.output_len), "--prompt-output-tokens-stddev", "0",
        "--extra-inputs", "ignore_eos:true",
        "--output-artifact-dir", str(output), "--no-auto-plot", "--ui-type", "none",
        "--random-seed", "0",
    ]  # fmt: skip
    if workload.stream:
        command.append("--streaming")
    if workload.requests is not None:
        command += ["--request-count", str(workload.requests)]
    if workload.duration_s is not None:
        command += ["--benchmark-duration", f"{workload.duration_s:g}"]
    if api_key:
        command += ["--api-key", api_key]
    return command


def _records_done(output: Path) -> int:
    try:
        with open(output / RECORDS, "rb") as records:
            return sum(1 for _ in records)
    except OSError:
        return 0


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to aiperf's whole process group (its services and workers too), then SIGKILL. Not SIGINT: aiperf takes
    it as "finish the level gracefully" (15 s and more here), and a level cut short is not kept anyway."""
    for signum, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # workers that outlived their parent are still in the group
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def aiperf_environment(tokenizer: str) -> dict[str, str]:
    """This environment, less what misleads aiperf 0.13: with HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set it looks
    even a local tokenizer folder up in the Hugging Face cache and fails ("Repo id must be in the form ..."). A local
    folder needs no network, so the flags are dropped for it; a Hub id keeps them."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "160"}
    if Path(tokenizer).is_dir():
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("TRANSFORMERS_OFFLINE", None)
    return env


def _all_failed(output: Path) -> dict | None:
    """An export in aiperf's shape for a level whose every request failed (from the per-request records), else None."""
    messages: dict[str, int] = {}
    try:
        with open(output / RECORDS, "rb") as records:
            for line in records:
                error = json.loads(line).get("error")
                if not error:
                    return None
                message = str(error.get("message") or error.get("type") or "unknown error")
                messages[message] = messages.get(message, 0) + 1
    except (OSError, ValueError, AttributeError):
        return None
    count = sum(messages.values())
    if not count:
        return None
    return {
        "error_request_count": {"avg": count},
        "completed_request_count": {"avg": count},
        "error_summary": [{"error_details": {"message": m}, "count": n} for m, n in messages.items()],
    }


def run_level(
    command: list[str], output: Path, *, env: dict[str, str], on_progress: Callable[[int], None] | None = None
) -> dict:
    """Run aiperf; return its JSON export. KeyboardInterrupt stops aiperf (and its workers) and propagates."""
    from tritonrepo.serving.tritonserver import die_with_parent

    output.mkdir(parents=True)
    log = output / "aiperf.log"
    # aiperf 0.13 writes its prompts to memory-mapped files in aiperf_mmap_<id>/ under the system temp folder and
    # leaves the folder behind: here it goes under the level's folder and is removed with whatever is in it.
    scratch = output / SCRATCH
    env = {**env, "AIPERF_DATASET_MMAP_BASE_PATH": str(scratch)}
    with open(log, "wb") as sink:
        # A session of its own: the terminal's Ctrl-C reaches us, and we stop aiperf's whole group ourselves.
        process = subprocess.Popen(
            die_with_parent(command, signal.SIGTERM), stdout=sink, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
        try:
            done, told = 0, time.monotonic()
            while process.poll() is None:
                time.sleep(0.5)
                now = _records_done(output)
                if on_progress and now != done and time.monotonic() - told >= 5:  # a line every 5 s at most
                    on_progress(now)
                    done, told = now, time.monotonic()
        finally:  # on KeyboardInterrupt too; after a normal end this only sweeps the group
            _stop(process)
            shutil.rmtree(scratch, ignore_errors=True)
    export = output / EXPORT
    if not export.is_file() and (failed := _all_failed(output)):
        return failed  # aiperf 0.13 writes no export when every request failed; the level still counts, as errors
    if not export.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise BenchRunError(
            f"aiperf exited with {process.returncode} and wrote no results; the end of {log}:\n  " + "\n  ".join(tail)
        )
    try:
        return json.loads(export.read_text())
    except (OSError, ValueError) as error:
        raise BenchRunError(f"aiperf's export {export} is unreadable: {error}") from None
