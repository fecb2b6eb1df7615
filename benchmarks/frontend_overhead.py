"""What the OpenAI front end costs: the same streamed generations through it and straight to `tensorrt_llm`.

    python benchmarks/frontend_overhead.py [--repository DIR] [--concurrency 1,16,64] [--requests N] [--rounds N]
                                           [--max-tokens 64] [--prompts 16] [--json FILE] [--keep]
                                           [--client raw|httpx] [--runtime-threads 1]

Builds the embedded tiny-llama (or uses --repository), starts `tritonrepo serve` on free ports, then at each
concurrency sends the same chat prompts two ways, each request streamed:
  (a) front end: POST /v1/chat/completions with stream=true, read as SSE lines by a bare asyncio HTTP/1.1 client
                 (--client httpx: httpx.AsyncClient, whose own cost then counts as the front end's);
  (b) direct:    the chat-templated prompt, tokenized with the repository's tokenizer as the front end does, sent to
                 the runtime model `tensorrt_llm` with tritonclient.grpc.aio stream_infer (streaming=true).
Both are greedy with the same output length. The OpenAI API has no standard way to force the full length (the
front end's min_tokens is an extension), so prompts are chosen whose greedy output runs to max_tokens, and the token counts of
both ways are printed. Path (a) is everything the front end adds over the runtime: HTTP, the chat template, tokenizing,
the gRPC call to `tensorrt_llm` (the served name streams straight from the runtime model, as the front end does for
its own repositories) and detokenizing. The runtime model runs with one torch thread by default (--runtime-threads):
with one per core, its spinning threads take the CPU that the front end, Triton and the client need on a small
machine, and both ways then measure mostly that contention. Each level runs both ways in alternating turns (A B, B A, ...) so that other work
on the machine falls on both. TTFT is the first message with text (front end) or token ids (direct); ITL is the gap
between such messages (the front end may merge a token that ends mid-character into the next message, so its
message count per request is shown). The client runs on the same CPUs as the servers, so the CPU time of the server
processes per token and of the client are printed too. Prints markdown tables and PASS/FAIL lines against the
targets; run by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_ways import (  # noqa: E402
    LevelRun,
    Sample,
    WaysBench,
    by_prompt,
    cpu_model,
    main_stopping_on_signals,
    print_table,
    turns,
    versions,
)

from tritonrepo.frontend.app import load_repository_info, load_tokenizer  # noqa: E402

RUNTIME_MODEL = "tensorrt_llm"
WAYS = ("front end", "direct")
TOPICS = (
    "the sea", "a mountain village", "old clocks", "bread", "a lighthouse keeper", "rain in the city", "trains",
    "a lost key", "winter birds", "the moon", "a library at night", "copper", "a long walk", "tea", "paper boats",
    "an empty theatre", "rivers", "a red door", "snow", "the first day of school", "bridges", "a fox", "maps", "salt",
)  # fmt: skip
CPU_PARTS = ("front end process", "tritonserver + stubs", "benchmark client")
TARGET_RATE_RATIO = 0.90  # front end tokens/s >= 90% of direct at the highest concurrency
TARGET_TTFT_EXTRA_MS = 2.0  # front end TTFT p50 < direct + 2 ms at concurrency 1


# --- the deployment ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_repository(output: Path) -> Path:
    command = [sys.executable, "-m", "tritonrepo.cli.main", "-q", "build", "--model", "tiny-llama"]
    # stdout is only the built path, which we know; errors (one line and an exit code) go to stderr.
    subprocess.run([*command, "--output", str(output)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return output


class Deployment:
    """`tritonrepo serve` on free ports; stopped by its process id when the `with` block ends, however it ends."""

    def __init__(self, repository: Path, log: Path, runtime_threads: int = 0) -> None:
        self.repository, self.log, self.runtime_threads = repository, log, runtime_threads
        self.http, self.grpc, self.metrics, self.openai = (free_port() for _ in range(4))
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Deployment:
        command = [
            sys.executable, "-m", "tritonrepo.cli.main", "serve", str(self.repository),
            "--http-port", str(self.http), "--grpc-port", str(self.grpc),
            "--metrics-port", str(self.metrics), "--openai-port", str(self.openai),
            "--log-file", str(self.log.with_suffix(".tritonserver.log")),
        ]  # fmt: skip
        # Own session: a Ctrl-C in the terminal reaches only this script, which then stops serve in order.
        env = dict(os.environ)
        if self.runtime_threads:  # torch's intra-op threads in the runtime model (read when the stub starts)
            env["OMP_NUM_THREADS"] = str(self.runtime_threads)
        self.process = subprocess.Popen(
            command, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True, env=env
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # serve stops tritonserver and its stubs itself
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this script created: serve and its children
            self.process.wait()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.openai}"

    def wait_healthy(self, timeout: float = 600) -> float:
        import httpx

        started, deadline = time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"serve exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.25)
        raise SystemExit(f"serve not healthy after {timeout:.0f} s; see {self.log}")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far: the serve process (the front end runs in it) and tritonserver with its stubs."""
        serve = self.process.pid
        triton = 0.0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == serve:
                continue
            stat = _proc_stat(int(entry.name))
            # tritonserver runs in its own session under serve; the Python stubs are in its process group.
            if stat and (stat.ppid == serve or getattr(_proc_stat(stat.pgrp), "ppid", None) == serve):
                triton += stat.cpu_s
        own = _proc_stat(serve)
        return {"front end process": own.cpu_s if own else 0.0, "tritonserver + stubs": triton}


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    pgrp: int
    cpu_s: float  # user + system, all threads


