"""The Dynamo frontend against our own front end, both over the portable runtime: throughput and time to first token.

    python benchmarks/dynamo_frontend.py [--concurrency 1,32] [--requests N] [--rounds N] [--max-tokens 64]
                                         [--prompts 16] [--two-workers] [--runtime-threads 1] [--json FILE] [--keep]

Builds the embedded tiny-llama twice, with the same engine limits (--max-batch-size = the highest concurrency):
  ours:    `tritonrepo build --model tiny-llama`, served by `tritonrepo serve` = tritonserver (the runtime model
           `tensorrt_llm`) + tritonrepo's OpenAI front end;
  dynamo:  `tritonrepo build --model tiny-llama --serving dynamo --workers 1`, served by `tritonrepo serve` = the real
           `python -m dynamo.frontend` (1.6.1, KV router as built) + one portable-runtime worker
           (`tritonrepo.dynamo.portable_worker`);
  (--two-workers adds a third way: the same with --workers 2, the frontend routing over two engines).
Every way runs the same engine (all_models/inflight_batcher_llm/tensorrt_llm/1/hf_engine.py) with one torch thread
(OMP_NUM_THREADS, --runtime-threads), so that its spinning threads do not take the cores the front ends need. With
one worker the difference between the ways is the front end and its path to the engine: ours is HTTP -> tokenize ->
gRPC stream to Triton's Python stub; Dynamo's is HTTP -> Rust preprocessor -> router -> Dynamo's request plane to a
Python worker. Both serves run at once on free ports; at each concurrency the same streamed chat completions (greedy,
the same max_tokens, prompts chosen through our front end so that the greedy output runs to max_tokens) go to each
way in alternating turns (A B, B A, ...) so that other work on the shared machine falls on both, read by the bare
asyncio SSE client of benchmarks/frontend_overhead.py. TTFT is the first SSE message with text, ITL the gap between
such messages (each front end may merge tokens into one message, so messages per request are shown), TPOT the time
per token after the first, (end - TTFT) / (tokens - 1), whatever the message boundaries; token counts are the
responses' usage.completion_tokens and must match per prompt across the ways. Prints markdown tables and the
Dynamo/ours ratios of the same run; both serves are stopped with SIGINT (as Ctrl-C would) and checked gone. By hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from frontend_overhead import RawSSEClient, _proc_stat, candidate_messages, free_port, via_frontend  # noqa: E402
from load_ways import (  # noqa: E402
    LevelRun,
    WaysBench,
    by_prompt,
    cpu_model,
    main_stopping_on_signals,
    print_table,
    turns,
    versions,
)

ROOT = Path(__file__).resolve().parent.parent
CPU_PARTS = ("front end", "runtime", "client")
STOP_WAIT_S = 40.0  # serve's own stop waits up to 10 s per stage (Dynamo drains on SIGTERM) before SIGKILL


# --- the deployments -----------------------------------------------------------------------------------------------
def tritonrepo(*args: str) -> list[str]:
    return [sys.executable, "-m", "tritonrepo.cli.main", *args]


def build(output: Path, batch: int, workers: int = 0) -> Path:
    dynamo = ["--serving", "dynamo", "--workers", str(workers)] if workers else []
    command = tritonrepo("-q", "build", "--model", "tiny-llama", *dynamo, "--max-batch-size", str(batch))
    # stdout is only the built path; errors (one line and an exit code) go to stderr.
    subprocess.run([*command, "--output", str(output)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return output


class Serve:
    """One `tritonrepo serve` on free ports, in its own session; stopped by SIGINT to its process id when the `with`
    block ends (SIGTERM, then SIGKILL to its group, only if it does not stop), and checked that its children are gone.
    """

    def __init__(self, way: str, folder: Path, log: Path, dynamo: bool, runtime_threads: int) -> None:
        self.way, self.folder, self.log, self.dynamo = way, folder, log, dynamo
        self.port = free_port()
        self.runtime_threads = runtime_threads
        self.process: subprocess.Popen | None = None
        self.parts: dict[int, str] = {}  # pid -> CPU part, read once the deployment is ready
        self.stopped_by = ""

    def __enter__(self) -> Serve:
        command = tritonrepo("serve", str(self.folder), "--openai-port", str(self.port))
        if not self.dynamo:  # tritonserver's own ports; Dynamo's serve has only the frontend's
            command += ["--http-port", str(free_port()), "--grpc-port", str(free_port())]
            command += ["--metrics-port", str(free_port()), "--log-file", str(self.log.with_suffix(".triton.log"))]
        env = {**os.environ, "TRITONREPO_QUIET": "0"}  # Dynamo's serve says "ready after" on stderr
        if self.runtime_threads:  # torch's intra-op threads of the engine (the Triton stub or the Dynamo worker)
            env["OMP_NUM_THREADS"] = str(self.runtime_threads)
        self.process = subprocess.Popen(
            command, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True, env=env
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT is ignored where the shell started us in background
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=STOP_WAIT_S)
                self.stopped_by = signum.name
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            os.killpg(self.process.pid, signal.SIGKILL)  # the session this script created: serve and its group
            self.process.wait()
            self.stopped_by = "SIGKILL"
        deadline = time.monotonic() + 15  # serve's children die with it (parent-death signal); give them a moment
        while time.monotonic() < deadline and self.alive_children():
            time.sleep(0.2)

    def alive_children(self) -> list[int]:
        return [pid for pid in self.parts if pid != self.process.pid and _proc_stat(pid) is not None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 600) -> float:
        """Seconds until ready: our serve's /health answers 200; Dynamo's serve has printed "ready after" (every
        worker registered and the model listed)."""
        import httpx

        started, deadline = time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"serve {self.way} exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.dynamo:
                ready = "ready after" in self.log.read_text(errors="replace")
            else:
                try:
                    ready = httpx.get(f"{self.url}/health", timeout=2).status_code == 200
                except httpx.HTTPError:
                    ready = False  # not listening yet
            if ready:
                self.parts = self._cpu_parts()
                return time.monotonic() - started
            time.sleep(0.25)
        raise SystemExit(f"serve {self.way} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def _cpu_parts(self) -> dict[int, str]:
        """serve's process and what it started (each child leads its own group; a group holds e.g. Triton's stubs).
        Front end: ours runs in serve's process; Dynamo's is the dynamo.frontend child, plus serve's supervisor."""
        serve = self.process.pid
        parts = {serve: "front end"}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == serve:
                continue
            stat = _proc_stat(int(entry.name))
            if stat and (stat.ppid == serve or getattr(_proc_stat(stat.pgrp), "ppid", None) == serve):
                leader = Path(f"/proc/{stat.pgrp}/cmdline").read_bytes().replace(b"\0", b" ")
                parts[int(entry.name)] = "front end" if b"dynamo.frontend" in leader else "runtime"
        return parts

    def cpu_seconds(self) -> dict[str, float]:
        totals = dict.fromkeys(CPU_PARTS[:2], 0.0)
        for pid, part in self.parts.items():
            stat = _proc_stat(pid)
            totals[part] += stat.cpu_s if stat else 0.0
        return totals

    def model_name(self) -> str:
        import httpx

        return httpx.get(f"{self.url}/v1/models", timeout=10).json()["data"][0]["id"]


