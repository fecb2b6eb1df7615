"""What one engine build is: the checkpoint to convert, the engine limits and where every output goes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")
DTYPES = ("bfloat16", "float16")
QUANTIZATIONS = ("none", "fp8", "fp8_kv")
# Values trtllm-build accepts for --gemm_plugin / --gpt_attention_plugin that make sense for our dtypes
# (PLUGIN_DTYPE_OPTIONS_MAP and DEFAULT_PLUGIN_DTYPE_OPTIONS in tensorrt_llm/plugin/plugin.py); "disable" turns
# a plugin off.
PLUGIN_VALUES = ("auto", "bfloat16", "float16", "float32", "fp8", "disable")


@dataclass(frozen=True)
class EngineBuildSpec:
    """One Hugging Face checkpoint -> TensorRT-LLM checkpoint -> engines, for tp_size * pp_size GPUs."""

    architecture: str
    hf_dir: Path
    checkpoint_dir: Path
    engine_dir: Path
    log_path: Path
    dtype: str = "bfloat16"
    quantization: str = "none"
    tp_size: int = 1
    pp_size: int = 1
    max_batch_size: int = 256
    max_input_len: int = 4096
    max_seq_len: int = 8192
    max_num_tokens: int | None = None  # None: trtllm-build's own default
    gemm_plugin: str = "auto"
    gpt_attention_plugin: str = "auto"
    use_paged_context_fmha: bool = True
    workers: int | None = None  # None: one build worker per rank (trtllm-build caps it at the visible GPUs)
    calib_dataset: str = "cnn_dailymail"  # fp8 calibration data: a datasets name or a local path
    calib_size: int = 512

    def __post_init__(self) -> None:
        for name in ("hf_dir", "checkpoint_dir", "engine_dir", "log_path"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        _one_of("architecture", self.architecture, ARCHITECTURES)
        _one_of("dtype", self.dtype, DTYPES)
        _one_of("quantization", self.quantization, QUANTIZATIONS)
        _one_of("gemm_plugin", self.gemm_plugin, PLUGIN_VALUES)
        _one_of("gpt_attention_plugin", self.gpt_attention_plugin, PLUGIN_VALUES)
        for name in ("tp_size", "pp_size", "max_batch_size", "max_input_len", "max_seq_len", "calib_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_num_tokens is not None and self.max_num_tokens < 1:
            raise ValueError(f"max_num_tokens must be at least 1, got {self.max_num_tokens}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.max_input_len > self.max_seq_len:
            raise ValueError(f"max_input_len ({self.max_input_len}) exceeds max_seq_len ({self.max_seq_len})")
        if self.quantization == "fp8_kv" and self.use_paged_context_fmha:
            # TensorRT-LLM refuses (or silently drops) paged context FMHA with an FP8 KV cache over non-FP8 weights:
            # "FP8 Paged Context FMHA only works with fp8 quantization workflow" (tensorrt_llm/builder.py and the
            # C++ attention op in 0.1x; later builder.py disables it with a warning). Use "fp8" or turn it off.
            raise ValueError(
                "quantization 'fp8_kv' cannot be combined with paged context FMHA in TensorRT-LLM; "
                "use quantization 'fp8' or use_paged_context_fmha=False"
            )
        if len({self.checkpoint_dir.resolve(), self.engine_dir.resolve(), self.hf_dir.resolve()}) != 3:
            raise ValueError("hf_dir, checkpoint_dir and engine_dir must be three different folders")

    @property
    def world_size(self) -> int:
        return self.tp_size * self.pp_size

    @property
    def build_workers(self) -> int:
        return min(self.workers or self.world_size, self.world_size)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