def _proc_stat(pid: int) -> ProcStat | None:
    """From /proc/PID/stat; None once the process is gone."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the name may hold spaces
    except (OSError, IndexError):
        return None
    return ProcStat(int(rest[1]), int(rest[2]), (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK"))


# --- the prompts ---------------------------------------------------------------------------------------------------
def candidate_messages(count: int) -> list[list[dict[str, str]]]:
    return [
        [
            {
                "role": "user",
                "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}, part {i // len(TOPICS) + 1}.",
            }
        ]
        for i in range(count)
    ]


def prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    # As the front end does (serving.py _chat_prompt + _prepare): the template writes BOS, so no special tokens here;
    # preprocessing also skips BOS for a text that already starts with it, so the ensemble sees these same ids.
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


# --- the two ways of asking ----------------------------------------------------------------------------------------
class RawSSEClient:
    """The lightest streaming OpenAI client: HTTP/1.1 over asyncio streams, kept-alive connections (one per request in
    flight), chunked bodies split into SSE lines. httpx's AsyncClient adds ~3 ms of its own before the first line
    reaches the caller (measured against a bare socket), which would be charged to the front end."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def stream_lines(self, path: str, body: dict):
        payload = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()  # fmt: skip
        while True:
            reused = bool(self.idle)
            reader, writer = self.idle.pop() if reused else await asyncio.open_connection(self.host, self.port)
            writer.write(head + payload)
            status = (await reader.readline()).split(b" ", 2)
            if len(status) == 3 or not reused:
                break
            writer.close()  # the server closed it while idle (uvicorn's keep-alive timeout): open another
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if status[1] != b"200" or headers.get("transfer-encoding") != "chunked":
            raise RuntimeError(f"front end answered {status!r} {headers}")
        pending = b""
        while size := int((await reader.readline()).strip(), 16):
            pending += await reader.readexactly(size)
            await reader.readexactly(2)
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode()
        await reader.readexactly(2)  # the empty chunk's CRLF: the connection is ready for the next request
        self.idle.append((reader, writer))

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def _httpx_lines(client, path: str, body: dict):
    async with client.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"front end answered {response.status_code}: {(await response.aread())[:500]!r}")
        async for line in response.aiter_lines():
            yield line


