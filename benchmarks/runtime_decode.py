"""The portable runtime's engine against transformers' own batched decoders, in one run on this machine's device.

    PYTHONPATH=. python benchmarks/runtime_decode.py [--shape tiny|1b|8b] [--device auto|cpu|cuda]
        [--dtype auto|float32|bfloat16|float16] [--concurrency 1,8,32] [--prompt-len 128] [--tokens 128]
        [--rounds 3] [--reference static,cb|none] [--ttft-under-load] [--checkpoint-dir DIR] [--json FILE]

`tiny` is the embedded tiny-llama; `1b` and `8b` are random-weight Llamas with Llama-3.2-1B's and Llama-3.1-8B's layer
shapes and tiny-llama's tokenizer (930 tokens), made in memory on the device in the chosen dtype (no Hub) and handed to
the engine as they are; `--checkpoint-dir` saves them there as safetensors once and loads that folder, as serving
does.

For each concurrency c: the engine decodes c requests submitted at once (prompts of exactly --prompt-len tokens,
different per request, end token disabled so each runs to --tokens), after a warm-up batch of the same shape; then
the reference, one batched static-cache `generate()` of the same prompts on the engine's own model object, timed after
warm-up calls repeat until two agree within 10% (on CUDA transformers compiles that decode step on first use); and,
with `--reference cb`, transformers' continuous batching manager on the same model. Also: greedy parity with
`generate()` (one request, then 4 prompts of different lengths submitted at different moments), TTFT of a new request
on an idle engine and while 8 others decode, peak memory, and PASS/FAIL lines for issue 13's targets. Run by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "all_models" / "inflight_batcher_llm" / "tensorrt_llm" / "1"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import decode_support as support  # noqa: E402
from hf_engine import Engine, SamplingParams, Sequence  # noqa: E402

from tritonrepo.source.tiny_llama import create_tiny_llama  # noqa: E402

GiB = 1 << 30
LOAD_REQUESTS = 8  # issue 13: TTFT of a new request "while 8 others decode"


class Request:
    def __init__(self, prompt: list[int], tokens: int) -> None:
        self.prompt, self.tokens = prompt, tokens
        self.submitted = time.perf_counter()
        self.arrivals: list[float] = []  # seconds after `submitted`, one per new token
        self.output: list[int] = []
        self.finished_at: float | None = None
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.others_decoding_at_first_token: int | None = None


class Requests:
    """Requests submitted to the engine, and when each new token arrived (the callbacks run on the engine thread)."""

    def __init__(self, engine: Engine, timeout: float) -> None:
        self.engine, self.timeout = engine, timeout
        self.items: list[Request] = []
        self.changed = threading.Condition()

    def submit(self, prompt: list[int], tokens: int) -> Request:
        request = Request(prompt, tokens)

        def on_step(sequence, step) -> None:
            now = time.perf_counter()
            with self.changed:
                if step.new_tokens and not request.arrivals:
                    request.others_decoding_at_first_token = sum(
                        1 for other in self.items if other is not request and other.finished_at is None
                    )
                request.arrivals.extend([now - request.submitted] * len(step.new_tokens))
                request.output.extend(step.new_tokens)
                if step.finished:
                    request.finished_at, request.finish_reason = now, step.finish_reason
                self.changed.notify_all()

        def on_error(sequence, error: BaseException) -> None:
            with self.changed:
                request.error, request.finished_at = error, time.perf_counter()
                self.changed.notify_all()

        with self.changed:
            self.items.append(request)
        params = SamplingParams(max_new_tokens=tokens, end_id=-1)  # no end token: every request runs to `tokens`
        self.engine.submit(
            Sequence(list(prompt), params, on_step=on_step, on_error=on_error, is_cancelled=lambda: request.cancelled)
        )
        return request

    def wait(self, predicate, what: str) -> None:
        with self.changed:
            if self.changed.wait_for(predicate, self.timeout):
                return
            for request in self.items:
                request.cancelled = True
        raise TimeoutError(f"the engine did not finish {what} within {self.timeout:.0f} s")

    def wait_all(self, what: str) -> None:
        self.wait(lambda: all(request.finished_at is not None for request in self.items), what)
        for request in self.items:
            if request.error is not None:
                raise RuntimeError(f"the engine failed a request ({what}): {request.error!r}") from request.error
            if len(request.output) != request.tokens:
                raise RuntimeError(
                    f"a request produced {len(request.output)} tokens, not {request.tokens} "
                    f"(finish reason {request.finish_reason}, {what})"
                )


def engine_batch(engine: Engine, prompts: list[list[int]], tokens: int, timeout: float) -> support.Batch:
    """Submit every prompt at once; wall time runs from the first submit to the last finish."""
    requests = Requests(engine, timeout)
    for prompt in prompts:
        requests.submit(prompt, tokens)
    requests.wait_all(f"{len(prompts)} requests of {tokens} tokens")
    started = requests.items[0].submitted
    wall = max(request.finished_at for request in requests.items) - started
    return support.Batch(wall, [r.arrivals for r in requests.items], [r.output for r in requests.items])


# --- parity ----------------------------------------------------------------------------------------------------------
def parity_single(engine: Engine, prompt: list[int], tokens: int, timeout: float) -> dict:
    got = engine_batch(engine, [prompt], tokens, timeout).outputs[0]
    expected = support.generate_greedy(engine.model, prompt, tokens)
    return {
        "prompt_len": len(prompt),
        "equal": got == expected,
        "first_difference": support.first_difference(got, expected),
    }


def parity_mixed(engine: Engine, prompts: list[list[int]], tokens: int, timeout: float) -> list[dict]:
    """Each prompt joins while the ones before it are decoding (after the previous one's first quarter of tokens)."""
    requests = Requests(engine, timeout)
    step = max(1, tokens // 4)
    for prompt in prompts:
        if requests.items:
            previous = requests.items[-1]
            requests.wait(lambda p=previous: len(p.arrivals) >= step or p.finished_at is not None, "a parity request")
        requests.submit(prompt, tokens)
    requests.wait_all("the mixed parity batch")
    report = []
    for request in requests.items:
        expected = support.generate_greedy(engine.model, request.prompt, tokens)
        report.append(
            {
                "prompt_len": len(request.prompt),
                "others_decoding_at_first_token": request.others_decoding_at_first_token,
                "equal": request.output == expected,
                "first_difference": support.first_difference(request.output, expected),
            }
        )
    return report


# --- TTFT under load -------------------------------------------------------------------------------------------------
def ttft_under_load(engine: Engine, make, prompt_len: int, load_tokens: int, repeats: int, timeout: float) -> dict:
    """TTFT of a probe on an idle engine, then of a probe submitted once 8 others have each produced 2 tokens."""
    probe_tokens = 4
    idle, loaded, overlapped = [], [], []
    for repeat in range(repeats):
        requests = Requests(engine, timeout)
        probe = requests.submit(make(prompt_len, f"idle-probe:{repeat}"), probe_tokens)
        requests.wait_all("the idle probe")
        idle.append(probe.arrivals[0])
    for repeat in range(repeats):
        requests = Requests(engine, timeout)
        load = [requests.submit(make(prompt_len, f"load:{repeat}:{i}"), load_tokens) for i in range(LOAD_REQUESTS)]
        requests.wait(
            lambda load=load: all(len(r.arrivals) >= 2 or r.finished_at for r in load), "the load's first tokens"
        )
        probe = requests.submit(make(prompt_len, f"loaded-probe:{repeat}"), probe_tokens)
        requests.wait_all("the loaded probe and its load")
        loaded.append(probe.arrivals[0])
        overlapped.append(probe.others_decoding_at_first_token)
    idle_p50, loaded_p50 = statistics.median(idle), statistics.median(loaded)
    return {
        "idle_s": idle,
        "loaded_s": loaded,
        "others_decoding_at_probe_first_token": overlapped,
        "idle_p50": idle_p50,
        "loaded_p50": loaded_p50,
        "ratio": loaded_p50 / idle_p50,
    }


# --- the run ---------------------------------------------------------------------------------------------------------
def prepare_checkpoint(args, device: str, dtype: str, scratch: Path) -> tuple[Path, object, dict]:
    """tiny-llama (always made: its tokenizer gives the prompts), and the chosen shape's model: tiny's folder, a
    model object made in memory, or (with --checkpoint-dir) a checkpoint folder built there once and reused."""
    tiny = create_tiny_llama(scratch / "tiny-llama")
    if args.shape == "tiny":
        return tiny, tiny, {}
    import torch

    config = support.shape_config(tiny, args.shape)
    marker = {"shape": args.shape, "dtype": dtype, "config": config}
    target = Path(args.checkpoint_dir) if args.checkpoint_dir else scratch / f"llama-{args.shape}-shape"
    if support.checkpoint_reusable(target, marker):
        print(f"reusing the {args.shape} checkpoint in {target}", flush=True)
        return tiny, target, {"reused": str(target)}
    started = time.perf_counter()
    model = support.build_model(config, device, dtype)
    built = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())
    if not args.checkpoint_dir:  # the engine takes the model as it is: no gigabytes written and read back
        print(f"{args.shape} model: {params / 1e9:.2f} B parameters, random init on {device} in {dtype} {built:.1f} s")
        return tiny, model, {"parameters": params, "init_s": built, "in_memory": True}
    started = time.perf_counter()
    support.save_checkpoint(model, tiny, target, marker)
    saved = time.perf_counter() - started
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    size = support.folder_bytes(target)
    print(
        f"{args.shape} checkpoint: {params / 1e9:.2f} B parameters, random init on {device} in {dtype} {built:.1f} s, "
        f"saved {size / GiB:.1f} GiB of safetensors to {target} in {saved:.1f} s",
        flush=True,
    )
    return tiny, target, {"parameters": params, "init_s": built, "save_s": saved, "bytes": size}


class Memory:
    """Peak torch.cuda allocation per phase (nothing on CPU)."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = device == "cuda"
        self.torch = torch
        self.peaks: dict[str, float] = {}

    def start(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def stop(self, phase: str) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            peak = self.torch.cuda.max_memory_allocated()
            self.peaks[phase] = max(self.peaks.get(phase, 0), peak)

    def allocated(self) -> float | None:
        return self.torch.cuda.memory_allocated() if self.cuda else None


def measure_level(engine, make, args, count: int, references: list[str], memory: Memory) -> dict:
    prompts = [make(args.prompt_len, f"batch:{count}:{index}") for index in range(count)]
    row: dict = {"concurrency": count}
    memory.start()
    engine_batch(engine, prompts, args.tokens, args.timeout)  # warm-up: this batch size and these lengths
    batches = [engine_batch(engine, prompts, args.tokens, args.timeout) for _ in range(args.rounds)]
    memory.stop("engine")
    row["engine"] = support.summarise(batches)
    rounds = ", ".join(f"{rate:,.0f}" for rate in row["engine"]["rates"])
    print(f"c={count}: engine {row['engine']['rate']:,.0f} tok/s (rounds: {rounds})", flush=True)
    for name, measure in (("static", support.static_reference), ("cb", support.cb_reference)):
        if name not in references:
            continue
        memory.start()
        try:
            row[name] = measure(engine.model, prompts, args.tokens, args.rounds)
        except Exception as error:  # a reference that cannot run on this version/device is reported, not fatal
            row[name] = {"error": f"{type(error).__name__}: {error}"}
            print(f"c={count}: {name} reference failed: {row[name]['error']}", flush=True)
            continue
        finally:
            memory.stop(name)
        warm = ", ".join(f"{s:.2f}" for s in row[name]["warmup_s"])
        print(f"c={count}: {name} {row[name]['rate']:,.0f} tok/s (warm-up calls: {warm} s)", flush=True)
        if name == "cb":
            expected = [support.generate_greedy(engine.model, p, args.tokens) for p in prompts[:2]]
            row["cb"]["greedy_equal_first_two"] = row["cb"].pop("outputs")[:2] == expected
    return row


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f} ms"


def rate_cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    return "failed" if "error" in entry else f"{entry['rate']:,.0f}"


def print_table(rows: list[dict]) -> None:
    print("\n| concurrency | engine tok/s | reference tok/s | engine/reference | cb tok/s | TTFT p50 | ITL p50 |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        engine, static = row["engine"], row.get("static")
        ratio = f"{engine['rate'] / static['rate']:.2f}" if static and "error" not in static else "-"
        print(
            f"| {row['concurrency']} | {engine['rate']:,.0f} | {rate_cell(static)} | {ratio} | {rate_cell(row.get('cb'))}"
            f" | {ms(engine['ttft_p50'])} | {ms(engine['itl_p50'])} |"
        )
    for row in rows:
        cb = row.get("cb")
        if cb and "error" not in cb:
            print(
                f"cb at {row['concurrency']}: TTFT p50 {ms(cb['ttft_p50'])}, ITL p50 {ms(cb['itl_p50'])}, "
                f"greedy == generate() for the first two: {cb['greedy_equal_first_two']}"
            )


def targets(args, device: str, rows: list[dict], load: dict | None) -> list[tuple[str, bool]]:
    """Issue 13's targets that apply to this run's shape and device."""
    by_count = {row["concurrency"]: row for row in rows}
    checks = []
    if args.shape == "8b" and device == "cuda":
        if 32 in by_count:
            row = by_count[32]
            checks.append(
                (f"8b, 32 in flight: engine {row['engine']['rate']:,.0f} tok/s >= 3,000", row["engine"]["rate"] >= 3000)
            )
            static = row.get("static")
            if static and "error" not in static:
                share = row["engine"]["rate"] / static["rate"]
                checks.append((f"8b, 32 in flight: engine/reference {share:.2f} >= 0.75", share >= 0.75))
        if 1 in by_count:
            rate = by_count[1]["engine"]["rate"]
            checks.append((f"8b, 1 in flight: engine {rate:,.0f} tok/s >= 150", rate >= 150))
    if args.shape == "tiny" and device == "cpu":
        if 1 in by_count and 8 in by_count:
            one, eight = by_count[1]["engine"]["rate"], by_count[8]["engine"]["rate"]
            checks.append(
                (f"tiny, cpu: rate(8) {eight:,.0f} >= 3 x rate(1) {one:,.0f} ({eight / one:.2f}x)", eight >= 3 * one)
            )
        if load is not None:
            checks.append(
                (
                    f"tiny, cpu: TTFT while 8 decode {ms(load['loaded_p50'])} <= 2 x idle {ms(load['idle_p50'])} "
                    f"({load['ratio']:.2f}x)",
                    load["ratio"] <= 2,
                )
            )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(support.SHAPES), default="tiny")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated requests in flight")
    parser.add_argument("--prompt-len", type=int, default=128, help="tokens per prompt (all prompts this long)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per request (end token disabled)")
    parser.add_argument("--rounds", type=int, default=3, help="timed batches per level (median reported)")
    parser.add_argument("--reference", default="static", help="static, cb, both (static,cb) or none")
    parser.add_argument(
        "--ttft-under-load",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TTFT of a new request, idle vs while 8 decode (default: on for tiny on cpu)",
    )
    parser.add_argument("--load-tokens", type=int, default=0, help="tokens of each of the 8 (default 4 x --tokens)")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the layers' norms and MLPs (default: on CUDA only, as the runtime does)",
    )
    parser.add_argument("--ttft-repeats", type=int, default=5)
    parser.add_argument("--checkpoint-dir", help="build the 1b/8b checkpoint here, or reuse the one already here")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one engine batch may take")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="torch threads on the CPU (default 1). The engine and the references run on different threads of this "
        "process, and PyTorch's OpenMP runs small operations many times slower once two threads use it with more "
        "than one thread each; one thread is also what suits a small model on a small machine.",
    )
    args = parser.parse_args()
    references = [name for name in args.reference.split(",") if name and name != "none"]
    unknown = set(references) - {"static", "cb"}
    if unknown or args.prompt_len < 1 or args.tokens < 1 or args.rounds < 1:
        parser.error(
            f"bad --reference {sorted(unknown)}" if unknown else "--prompt-len, --tokens, --rounds must be >= 1"
        )
    try:
        levels = [int(c) for c in args.concurrency.split(",")]
    except ValueError:
        parser.error(f"--concurrency takes comma-separated integers, got {args.concurrency!r}")
    load_tokens = args.load_tokens or 4 * args.tokens

    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # generate()'s advice about the checkpoint's sampling defaults
    device = support.resolve_device(args.device)
    dtype = support.resolve_dtype(args.dtype, device)
    if device == "cpu" and args.cpu_threads > 0:
        torch.set_num_threads(args.cpu_threads)
    with_load = args.ttft_under_load if args.ttft_under_load is not None else (args.shape == "tiny" and device == "cpu")
    report: dict = {"args": vars(args), "device": device, "dtype": dtype}
    run_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runtime-decode-") as scratch:
        tiny, checkpoint, report["checkpoint"] = prepare_checkpoint(args, device, dtype, Path(scratch))
        memory = Memory(device)
        memory.start()
        max_seq_len = args.prompt_len + max(args.tokens, load_tokens if with_load else 0) + 8
        started = time.perf_counter()
        engine = Engine(
            checkpoint,
            device=device,
            dtype=dtype,
            max_seq_len=max_seq_len,
            max_num_sequences=max([*levels, 4, LOAD_REQUESTS + 1 if with_load else 1]),
            compile_layers=args.compile,
        )
        engine.start()
        report["engine_load_s"] = time.perf_counter() - started
        memory.stop("engine start")
        report["allocated_after_engine_start"] = memory.allocated()
        prompts = support.Prompts(tiny, int(engine.model.config.vocab_size))
        try:
            name = torch.cuda.get_device_name(0) if engine.device.type == "cuda" else "CPU"
            print(
                f"shape {args.shape}, device {engine.device} ({name}), dtype {engine.dtype}, torch {torch.__version__} "
                f"({torch.get_num_threads()} CPU thread(s)), "
                f"transformers {transformers.__version__}; prompts {args.prompt_len} tokens, {args.tokens} new tokens "
                f"per request, {args.rounds} rounds; engine loaded in {report['engine_load_s']:.1f} s "
                f"(max_seq_len {max_seq_len}); {engine.compile_note}; {engine.kv_cache_note}",
                flush=True,
            )
            report["compile_note"], report["kv_cache_note"] = engine.compile_note, engine.kv_cache_note
            single = parity_single(engine, prompts.make(args.prompt_len, "parity:0"), args.tokens, args.timeout)
            lengths = sorted(
                {
                    args.prompt_len,
                    max(1, args.prompt_len // 4),
                    max(1, args.prompt_len // 2) + 1,
                    max(1, 3 * args.prompt_len // 4),
                },
                reverse=True,
            )
            mixed = parity_mixed(
                engine, [prompts.make(n, f"parity-mixed:{n}") for n in lengths], args.tokens, args.timeout
            )
            report["parity"] = {"single": single, "mixed": mixed}
            print(f"greedy output equals transformers generate() on the same device and dtype: {single['equal']}")
            print(
                "mixed batch (prompts of "
                + ", ".join(str(m["prompt_len"]) for m in mixed)
                + " tokens, each joining while "
                + "/".join(str(m["others_decoding_at_first_token"]) for m in mixed)
                + " others decoded), each equal to generate() alone: "
                + ", ".join(
                    "yes" if m["equal"] else f"no (first difference at token {m['first_difference']})" for m in mixed
                ),
                flush=True,
            )
            rows = [measure_level(engine, prompts.make, args, count, references, memory) for count in levels]
            report["levels"] = rows
            load = None
            if with_load:
                memory.start()
                load = ttft_under_load(
                    engine, prompts.make, args.prompt_len, load_tokens, args.ttft_repeats, args.timeout
                )
                memory.stop("engine")
                report["ttft_under_load"] = load
            kv_bytes, kv_slots = getattr(engine, "kv_cache_bytes", None), getattr(engine, "kv_slots", None)
        finally:
            engine.stop()

    print_table(rows)
    if "static" in references:
        print(
            "reference: one batched static-cache generate() of the same prompts on the engine's model object, timed "
            "after warm-up calls until two agree within 10%"
            + (" (on cuda transformers torch.compiles its decode step in the first call)" if device == "cuda" else "")
        )
    if load is not None:
        short = sum(1 for n in load["others_decoding_at_probe_first_token"] if (n or 0) < LOAD_REQUESTS)
        print(
            f"\nTTFT of a new request: idle {ms(load['idle_p50'])}, while {LOAD_REQUESTS} others decode "
            f"{ms(load['loaded_p50'])} ({load['ratio']:.2f}x; medians of {args.ttft_repeats}, probe of "
            f"{args.prompt_len} tokens, the 8 decode {load_tokens} tokens each)"
            + (f"; in {short} repeats some of the 8 had finished first: raise --load-tokens" if short else "")
        )
    report["memory"] = {"peaks": memory.peaks, "kv_cache_bytes": kv_bytes, "kv_slots": kv_slots}
    parts = [f"{phase} {peak / GiB:.1f} GiB" for phase, peak in memory.peaks.items()]
    if parts:
        after_start = report["allocated_after_engine_start"] / GiB
        print(f"\npeak torch.cuda.max_memory_allocated by phase: {', '.join(parts)}")
        print(
            f"allocated right after the engine started (weights, and a KV cache made at start): {after_start:.1f} GiB"
        )
    if kv_bytes is not None:
        print(f"engine.kv_cache_bytes: {kv_bytes / GiB:.2f} GiB")
    if kv_slots is not None:
        print(f"engine.kv_slots: {kv_slots}")
    checks = targets(args, device, rows, load)
    report["targets"] = [{"check": text, "pass": ok} for text, ok in checks]
    if checks:
        print()
        if args.shape == "8b" and (args.prompt_len, args.tokens, dtype) != (128, 128, "bfloat16"):
            print(
                "(the 8b targets are stated for bf16, 128-token prompts and 128 new tokens; this run: "
                f"{dtype}, {args.prompt_len}, {args.tokens})"
            )
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'} {text}")
    report["elapsed_s"] = time.perf_counter() - run_started
    print(f"\nthe whole run took {report['elapsed_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
