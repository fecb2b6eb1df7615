"""Planning, pure: which runtime serves a model and with which limits, from model facts, hardware and user limits."""

from __future__ import annotations

from dataclasses import dataclass

from tritonrepo.errors import PlanError

RUNTIMES = ("auto", "hf", "tensorrtllm")
DEFAULT_HF_MAX_SEQ_LEN = 4096  # the portable runtime keeps a full KV cache per sequence: stay modest by default
DEFAULT_HF_BATCH = 8


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # "hf" | "tensorrtllm"
    reason: str


@dataclass(frozen=True)
class Limits:
    max_batch_size: int
    max_input_len: int
    max_seq_len: int


def choose_runtime(requested: str, *, tensorrt_llm_installed: bool, gpu_count: int) -> RuntimeChoice:
    if requested not in RUNTIMES:
        raise PlanError(f"unknown runtime {requested!r}", hint=f"Use one of: {', '.join(RUNTIMES)}.")
    if requested == "hf":
        return RuntimeChoice("hf", "--runtime hf: the portable runtime (transformers + PyTorch, Python backend)")
    missing = [what for what, ok in (("TensorRT-LLM", tensorrt_llm_installed), ("a GPU", gpu_count > 0)) if not ok]
    if requested == "auto":
        if missing:
            return RuntimeChoice(
                "hf",
                f"--runtime auto: {' and '.join(missing)} not found here, so the portable runtime serves the model",
            )
        return RuntimeChoice("tensorrtllm", f"--runtime auto: TensorRT-LLM and {gpu_count} GPU(s) found")
    if missing:
        raise PlanError(
            f"--runtime tensorrtllm needs {' and '.join(missing)}, which this machine lacks",
            hint="Run inside the NGC tritonserver:<yy.mm>-trtllm-python-py3 container on a GPU machine, or use --runtime hf.",
        )
    raise PlanError(
        "TensorRT-LLM engine builds are not implemented in this version of tritonrepo",
        hint="Use --runtime hf for now.",
    )


def plan_limits(
    model_config: dict,
    *,
    max_batch_size: int | None = None,
    max_input_len: int | None = None,
    max_seq_len: int | None = None,
) -> Limits:
    """Limits for the portable runtime: the model's context length capped to a modest default unless asked."""
    context = int(model_config.get("max_position_embeddings") or 0) or DEFAULT_HF_MAX_SEQ_LEN
    seq = max_seq_len or min(context, DEFAULT_HF_MAX_SEQ_LEN)
    if seq > context:
        raise PlanError(f"--max-seq-len {seq} exceeds the model's context length {context} (max_position_embeddings)")
    inp = max_input_len or max(1, seq // 2)
    if inp >= seq:
        raise PlanError(
            f"--max-input-len {inp} must be smaller than --max-seq-len {seq}", hint="Leave room for generated tokens."
        )
    batch = max_batch_size or DEFAULT_HF_BATCH
    for name, value in (("--max-batch-size", batch), ("--max-input-len", inp), ("--max-seq-len", seq)):
        if value < 1:
            raise PlanError(f"{name} must be at least 1, got {value}")
    return Limits(max_batch_size=batch, max_input_len=inp, max_seq_len=seq)