# --- the runs ------------------------------------------------------------------------------------------------------
class Bench(WaysBench):
    """One SSE client per way (a kept-alive connection per request in flight), the same prompts for all; our front
    end chooses them."""

    def __init__(self, serves: dict[str, Serve], max_tokens: int) -> None:
        super().__init__(max_tokens)
        self.serves, self.ways = serves, tuple(serves)
        self.clients = {way: RawSSEClient("127.0.0.1", serve.port) for way, serve in serves.items()}
        self.models = {way: serve.model_name() for way, serve in serves.items()}

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def one(self, way: str, index: int, max_tokens: int | None = None):
        messages = self.messages[index]
        return via_frontend(self.clients[way], self.models[way], messages, max_tokens or self.max_tokens, index)

    def cpu_seconds(self, way: str) -> dict[str, float]:
        return self.serves[way].cpu_seconds()


# --- numbers -------------------------------------------------------------------------------------------------------
def print_level(concurrency: int, runs: dict[str, LevelRun], rounds: int, load: tuple[float, float]) -> dict:
    stats = print_table(concurrency, runs, rounds, load, cpu_parts=CPU_PARTS, shown=("p50", "p90"), tpot=True)
    ours = stats["ours"]
    checks = {}
    for way in (w for w in stats if w != "ours"):
        rate = stats[way]["tokens_per_s"] / ours["tokens_per_s"]
        ttft = stats[way]["ttft_ms"][0] / ours["ttft_ms"][0]
        delta = stats[way]["ttft_ms"][0] - ours["ttft_ms"][0]
        print(f"\n{way} / ours: tokens/s **{rate:.3f}**, TTFT p50 **{ttft:.2f}x** ({delta:+.1f} ms)")
        same = {
            attribute: sum(
                by_prompt(runs[way], attribute).get(p) == v for p, v in by_prompt(runs["ours"], attribute).items()
            )
            for attribute in ("tokens", "prompt_tokens")
        }
        prompts = len(by_prompt(runs["ours"], "tokens"))
        print(f"prompts with the same completion / prompt token counts as ours: {same['tokens']} / "
              f"{same['prompt_tokens']} of {prompts}")  # fmt: skip
        checks[way] = {"rate_ratio": rate, "ttft_p50_ratio": ttft, "ttft_p50_delta_ms": delta, "same_counts": same,
                       "prompts": prompts}  # fmt: skip
    return {"summary": stats, "versus_ours": checks}


VERSIONS = ("tritonrepo", "ai-dynamo", "ai-dynamo-runtime", "nvidia-pytriton", "torch", "transformers")


