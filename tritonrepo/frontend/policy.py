"""What the operator decides about the front end (keys, limits, reasoning, chat template); no heavy imports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ServerError

REASONING_CHOICES = ("auto", "deepseek-r1", "none")


@dataclass(frozen=True)
class FrontendPolicy:
    api_keys: tuple[str, ...] = ()  # empty: no authentication (the default binds to 127.0.0.1 only)
    cors_origins: tuple[str, ...] = ()  # none by default: browsers on other origins are refused
    max_body_bytes: int = 8 << 20
    body_timeout_s: float = 30.0  # a request body not complete this long after the request arrived: 408
    max_in_flight: int = 256  # generation requests running at once; more wait in the queue
    max_queued: int = 1024  # beyond this, 429 with Retry-After
    queue_timeout_s: float = 60.0  # a queued request gives up (429) after this long
    reasoning_parser: str = "auto"  # auto: from the repository manifest (DeepSeek-R1 and its distills)
    chat_template: Path | None = None  # a Jinja file replacing the tokenizer's chat template

    def resolved_reasoning_parser(self, manifest: dict) -> str | None:
        if self.reasoning_parser not in REASONING_CHOICES:
            raise ServerError(
                f"unknown reasoning parser {self.reasoning_parser!r}",
                hint=f"Use one of {', '.join(REASONING_CHOICES)}.",
            )
        if self.reasoning_parser == "auto":
            return manifest.get("reasoning_parser")
        return None if self.reasoning_parser == "none" else self.reasoning_parser

    def chat_template_text(self) -> str | None:
        if self.chat_template is None:
            return None
        try:
            text = Path(self.chat_template).read_text()
        except OSError as exc:
            raise ServerError(f"cannot read the chat template {self.chat_template}: {exc.strerror}") from exc
        if "{%" not in text and "{{" not in text:
            raise ServerError(
                f"{self.chat_template} does not look like a Jinja chat template (no {{% or {{{{ in it)",
                hint="Pass a file with the template itself, as in tokenizer_config.json's chat_template.",
            )
        return text
