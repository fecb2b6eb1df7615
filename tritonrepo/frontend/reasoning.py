"""Splitting DeepSeek-R1-style output into reasoning and answer, whole or piece by piece as it streams."""

from __future__ import annotations

from dataclasses import dataclass

THINK_START = "<think>"
THINK_END = "</think>"
PARSERS = ("deepseek-r1", "none")


@dataclass(frozen=True)
class Split:
    """What a piece of output contributes to each channel; empty strings mean nothing new."""

    reasoning: str = ""
    content: str = ""

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag` (it may complete in the next piece)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class DeepSeekR1Splitter:
    """Everything before `</think>` is reasoning, everything after it the answer.

    The distills' chat template ends the prompt with `<think>\\n`, so the output usually has no opening tag; when it does
    (a template that leaves it to the model), the tag is dropped. Output that never closes the tag is all reasoning
    (it was cut short while thinking), as vLLM and trtllm-serve report it. Tags split across pieces are held back
    until they are complete, so streamed deltas concatenate to exactly the non-streamed split.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._answering = False
        self._opening_checked = False

    def feed(self, text: str) -> Split:
        pending = self._pending + text
        if not self._opening_checked:
            stripped = pending.lstrip()
            if THINK_START.startswith(stripped) and len(stripped) < len(THINK_START):
                self._pending = pending  # could still become "<think>"
                return Split()
            self._opening_checked = True
            if stripped.startswith(THINK_START):
                pending = stripped[len(THINK_START) :]
        if self._answering:
            self._pending = ""
            return Split(content=pending)
        end = pending.find(THINK_END)
        if end >= 0:
            self._answering = True
            self._pending = ""
            return Split(reasoning=pending[:end], content=pending[end + len(THINK_END) :])
        held = _partial_suffix(pending, THINK_END)
        self._pending = pending[len(pending) - held :]
        return Split(reasoning=pending[: len(pending) - held])

    def finish(self) -> Split:
        """What is still held back once the output has ended (an incomplete tag is plain text)."""
        pending, self._pending = self._pending, ""
        return Split(content=pending) if self._answering else Split(reasoning=pending)


def splitter_for(parser: str | None) -> DeepSeekR1Splitter | None:
    """A fresh splitter for one response, or None when reasoning is not separated."""
    if parser in (None, "none"):
        return None
    if parser == "deepseek-r1":
        return DeepSeekR1Splitter()
    raise ValueError(f"unknown reasoning parser {parser!r}; choose one of {', '.join(PARSERS)}")


def split_whole(parser: str | None, text: str) -> Split:
    """The non-streamed split: the same splitter fed the whole text at once."""
    splitter = splitter_for(parser)
    if splitter is None:
        return Split(content=text)
    first, rest = splitter.feed(text), splitter.finish()
    return Split(reasoning=first.reasoning + rest.reasoning, content=first.content + rest.content)