async def via_frontend(client, model: str, messages, max_tokens: int, index: int) -> Sample:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sample = Sample(prompt=index)
    started = last = time.perf_counter()
    lines = client.stream_lines("/v1/chat/completions", body) if isinstance(client, RawSSEClient) else (
        _httpx_lines(client, "/v1/chat/completions", body))  # fmt: skip
    async for line in lines:
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            continue  # read on to the end of the body, so the connection can be reused
        now = time.perf_counter()  # arrival, before parsing
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            sample.tokens = chunk["usage"]["completion_tokens"]
            sample.prompt_tokens = chunk["usage"]["prompt_tokens"]
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            if sample.messages:
                sample.gaps.append(now - last)
            else:
                sample.ttft = now - started
            sample.messages += 1
            last = now
    sample.end = time.perf_counter() - started
    return sample


def direct_inputs(ids: list[int], max_tokens: int, end_id: int, pad_id: int) -> list:
    from tritonclient.grpc.aio import InferInput

    values = {
        "input_ids": np.array([ids], dtype=np.int32),
        "input_lengths": np.array([[len(ids)]], dtype=np.int32),
        "request_output_len": np.array([[max_tokens]], dtype=np.int32),
        # What preprocessing adds on the front end's path: the tokenizer's end and pad ids.
        "end_id": np.array([[end_id]], dtype=np.int32),
        "pad_id": np.array([[pad_id]], dtype=np.int32),
        "runtime_top_k": np.array([[1]], dtype=np.int32),  # greedy, as temperature 0 becomes in the front end
        "streaming": np.array([[True]]),
        "exclude_input_in_output": np.array([[True]]),
    }
    tensors = []
    for name, value in values.items():
        tensor = InferInput(name, list(value.shape), "BOOL" if value.dtype == bool else "INT32")
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors


async def via_direct(client, inputs: list, index: int, prompt_tokens: int) -> Sample:
    async def one_request():
        yield {"model_name": RUNTIME_MODEL, "inputs": inputs, "request_id": uuid.uuid4().hex}

    sample = Sample(prompt=index, prompt_tokens=prompt_tokens)
    started = last = time.perf_counter()
    async for result, error in client.stream_infer(one_request()):
        if error is not None:
            raise RuntimeError(f"tensorrt_llm failed: {error}")
        now = time.perf_counter()
        response = result.get_response()
        if any(output.name == "output_ids" for output in response.outputs):
            try:
                count = int(result.as_numpy("output_ids").size)
            except ValueError as error:  # a declared shape without its data: the server is broken, not slow
                raise RuntimeError(f"prompt {index}: tensorrt_llm sent a malformed output_ids ({error})") from None
            if count:
                if sample.messages:
                    sample.gaps.append(now - last)
                else:
                    sample.ttft = now - started
                sample.messages += 1
                sample.tokens += count
                last = now
        final = response.parameters.get("triton_final_response")
        if final is not None and final.bool_param:
            break
    sample.end = time.perf_counter() - started
    return sample


class Bench(WaysBench):
    """Both clients, the prompts in both forms, and the deployment to read CPU time from."""

    ways = WAYS
    prompt_way = "direct"
    client_cpu = "benchmark client"

    def __init__(self, deployment: Deployment, tokenizer, model: str, max_tokens: int, client: str = "raw") -> None:
        import httpx
        from tritonclient.grpc.aio import InferenceServerClient

        super().__init__(max_tokens)
        self.deployment, self.tokenizer, self.model = deployment, tokenizer, model
        # One connection per request in flight, kept alive across levels (opened during warm-up).
        if client == "raw":
            self.http = RawSSEClient("127.0.0.1", deployment.openai)
        else:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            self.http = httpx.AsyncClient(base_url=deployment.base_url, timeout=600, limits=limits)
        self.grpc = InferenceServerClient(f"127.0.0.1:{deployment.grpc}")  # one channel, as the front end uses
        self.end_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_id
        self.ids: list[list[int]] = []
        self.candidate_ids: list[list[int]] = []

    async def close(self) -> None:
        await self.http.aclose()
        await self.grpc.close()

    def one(self, way: str, index: int, max_tokens: int | None = None):
        max_tokens = max_tokens or self.max_tokens
        if way == "front end":
            return via_frontend(self.http, self.model, self.messages[index], max_tokens, index)
        inputs = direct_inputs(self.ids[index], max_tokens, self.end_id, self.pad_id)
        return via_direct(self.grpc, inputs, index, len(self.ids[index]))

    def use_prompts(self, messages: list, chosen: list[int] | None = None) -> None:
        """The prompts in both forms: chat messages for the front end, token ids for the direct way."""
        if chosen is None:
            self.candidate_ids = [prompt_ids(self.tokenizer, m) for m in messages]
        super().use_prompts(messages, chosen)
        self.ids = self.candidate_ids if chosen is None else [self.candidate_ids[i] for i in chosen]

    def cpu_seconds(self, way: str) -> dict[str, float]:
        return self.deployment.cpu_seconds()  # both ways run on the same deployment


