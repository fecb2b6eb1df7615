"""A deployment's sequence limits: the model's context capped to a modest default unless the user asks. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from tritonrepo.errors import PlanError

DEFAULT_HF_MAX_SEQ_LEN = 4096  # the portable runtime keeps a full KV cache per sequence: stay modest by default
DEFAULT_HF_BATCH = 8


@dataclass(frozen=True)
class Limits:
    max_batch_size: int
    max_input_len: int
    max_seq_len: int


def plan_limits(
    model_config: dict,
    *,
    max_batch_size: int | None = None,
    max_input_len: int | None = None,
    max_seq_len: int | None = None,
    default_seq_len: int = DEFAULT_HF_MAX_SEQ_LEN,
    default_batch: int = DEFAULT_HF_BATCH,
) -> Limits:
    """The model's context length capped to a modest default unless asked; input gets half by default."""
    context = int(model_config.get("max_position_embeddings") or 0) or default_seq_len
    seq = max_seq_len or min(context, default_seq_len)
    if seq > context:
        raise PlanError(f"--max-seq-len {seq} exceeds the model's context length {context} (max_position_embeddings)")
    inp = max_input_len or max(1, seq // 2)
    if inp >= seq:
        raise PlanError(
            f"--max-input-len {inp} must be smaller than --max-seq-len {seq}", hint="Leave room for generated tokens."
        )
    batch = max_batch_size or default_batch
    for name, value in (("--max-batch-size", batch), ("--max-input-len", inp), ("--max-seq-len", seq)):
        if value < 1:
            raise PlanError(f"{name} must be at least 1, got {value}")
    return Limits(max_batch_size=batch, max_input_len=inp, max_seq_len=seq)
