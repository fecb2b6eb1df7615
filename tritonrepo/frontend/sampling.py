"""What a request that leaves temperature, top_p or top_k out gets: the checkpoint's own defaults (its
generation_config.json, as build recorded it), else OpenAI's (temperature 1, top_p 1: sampling)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..source.generation_config import usable_sampling_defaults


@dataclass(frozen=True)
class SamplingDefaults:
    temperature: float = 1.0  # 0 is greedy
    top_p: float = 1.0
    top_k: int | None = None  # None: not limited

    @classmethod
    def from_generation_config(cls, record: Mapping[str, Any] | None) -> SamplingDefaults:
        """From the keys a generation_config.json sets (do_sample, temperature, top_p, top_k); missing ones keep
        OpenAI's defaults. do_sample false means greedy, as in transformers, whatever temperature says."""
        found = usable_sampling_defaults(record or {})
        temperature = 0.0 if found.get("do_sample") is False else found.get("temperature", cls.temperature)
        return cls(temperature=temperature, top_p=found.get("top_p", cls.top_p), top_k=found.get("top_k"))

    def resolve(
        self, temperature: float | None, top_p: float | None, top_k: int | None
    ) -> tuple[float, float | None, int | None]:
        """(temperature, top_p, top_k) for a request: what it gives, the defaults for what it leaves out. Greedy
        (temperature 0) takes no top_p or top_k default: they only shape sampling."""
        temperature = self.temperature if temperature is None else temperature
        if temperature == 0:
            return 0.0, top_p, top_k
        return temperature, self.top_p if top_p is None else top_p, self.top_k if top_k is None else top_k

    def describe(self) -> str:
        if self.temperature == 0:
            return "greedy"
        top_k = f", top_k {self.top_k}" if self.top_k else ""
        return f"temperature {self.temperature:g}, top_p {self.top_p:g}{top_k}"
