"""The portable runtime's engine on this machine's device: greedy parity with transformers, then decode throughput.

    python benchmarks/runtime_decode.py [--shape tiny|1b] [--device auto|cpu|cuda] [--concurrency 1,8,32] [--tokens 64]

`tiny` is the embedded tiny-llama; `1b` is a random-weight Llama with Llama-3.2-1B's layer shapes (16 layers, hidden
2048, 32/8 heads) and the tiny tokenizer, made locally (no Hub). Prints a markdown table; run by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "all_models" / "inflight_batcher_llm" / "tensorrt_llm" / "1"))

from hf_engine import Engine, SamplingParams, Sequence  # noqa: E402

from tritonrepo.source.tiny_llama import create_tiny_llama  # noqa: E402

PROMPT_IDS = [0, 17, 230, 401, 77, 512, 96]


def make_checkpoint(shape: str, root: Path) -> Path:
    tiny = create_tiny_llama(root / "tiny-llama")
    if shape == "tiny":
        return tiny
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((tiny / "config.json").read_text())
    config.update(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8
    )
    config.pop("dtype", None)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config))
    target = root / "llama-1b-shape"
    model.save_pretrained(target)
    for name in ("generation_config.json",):
        (target / name).write_text((tiny / name).read_text())
    return target


def run_batch(engine: Engine, count: int, tokens: int) -> tuple[float, list[float], list[float]]:
    """Submit `count` sequences at once; return wall seconds, per-request latency, per-request time to first token."""
    all_done = threading.Event()
    remaining = [count]  # callbacks run on the engine thread only, so a plain counter is safe
    latency, first = [0.0] * count, [0.0] * count
    started = time.perf_counter()

    def callbacks(index: int):
        def on_step(sequence, result):
            if not first[index]:
                first[index] = time.perf_counter() - started
            if result.finished:
                latency[index] = time.perf_counter() - started
                remaining[0] -= 1
                if not remaining[0]:
                    all_done.set()

        return on_step

    for index in range(count):
        params = SamplingParams(max_new_tokens=tokens, end_id=-1)
        engine.submit(Sequence(PROMPT_IDS, params, on_step=callbacks(index), on_error=lambda s, e: print(e)))
    all_done.wait()
    return time.perf_counter() - started, latency, first


def greedy_parity(engine: Engine, tokens: int) -> bool:
    import torch

    result: list[int] = []
    finished = threading.Event()

    def on_step(sequence, step):
        result.extend(step.new_tokens)
        if step.finished:
            finished.set()

    engine.submit(
        Sequence(PROMPT_IDS, SamplingParams(max_new_tokens=tokens, end_id=-1), on_step=on_step, on_error=print)
    )
    finished.wait(600)
    with torch.inference_mode():
        ids = torch.tensor([PROMPT_IDS], device=engine.device)
        mask = torch.ones_like(ids)  # explicit: token 0 is BOS here, not padding
        out = engine.model.generate(ids, attention_mask=mask, max_new_tokens=tokens, do_sample=False, pad_token_id=-1)
    return out[0, len(PROMPT_IDS) :].tolist() == result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["tiny", "1b"], default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = make_checkpoint(args.shape, Path(tmp))
        levels = [int(c) for c in args.concurrency.split(",")]
        engine = Engine(checkpoint, device=args.device, max_num_sequences=max(levels))
        engine.start()
        try:
            device = torch.cuda.get_device_name(0) if engine.device.type == "cuda" else "CPU"
            print(
                f"shape {args.shape}, device {engine.device} ({device}), dtype {engine.dtype}, torch {torch.__version__}"
            )
            print(
                f"greedy output equals transformers generate() on the same device and dtype: {greedy_parity(engine, 32)}"
            )
            # On CUDA the first decode at each new sequence length is ~20x slower (per-shape kernel warm-up on the
            # engine thread); warm every length measured below so the table shows the steady state.
            run_batch(engine, max(levels), args.tokens)
            print("\n| concurrency | tokens/s (all requests) | p50 latency | p50 time to first token |")
            print("|---|---|---|---|")
            for count in levels:
                wall, latency, first = run_batch(engine, count, args.tokens)
                latency.sort()
                first.sort()
                rate = count * args.tokens / wall
                print(
                    f"| {count} | {rate:,.0f} | {latency[count // 2] * 1000:,.0f} ms | {first[count // 2] * 1000:,.0f} ms |"
                )
        finally:
            engine.stop()


if __name__ == "__main__":
    main()