# --- numbers -------------------------------------------------------------------------------------------------------
def print_level(concurrency: int, runs: dict[str, LevelRun], rounds: int, load: tuple[float, float]) -> dict[str, dict]:
    stats = print_table(concurrency, runs, rounds, load, cpu_parts=CPU_PARTS)
    ratio = stats["front end"]["tokens_per_s"] / stats["direct"]["tokens_per_s"]
    print(f"\nfront end / direct tokens/s: **{ratio:.3f}**")
    counts = {way: by_prompt(run, "tokens") for way, run in runs.items()}
    same = sum(counts["front end"][p] == counts["direct"].get(p) for p in counts["front end"])
    print(f"prompts with the same token counts both ways: {same} of {len(counts['front end'])}")
    return stats


VERSIONS = ("tritonrepo", "tritonclient", "nvidia-pytriton", "httpx", "fastapi", "uvicorn", "grpcio", "transformers",
            "torch")  # fmt: skip


# --- main ----------------------------------------------------------------------------------------------------------
async def measure(bench: Bench, args, results: dict) -> None:
    server = await bench.grpc.get_server_metadata()
    print(f"tritonserver {server.version}")
    results["versions"] += f", tritonserver {server.version}"
    tried = await bench.choose_prompts(candidate_messages(args.prompts * 4), args.prompts)
    print(f"prompts: {len(bench.messages)} chat prompts chosen from {tried} tried (greedy output reaches max_tokens)")
    # Warm-up, untimed: also opens the gRPC channel and makes the front end read the model config.
    await bench.warm_up(max(args.concurrency))
    for concurrency in args.concurrency:
        load_before = os.getloadavg()[0]
        requests = args.requests or max(32, 2 * concurrency)
        rounds = turns(requests, concurrency, args.rounds)
        runs = await bench.run_turns(concurrency, requests, rounds)
        stats = print_level(concurrency, runs, rounds, (load_before, os.getloadavg()[0]))
        results["levels"].append(
            {
                "concurrency": concurrency,
                "summary": stats,
                "samples": {w: [asdict(s) for s in r.samples] for w, r in runs.items()},
            }
        )
    # usage.prompt_tokens is the front end's own count of the ids it sends; equal to ours means the same prompt ids.
    usage = {s["prompt"]: s["prompt_tokens"] for level in results["levels"] for s in level["samples"]["front end"]}
    same = sum(usage[i] == len(bench.ids[i]) for i in usage)
    lengths = sorted(len(ids) for ids in bench.ids)
    print(f"\nprompt tokens ({lengths[0]}-{lengths[-1]}) equal to the front end's usage count: ", end="")
    print(f"{same} of {len(usage)} prompts")


