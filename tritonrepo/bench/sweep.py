"""A benchmark sweep: one aiperf run per concurrency level into a new run folder, then the JSON, charts and report."""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tritonrepo import __version__
from tritonrepo.bench import aiperf_runner
from tritonrepo.bench.results import BenchResult, LevelResult
from tritonrepo.bench.target import Target
from tritonrepo.errors import BenchError
from tritonrepo.files import write_atomically

RESULT = "result.json"
REPORT = "report.html"


@dataclass
class SweepOutcome:
    result: BenchResult
    folder: Path
    plots: list[Path] = field(default_factory=list)
    report: Path | None = None
    comparison: list[dict] | None = None


def new_run_folder(out: Path, model: str, now: datetime) -> Path:
    """OUT/<time>-<model>, made new: an existing run is never written into (a suffix -2, -3, ... when taken)."""
    stem = f"{now.strftime('%Y%m%d-%H%M%S')}-{re.sub(r'[^A-Za-z0-9._-]+', '_', model)[:60]}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BenchError(f"Cannot create the output folder {out}: {error}") from None
    for attempt in range(1, 1000):
        folder = out / (stem if attempt == 1 else f"{stem}-{attempt}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
        except OSError as error:
            raise BenchError(f"Cannot create a run folder in {out}: {error}") from None
    raise BenchError(f"{out} already holds 999 runs named {stem}.")


def _hardware() -> dict:
    from tritonrepo.hardware.detect import detect_hardware

    found = detect_hardware().as_dict()
    found["host"] = {"machine": platform.machine(), "system": platform.platform(), "cpus": os.cpu_count()}
    return found


def write_result(result: BenchResult, folder: Path) -> Path:
    path = folder / RESULT
    write_atomically(path, (json.dumps(result.as_dict(), indent=2) + "\n").encode())
    return path


def run_sweep(
    target: Target,
    concurrency: list[int],
    workloads: dict[int, aiperf_runner.Workload],
    out: Path,
    *,
    api_key: str | None = None,
    earlier: BenchResult | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> SweepOutcome:
    """Every level in turn, with its workload. result.json is rewritten after each level, so Ctrl-C or a failing level
    keeps the levels that finished: the KeyboardInterrupt or BenchError is re-raised after the files are written,
    carrying the outcome as `.outcome`."""
    executable = aiperf_runner.aiperf_executable()
    now = datetime.now(timezone.utc)
    folder = new_run_folder(out, target.model, now)
    workload = workloads[concurrency[0]]
    settings = {"concurrency": concurrency, "requests": {str(c): w.requests for c, w in workloads.items()}, "duration_s": workload.duration_s,
                "input_len": workload.input_len, "output_len": workload.output_len, "stream": workload.stream,
                "tokenizer": target.tokenizer}  # fmt: skip
    result = BenchResult(
        model=target.model, openai_url=target.openai_url, settings=settings, levels=[],
        started=now.isoformat(timespec="seconds"), deployment=target.manifest, hardware=_hardware(),
        tools={"tritonrepo": __version__, "aiperf": aiperf_runner.aiperf_version(), "python": platform.python_version()},
    )  # fmt: skip
    outcome = SweepOutcome(result=result, folder=folder)
    base_url = target.openai_url.removesuffix("/v1")
    env = aiperf_runner.aiperf_environment(target.tokenizer)
    try:
        for index, level in enumerate(concurrency, 1):
            workload = workloads[level]
            planned = f"{workload.requests} requests" if workload.requests else f"{workload.duration_s:g} s"
            say(f"==> concurrency {level} ({index}/{len(concurrency)}): {planned}")
            command = aiperf_runner.aiperf_command(
                executable, base_url=base_url, model=target.model, tokenizer=target.tokenizer, concurrency=level,
                workload=workload, output=folder / "aiperf" / f"concurrency-{level}", api_key=api_key,
            )  # fmt: skip

            def progress(done: int, total: int | None = workload.requests) -> None:
                say(f"    {done}/{total} requests done" if total else f"    {done} requests done")

            export = aiperf_runner.run_level(
                command, folder / "aiperf" / f"concurrency-{level}", env=env, on_progress=progress
            )
            measured = LevelResult.from_aiperf(level, export)
            result.levels.append(measured)
            errors = f", {measured.errors} errors" if measured.errors else ""
            if measured.errors:  # counted and reported; the sweep goes on
                first = measured.error_messages[0] if measured.error_messages else "no message"
                say(f"    {measured.errors} of {measured.requests} requests failed, e.g.: {first[:300]}")
            say(
                f"    {measured.output_tokens_per_s:.1f} output tokens/s, TTFT p50 {measured.ttft_ms.p50:.1f} ms{errors}"
            )
            write_result(result, folder)
    except (KeyboardInterrupt, BenchError) as stopped:
        result.interrupted = isinstance(stopped, KeyboardInterrupt)
        _finish(outcome, earlier)
        stopped.outcome = outcome
        raise
    _finish(outcome, earlier)
    return outcome


def _finish(outcome: SweepOutcome, earlier: BenchResult | None) -> None:
    """result.json, the charts and the HTML report for the levels that finished."""
    from tritonrepo.bench import html_report, plots
    from tritonrepo.bench.table import compare

    result = outcome.result
    result.finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_result(result, outcome.folder)
    if earlier is not None:
        outcome.comparison = compare(result, earlier)
    outcome.plots = plots.write_plots(result, outcome.folder, earlier)
    if result.levels:
        outcome.report = outcome.folder / REPORT
        write_atomically(outcome.report, html_report.render(result, outcome.plots, outcome.comparison).encode())
