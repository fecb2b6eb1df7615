"""Pure translations of an EngineBuildSpec into the trtllm-build argv and the convert worker's request."""

from __future__ import annotations

from pathlib import Path

from tritonrepo.trtllm.spec import EngineBuildSpec
from tritonrepo.trtllm.versions import features

# Request format version, so a worker from another tritonrepo release can refuse a request it does not understand.
REQUEST_FORMAT = 1


def _switch(on: bool) -> str:
    # trtllm-build's boolean plugin options take the words enable/disable, not flags
    # (add_plugin_argument in tensorrt_llm/plugin/plugin.py).
    return "enable" if on else "disable"


def trtllm_build_args(spec: EngineBuildSpec, version: str | None, *, output_dir: Path | None = None) -> list[str]:
    """The argv after `trtllm-build`, valid for that TensorRT-LLM version; output_dir overrides spec.engine_dir."""
    feats = features(version)
    args = [
        "--checkpoint_dir", str(spec.checkpoint_dir),
        "--output_dir", str(output_dir or spec.engine_dir),
        "--max_batch_size", str(spec.max_batch_size),
        "--max_input_len", str(spec.max_input_len),
        "--max_seq_len", str(spec.max_seq_len),
        "--gemm_plugin", spec.gemm_plugin,
        "--gpt_attention_plugin", spec.gpt_attention_plugin,
        "--use_paged_context_fmha", _switch(spec.use_paged_context_fmha),
        "--log_level", "info",
    ]  # fmt: skip
    if spec.max_num_tokens is not None:
        args += ["--max_num_tokens", str(spec.max_num_tokens)]
    # The inflight batcher needs a paged KV cache. Said explicitly, in the spelling of the version
    # (see versions.KV_CACHE_TYPE_FLAG for when --kv_cache_type replaced --paged_kv_cache).
    args += ["--kv_cache_type", "paged"] if feats.kv_cache_type_flag else ["--paged_kv_cache", "enable"]
    # FP8 context FMHA needs FP8 weights ("FP8 Context FMHA must be used together with the fp8 quantization
    # workflow", tensorrt_llm/layers/attention.py); newer versions default it on and drop it with a warning, older
    # ones default it off: say it either way. With FP8 weights and paged context FMHA it is what makes the
    # FP8 KV cache usable (tensorrt_llm/builder.py turns it on with a warning otherwise).
    args += ["--use_fp8_context_fmha", _switch(spec.quantization == "fp8")]
    if spec.build_workers > 1:
        # One process per rank, each on its own GPU (build_and_save(rank, rank % workers) in
        # tensorrt_llm/commands/build.py, which also caps workers at torch.cuda.device_count()).
        args += ["--workers", str(spec.build_workers)]
    return args


def quant_algos(quantization: str) -> tuple[str | None, str | None]:
    """(quant_algo, kv_cache_quant_algo) as QuantAlgo member names (tensorrt_llm/quantization/mode.py)."""
    return {
        "none": (None, None),
        "fp8": ("FP8", "FP8"),
        "fp8_kv": (None, "FP8"),
    }[quantization]


def convert_request(spec: EngineBuildSpec, *, checkpoint_dir: Path | None = None) -> dict:
    """What the convert worker receives (JSON-serialisable); checkpoint_dir overrides spec.checkpoint_dir."""
    quant_algo, kv_cache_quant_algo = quant_algos(spec.quantization)
    return {
        "format": REQUEST_FORMAT,
        "architecture": spec.architecture,
        "hf_dir": str(spec.hf_dir),
        "checkpoint_dir": str(checkpoint_dir or spec.checkpoint_dir),
        "dtype": spec.dtype,
        "tp_size": spec.tp_size,
        "pp_size": spec.pp_size,
        "world_size": spec.world_size,
        "quant_algo": quant_algo,
        "kv_cache_quant_algo": kv_cache_quant_algo,
        "calib_dataset": spec.calib_dataset,
        "calib_size": spec.calib_size,
    }
