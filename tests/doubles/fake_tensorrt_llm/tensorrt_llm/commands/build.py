"""TEST DOUBLE of tensorrt_llm.commands.build (the trtllm-build entry point): parses, records, writes placeholders.

It accepts the flags tritonrepo uses, as the real argparse does for the pretended version (no --kv_cache_type
before 0.13), so an argv the real tool would reject fails here too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from tensorrt_llm._double import dropped_rank, failing, fake_version, placeholder, record

PLUGIN_DTYPES = ["auto", "float16", "float32", "bfloat16", "int32", "fp8", "disable"]
SWITCH = ["enable", "disable"]


def _version() -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", fake_version()).groups()
    return int(major), int(minor)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trtllm-build")
    p.add_argument("--checkpoint_dir", required=True)
    p.add_argument("--output_dir", default="engine_outputs")
    for name in ("--max_batch_size", "--max_input_len", "--max_seq_len", "--max_num_tokens", "--workers"):
        p.add_argument(name, type=int)
    p.add_argument("--log_level", choices=["internal_error", "error", "warning", "info", "verbose", "debug", "trace"])
    p.add_argument("--gemm_plugin", choices=PLUGIN_DTYPES)
    p.add_argument("--gpt_attention_plugin", choices=PLUGIN_DTYPES)
    for name in ("--use_paged_context_fmha", "--use_fp8_context_fmha", "--remove_input_padding", "--context_fmha"):
        p.add_argument(name, choices=SWITCH)
    p.add_argument("--paged_kv_cache", choices=SWITCH)  # deprecated alias, still accepted
    if _version() >= (0, 13):
        p.add_argument("--kv_cache_type", choices=["continuous", "paged", "disabled"])
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    record("trtllm-build", argv=argv, version=fake_version())
    args = parser().parse_args(argv)
    checkpoint = json.loads((Path(args.checkpoint_dir) / "config.json").read_text())
    world_size = checkpoint["mapping"]["world_size"]
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for line in range(25):
        print(f"[TRT-LLM] [I] TEST DOUBLE build step {line}", flush=True)
    if failing("build"):
        placeholder(out / "rank0.engine", "half-written")
        print("[TRT-LLM] [E] Engine building failed: out of memory (TEST DOUBLE)", file=sys.stderr, flush=True)
        return 1
    for rank in range(world_size):
        if rank != dropped_rank():
            placeholder(out / f"rank{rank}.engine", f"engine rank {rank}")
        print(f"[TRT-LLM] [I] Engine for rank {rank} saved", flush=True)
    config = {"version": fake_version(), "pretrained_config": checkpoint, "build_config": vars(args)}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return 0