def verdicts(results: dict) -> None:
    levels = {level["concurrency"]: level["summary"] for level in results["levels"]}
    top = max(levels)
    ratio = levels[top]["front end"]["tokens_per_s"] / levels[top]["direct"]["tokens_per_s"]
    note = "" if top == 64 else f" (target is set at 64; highest level run is {top})"
    print(
        f"\n{'PASS' if ratio >= TARGET_RATE_RATIO else 'FAIL'}: front end tokens/s at concurrency {top} is "
        f"{ratio:.1%} of direct (target >= {TARGET_RATE_RATIO:.0%}){note}"
    )
    if 1 in levels:
        ours, direct = levels[1]["front end"]["ttft_ms"][0], levels[1]["direct"]["ttft_ms"][0]
        print(
            f"{'PASS' if ours < direct + TARGET_TTFT_EXTRA_MS else 'FAIL'}: TTFT p50 at concurrency 1: front end "
            f"{ours:.1f} ms, direct {direct:.1f} ms, difference {ours - direct:+.1f} ms "
            f"(target < +{TARGET_TTFT_EXTRA_MS:.0f} ms)"
        )
    else:
        print("SKIP: TTFT target is at concurrency 1, which was not run")


def main() -> None:
    main_stopping_on_signals(lambda: run(parse_args()), "`tritonrepo serve` was stopped")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="an existing tiny-llama repository [default: build one]")
    parser.add_argument("--concurrency", default="1,16,64", help="requests in flight, comma separated")
    parser.add_argument(
        "--requests", type=int, default=0, help="requests per level and way [default: 2 x concurrency, at least 32]"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="alternating turns per level (A B, B A, ...) [default: turns of 2 x concurrency requests, at least 4, "
        "and at least 2 turns]",
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=16, help="distinct prompts, sent in turn")
    parser.add_argument("--json", type=Path, help="write every per-request number here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, built repository)")
    parser.add_argument(
        "--client", choices=("raw", "httpx"), default="raw",
        help="the front end's client: a bare asyncio HTTP/1.1 reader, or httpx.AsyncClient (adds its own ~3 ms)",
    )  # fmt: skip
    parser.add_argument(
        "--runtime-threads", type=int, default=1,
        help="torch threads of the runtime model (OMP_NUM_THREADS); 0: torch's default, one per core, whose spinning "
        "threads then take the CPU the front end, Triton and the client need on a small machine [default: 1]",
    )  # fmt: skip
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    return args


def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="frontend-bench-"))
    os.environ.setdefault("TRITONREPO_CACHE", str(work / "cache"))  # serve's private backend folder goes here
    os.environ.setdefault("TRITONREPO_QUIET", "1")
    try:
        repository = args.repository.resolve() if args.repository else build_repository(work / "tiny-llama")
        info = load_repository_info(repository)
        tokenizer = load_tokenizer(info.tokenizer_dir)
        with Deployment(repository, work / "serve.log", args.runtime_threads) as deployment:
            print(f"serve healthy after {deployment.wait_healthy():.1f} s ({repository})", file=sys.stderr)
            print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), {cpu_model()}")
            threads = args.runtime_threads or "torch's default"
            print(f"runtime model: {threads} torch thread(s) (--runtime-threads); both ways use the same runtime")
            print(f"versions: Python {platform.python_version()}, {versions(VERSIONS)}")
            first = "a bare asyncio HTTP/1.1 client" if args.client == "raw" else "httpx.AsyncClient"
            print(f"clients: (a) {first} reading SSE lines, (b) tritonclient.grpc.aio stream_infer")
            print(
                f"max_tokens {args.max_tokens}, greedy. CPU: front end process = `tritonrepo serve` (uvicorn runs in "
                "it); tritonserver = it and its Python stubs (pre/postprocessing, runtime); client = this script"
            )
            results = {
                "args": {k: str(v) for k, v in vars(args).items()},
                "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version()},
                "versions": versions(VERSIONS),
                "levels": [],
            }
            asyncio.run(run_all(deployment, tokenizer, info.models.alias or "ensemble", args, results))
        verdicts(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
            print(f"\nraw numbers: {args.json}")
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


async def run_all(deployment: Deployment, tokenizer, model: str, args, results: dict) -> None:
    bench = Bench(deployment, tokenizer, model, args.max_tokens, args.client)
    try:
        await measure(bench, args, results)
    finally:
        await bench.close()


if __name__ == "__main__":
    main()
