"""Where one decode step of the portable runtime spends its time on a GPU (a diagnostic, run by hand).

    python benchmarks/decode_profile.py --shape 8b --batch 32

Prints: the device's memory bandwidth on the model's largest weight (the floor of a decode step), the captured CUDA
graph's replay time per batch size, the engine's whole decode step (graph, token choice, bookkeeping) driven
directly, and the kernels that take the GPU's time in the step (torch.profiler).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "all_models/inflight_batcher_llm/tensorrt_llm/1"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import decode_support as support  # noqa: E402
from compiled_parts import compile_parts  # noqa: E402
from hf_engine import Engine, SamplingParams, Sequence, _DecodeGraphs  # noqa: E402
from kv_slots import ATTENTION  # noqa: E402

from tritonrepo.source.tiny_llama import create_tiny_llama  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def gpu_ms(run, repeats: int = 50) -> float:
    """Median GPU time of `run()` in milliseconds (CUDA events, after warm-up)."""
    for _ in range(3):
        run()
    if not torch.cuda.is_available():  # a dry run of this script on a CPU
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        return (time.perf_counter() - started) / repeats * 1000
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bandwidth(config: dict, dtype: torch.dtype) -> None:
    weight = torch.randn(config["intermediate_size"], config["hidden_size"], device=DEVICE, dtype=dtype)
    for rows in (1, 32):
        x = torch.randn(rows, config["hidden_size"], device=DEVICE, dtype=dtype)
        took = gpu_ms(lambda x=x, w=weight: torch.nn.functional.linear(x, w), 200)
        print(f"linear {rows} x {tuple(weight.shape)}: {took * 1000:.1f} us = {weight.nbytes / took / 1e6:.0f} GB/s")
    del weight


def attention_variants(rows: int, kv_heads: int, groups: int, dim: int, columns: int, dtype) -> None:
    """One layer's decode attention over the slots, the ways it could be computed."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    query = torch.randn(rows, kv_heads, groups, dim, device=DEVICE, dtype=dtype)
    key, value = (torch.randn(rows, kv_heads, columns, dim, device=DEVICE, dtype=dtype) for _ in range(2))
    visible = torch.arange(columns, device=DEVICE)[None, :] <= torch.randint(1, columns, (rows, 1), device=DEVICE)
    mask = torch.where(visible, 0.0, torch.finfo(dtype).min).to(dtype)[:, None, None, :]
    reference = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask)

    def manual():
        scores = torch.matmul(query, key.transpose(-1, -2)) * dim**-0.5 + mask
        return torch.matmul(torch.softmax(scores.float(), dim=-1).to(dtype), value)

    variants = {
        "sdpa (default choice)": lambda: torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask
        ),
        "manual matmul-softmax-matmul": manual,
    }
    for name, backend in (
        ("efficient", SDPBackend.EFFICIENT_ATTENTION),
        ("math", SDPBackend.MATH),
        ("cudnn", SDPBackend.CUDNN_ATTENTION),
    ):

        def run(backend=backend):
            with sdpa_kernel(backend):
                return torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask)

        variants[f"sdpa {name}"] = run
    for name, run in variants.items():
        try:
            difference = float((run().float() - reference.float()).abs().max())
            print(
                f"attention {rows}x{kv_heads}x{groups} over {columns} columns, {name}: {gpu_ms(run, 100) * 1000:.1f} us"
                f" (max difference {difference:.2g})"
            )
        except RuntimeError as error:
            print(f"attention {name}: {str(error).splitlines()[0][:120]}")


def weights_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(support.SHAPES), default="8b")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--max-seq-len", type=int, default=264)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--steps", type=int, default=40, help="decode steps timed")
    args = parser.parse_args()
    dtype = torch.bfloat16
    tiny = create_tiny_llama(Path(tempfile.mkdtemp()) / "tiny-llama")
    config = support.shape_config(tiny, args.shape)
    model = support.build_model(config, DEVICE, "bfloat16")
    size = weights_bytes(model)
    print(f"{DEVICE}: torch {torch.__version__}; weights {size / 2**30:.2f} GiB")
    bandwidth(config, dtype)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    for columns in (args.max_seq_len + 1, args.max_seq_len + 8):
        attention_variants(args.batch, kv_heads, heads // kv_heads, config["head_dim"], columns, dtype)

    engine = Engine(
        model,
        device=DEVICE,
        dtype="bfloat16",
        max_seq_len=args.max_seq_len,
        max_num_sequences=args.batch,
        compile_layers=False,
    )
    print(engine.kv_cache_note, f"capacity {engine.cache.capacity}")
    graphs = engine._graphs
    for bucket in graphs.buckets if graphs else []:
        graph, _ = graphs.graphs[bucket]
        took = gpu_ms(graph.replay)
        print(f"graph replay, batch {bucket:>3}: {took:.2f} ms (weights at {size / took / 1e6:.0f} GB/s)")
    for name in ("sdpa", ATTENTION):
        model.set_attn_implementation(name)
        tokens = torch.zeros((args.batch, 1), dtype=torch.long, device=DEVICE)
        positions = torch.full((args.batch, 1), args.prompt_len, dtype=torch.long, device=DEVICE)
        with torch.inference_mode():
            took = gpu_ms(lambda p=positions, t=tokens: engine._forward(slice(0, args.batch), t, p), 10)
        print(f"eager decode pass, batch {args.batch}, attention {name}: {took:.2f} ms")

    if DEVICE == "cuda" and args.compile:
        started = time.perf_counter()
        parts = compile_parts(model)
        engine._check_against_the_model("the model")
        engine._graphs = graphs = _DecodeGraphs(engine)
        print(
            f"{len(parts)} parts compiled, checked and graphs captured again in {time.perf_counter() - started:.1f} s"
        )
        for bucket in graphs.buckets:
            graph, _ = graphs.graphs[bucket]
            took = gpu_ms(graph.replay)
            print(f"compiled: graph replay, batch {bucket:>3}: {took:.2f} ms (weights at {size / took / 1e6:.0f} GB/s)")

    prompts = support.Prompts(tiny, engine.vocab_size)
    for i in range(args.batch):
        params = SamplingParams(max_new_tokens=10_000, end_id=-1)
        engine._waiting.append(
            Sequence(prompts.make(args.prompt_len, f"p{i}"), params, lambda s, r: None, lambda s, e: print(e))
        )
    with torch.inference_mode():
        started = time.perf_counter()
        while engine._waiting or engine._prefilling:
            engine._start_prefill()
            engine._prefill_step()
        support._sync(model)
        print(f"prefill of {args.batch} x {args.prompt_len} tokens: {(time.perf_counter() - started) * 1000:.1f} ms")
        walls = []
        for _ in range(args.steps):
            started = time.perf_counter()
            engine._decode_step()
            walls.append(time.perf_counter() - started)
        step = statistics.median(walls[5:]) * 1000
        print(
            f"engine decode step, batch {len(engine._decoding)}: {step:.2f} ms wall = {args.batch / step * 1000:.0f} tok/s"
        )
        logits = torch.randn(args.batch, engine.vocab_size, device=DEVICE)
        from batch_sampling import choose

        started = time.perf_counter()
        for _ in range(20):
            choose(engine._decoding, logits.clone())
        print(f"choose() for {args.batch} greedy rows: {(time.perf_counter() - started) / 20 * 1000:.2f} ms wall")
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                engine._decode_step()
            support._sync(model)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))


if __name__ == "__main__":
    main()