# --- main ----------------------------------------------------------------------------------------------------------
async def measure(bench: Bench, args, results: dict) -> None:
    tried = await bench.choose_prompts(candidate_messages(args.prompts * 4), args.prompts)
    print(f"prompts: {len(bench.messages)} chat prompts chosen from {tried} tried (greedy output reaches max_tokens)")
    await bench.warm_up(max(args.concurrency))
    for concurrency in args.concurrency:
        load_before = os.getloadavg()[0]
        requests = args.requests or max(24, 4 * concurrency)
        rounds = turns(requests, concurrency, args.rounds)
        runs = await bench.run_turns(concurrency, requests, rounds)
        level = print_level(concurrency, runs, rounds, (load_before, os.getloadavg()[0]))
        level["concurrency"] = concurrency
        level["samples"] = {way: [asdict(s) for s in run.samples] for way, run in runs.items()}
        results["levels"].append(level)


def print_overview(results: dict) -> None:
    print("\n### Dynamo / ours, this run\n")
    print(
        "| concurrency | way | tokens/s Dynamo / ours | ratio | TTFT p50 Dynamo / ours | ITL p50 Dynamo / ours "
        "| TPOT p50 Dynamo / ours |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for level in results["levels"]:
        stats, ours = level["summary"], level["summary"]["ours"]
        for way, check in level["versus_ours"].items():
            s = stats[way]
            print(
                f"| {level['concurrency']} | {way} | {s['tokens_per_s']:,.0f} / {ours['tokens_per_s']:,.0f} | "
                f"**{check['rate_ratio']:.2f}** | {s['ttft_ms'][0]:.1f} / {ours['ttft_ms'][0]:.1f} ms | "
                f"{s['itl_ms'][0]:.2f} / {ours['itl_ms'][0]:.2f} ms | "
                f"{s['tpot_ms'][0]:.2f} / {ours['tpot_ms'][0]:.2f} ms |"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,32", help="requests in flight, comma separated")
    parser.add_argument(
        "--requests", type=int, default=0, help="requests per level and way [default: 4 x concurrency, at least 24]"
    )
    parser.add_argument(
        "--rounds", type=int, default=0,
        help="alternating turns per level [default: turns of 2 x concurrency requests, at least 4; at least 2 turns]",
    )  # fmt: skip
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=16, help="distinct prompts, sent in turn")
    parser.add_argument("--two-workers", action="store_true", help="a third way: Dynamo with two portable workers")
    parser.add_argument(
        "--runtime-threads", type=int, default=1,
        help="torch threads of every engine (OMP_NUM_THREADS); 0: torch's default, one per core [default: 1]",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every per-request number here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, built deployments)")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    return args


def run(args: argparse.Namespace) -> None:
    # A handled signal is reset to the default at exec, an ignored one stays ignored: started in the background by a
    # shell, this script has SIGINT ignored, and so would the serves, whose Ctrl-C stop path is what `__exit__` uses.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="dynamo-bench-"))
    os.environ.setdefault("TRITONREPO_CACHE", str(work / "cache"))  # serve's private folders and the built model
    batch = max(args.concurrency)  # the same engine limit in every way: a whole level decodes together
    ways = {"ours": (0, False), "dynamo": (1, True)}
    if args.two_workers:
        ways["dynamo x2"] = (2, True)
    serves: dict[str, Serve] = {}
    try:
        for way, (workers, dynamo) in ways.items():
            folder = build(work / way.replace(" ", "-"), batch, workers)
            serves[way] = Serve(way, folder, work / f"{way.replace(' ', '-')}.serve.log", dynamo, args.runtime_threads)
        try:
            with contextlib.ExitStack() as stack:  # each serve is stopped, in reverse order, however this ends
                for serve in serves.values():  # all start at once; readiness is awaited in turn
                    stack.enter_context(serve)
                for serve in serves.values():
                    print(f"serve {serve.way} ready after {serve.wait_ready():.1f} s ({serve.url})", file=sys.stderr)
                print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu_model()}")
                print(f"versions: Python {platform.python_version()}, {versions(VERSIONS)}")
                threads = args.runtime_threads or "torch's default"
                print(
                    f"engines: {threads} torch thread(s) each, {batch} sequences decoded together; max_tokens "
                    f"{args.max_tokens}, greedy, streamed. CPU: front end = ours: serve's process (the front end runs "
                    "in it); Dynamo: dynamo.frontend + serve's supervisor. runtime = tritonserver + stubs / the workers"
                )
                results = {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version()},
                    "versions": versions(VERSIONS),
                    "levels": [],
                }
                asyncio.run(run_all(serves, args, results))
                print_overview(results)
        finally:
            for serve in (s for s in serves.values() if s.process is not None):
                left = serve.alive_children()
                gone = f"processes left: {left}" if left else "none of its processes left"
                print(f"serve {serve.way} stopped ({serve.stopped_by or 'had exited'}); {gone}", file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
            print(f"\nraw numbers: {args.json}")
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


async def run_all(serves: dict[str, Serve], args, results: dict) -> None:
    bench = Bench(serves, args.max_tokens)
    try:
        await measure(bench, args, results)
    finally:
        await bench.close()


def main() -> None:
    main_stopping_on_signals(lambda: run(parse_args()), "the serves were stopped")


if __name__ == "__main__":
    main()
