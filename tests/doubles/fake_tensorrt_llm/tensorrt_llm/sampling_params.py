"""TEST DOUBLE -- NOT TensorRT-LLM. SamplingParams with the fields (and 1.0 defaults) the llmapi model passes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SamplingParams:
    """Unknown fields raise TypeError, as the real dataclass does, so a misspelt argument in model.py fails tests."""

    max_tokens: int = 32
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    min_tokens: int | None = None
    best_of: int | None = None
    n: int = 1
    stop: str | list[str] | None = None
    exclude_input_from_output: bool = True
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")

    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
