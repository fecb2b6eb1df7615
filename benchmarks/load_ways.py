"""Streamed requests sent several ways at one concurrency in alternating turns, for the benchmarks that compare two
paths to the same engine (frontend_overhead.py: our front end against gRPC straight to the runtime;
dynamo_frontend.py: the Dynamo frontend against ours). Run by hand, through those scripts."""

from __future__ import annotations

import asyncio
import platform
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np


@dataclass
class Sample:
    """One streamed request, times in seconds from its own start."""

    prompt: int
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)  # between consecutive messages that carry tokens
    tokens: int = 0  # front end: usage.completion_tokens; direct: output ids received
    messages: int = 0  # SSE content events / gRPC responses with tokens
    prompt_tokens: int = 0
    end: float = 0.0


@dataclass
class LevelRun:
    way: str
    concurrency: int
    wall_s: float
    samples: list[Sample]
    cpu_s: dict[str, float]


def merged(runs: list[LevelRun]) -> LevelRun:
    cpu = {name: sum(run.cpu_s[name] for run in runs) for name in runs[0].cpu_s}
    samples = [sample for run in runs for sample in run.samples]
    return LevelRun(runs[0].way, runs[0].concurrency, sum(run.wall_s for run in runs), samples, cpu)


def percentiles(values: list[float], points=(50, 90, 99)) -> list[float]:
    """Percentiles in ms of values in seconds (NaN where there are none)."""
    if not values:
        return [float("nan")] * len(points)
    return [float(np.percentile(values, p)) * 1000 for p in points]


def by_prompt(run: LevelRun, attribute: str) -> dict[int, list[int]]:
    """Each prompt's values of `attribute` over its requests, sorted: the same prompt must count the same each way."""
    values: dict[int, list[int]] = {}
    for sample in run.samples:
        values.setdefault(sample.prompt, []).append(getattr(sample, attribute))
    return {prompt: sorted(found) for prompt, found in values.items()}


class WaysBench:
    """The ways (`ways`), the chat prompts and the loop that loads them.
    Subclasses send one request (`one`) and read the deployment's CPU time (`cpu_seconds`)."""

    ways: tuple[str, ...] = ()
    prompt_way = ""  # the way that chooses the prompts [default: the first]
    client_cpu = "client"  # the name this script's own CPU time goes under

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.messages: list = []

    def one(self, way: str, index: int, max_tokens: int | None = None):
        raise NotImplementedError

    def cpu_seconds(self, way: str) -> dict[str, float]:
        raise NotImplementedError

    def use_prompts(self, messages: list, chosen: list[int] | None = None) -> None:
        """Take the candidate prompts, then (chosen) keep those, in that order."""
        self.messages = messages if chosen is None else [messages[i] for i in chosen]

    async def choose_prompts(self, candidates: list, wanted: int) -> int:
        """Keep prompts whose greedy output runs to max_tokens (the API cannot force it); returns the number tried."""
        self.use_prompts(candidates)
        chosen: list[int] = []
        tried = 0
        while tried < len(candidates) and len(chosen) < wanted:
            batch = range(tried, min(tried + 8, len(candidates)))
            samples = await asyncio.gather(*(self.one(self.prompt_way or self.ways[0], i) for i in batch))
            chosen += [s.prompt for s in samples if s.tokens == self.max_tokens]
            tried = batch.stop
        # If too few run to full length, the rest are used anyway; the token counts in the tables show it.
        chosen = (chosen + [i for i in range(len(candidates)) if i not in chosen])[:wanted]
        self.use_prompts(candidates, chosen)
        return tried

    async def run_level(
        self, way: str, concurrency: int, requests: int, max_tokens: int | None = None, first: int = 0
    ) -> LevelRun:
        """`requests` requests (prompts in turn from number `first`), `concurrency` in flight at any time: each
        worker sends its next request when its last one ends."""
        queue = iter(range(first, first + requests))
        samples: list[Sample] = []

        async def worker() -> None:
            for number in queue:
                samples.append(await self.one(way, number % len(self.messages), max_tokens))

        cpu_before, client_before = self.cpu_seconds(way), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
        wall = time.perf_counter() - started
        cpu = {k: v - cpu_before[k] for k, v in self.cpu_seconds(way).items()}
        cpu[self.client_cpu] = time.process_time() - client_before
        return LevelRun(way, concurrency, wall, samples, cpu)

    async def warm_up(self, top: int) -> None:
        """Untimed: opens every connection the highest level needs and runs each way once at `top` and at one."""
        for way in self.ways:
            await self.run_level(way, top, top, max_tokens=4)
            await self.run_level(way, 1, 4)

    async def run_turns(self, concurrency: int, requests: int, rounds: int) -> dict[str, LevelRun]:
        """Every way at one concurrency in `rounds` turns, the order reversed each turn (A B, B A, ...), so that a slow
        patch of the machine (other work on the same cores) falls on every way rather than on one."""
        parts: dict[str, list[LevelRun]] = {way: [] for way in self.ways}
        share = max(concurrency, requests // rounds)
        for turn in range(rounds):
            for way in self.ways if turn % 2 == 0 else self.ways[::-1]:
                parts[way].append(await self.run_level(way, concurrency, share, first=turn * share))
        return {way: merged(runs) for way, runs in parts.items()}


def turns(requests: int, concurrency: int, asked: int | None) -> int:
    """Short turns at low concurrency, so the ways see the same stalls of a shared machine; at high concurrency a turn
    must be long enough to keep `concurrency` requests in flight most of the time. Even: each way goes first equally
    often."""
    rounds = asked or max(2, requests // max(4, 2 * concurrency))
    return rounds + rounds % 2


def versions(names: tuple[str, ...]) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return ", ".join(found)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main_stopping_on_signals(run: Callable[[], None], stopped: str) -> None:
    """run(); SIGTERM unwinds like Ctrl-C (so the serves are stopped), and either ends with exit code 130."""

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        run()
    except KeyboardInterrupt:
        print(f"interrupted; {stopped}", file=sys.stderr)
        raise SystemExit(130) from None


def summary(run: LevelRun) -> dict:
    tokens = [s.tokens for s in run.samples]
    return {
        "tokens_per_s": sum(tokens) / run.wall_s,
        "ttft_ms": percentiles([s.ttft for s in run.samples]),
        "itl_ms": percentiles([g for s in run.samples for g in s.gaps]),
        # per token after the first, whatever the message boundaries: a front end that sends bursts has a tiny ITL
        "tpot_ms": percentiles([(s.end - s.ttft) / (s.tokens - 1) for s in run.samples if s.tokens > 1], (50,)),
        "tokens_min": min(tokens),
        "tokens_max": max(tokens),
        "tokens_total": sum(tokens),
        "messages_per_request": sum(s.messages for s in run.samples) / len(run.samples),
        "wall_s": run.wall_s,
        "cpu_s": run.cpu_s,
    }


PERCENTILES = ("p50", "p90", "p99")


def print_table(
    concurrency: int, runs: dict[str, LevelRun], rounds: int, load: tuple[float, float], *, cpu_parts: tuple[str, ...],
    shown: tuple[str, ...] = PERCENTILES, tpot: bool = False,
) -> dict[str, dict]:  # fmt: skip
    """A markdown table of one level, a row per way: tokens/s, the `shown` percentiles of TTFT and ITL (ms), TPOT,
    token counts, messages and CPU time per token of each of `cpu_parts`; returns each way's summary."""
    stats = {way: summary(run) for way, run in runs.items()}
    requests = len(next(iter(runs.values())).samples)
    print(f"\n### concurrency {concurrency} ({requests} requests each way in {rounds} alternating turns; 1-min load "
          f"average {load[0]:.1f} -> {load[1]:.1f})\n")  # fmt: skip
    picked = [PERCENTILES.index(p) for p in shown]
    headers = ["tokens/s", *(f"TTFT {p} ms" for p in shown), *(f"ITL {p} ms" for p in shown)]
    headers += ["TPOT p50 ms"] * tpot + ["tokens per request", "messages per request", "wall s"]
    headers.append(f"CPU ms per token: {' / '.join(cpu_parts)}")
    print("| way | " + " | ".join(headers) + " |")
    print("|---|" + "---:|" * len(headers))
    for way, s in stats.items():
        low, high = s["tokens_min"], s["tokens_max"]
        cells = [f"{s['tokens_per_s']:,.0f}", *(f"{s['ttft_ms'][i]:.1f}" for i in picked)]
        cells += [f"{s['itl_ms'][i]:.2f}" for i in picked] + [f"{s['tpot_ms'][0]:.2f}"] * tpot
        cells += [
            str(low) if low == high else f"{low}-{high}",
            f"{s['messages_per_request']:.1f}",
            f"{s['wall_s']:.2f}",
        ]
        cells.append(" / ".join(f"{s['cpu_s'][name] * 1000 / s['tokens_total']:.2f}" for name in cpu_parts))
        print(f"| {way} | " + " | ".join(cells) + " |")
    return stats
