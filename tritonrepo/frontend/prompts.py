"""Prompt tokenization that keeps the event loop responsive: short prompts inline (the fast path), long ones and their
chat templates on a few worker threads, and a floor on the token count that refuses long prompts before either."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .text import prompt_encoder
from .token_floor import TokenFloor, token_floor

T = TypeVar("T")

# Up to this many characters a prompt is tokenized (and templated) on the event loop: a millisecond or two of
# tokenizer work, less than handing it to a thread and back would add to the time to first token.
INLINE_PROMPT_CHARS = 4096


def default_workers() -> int:
    # Tokenizing is CPU work: half the cores, at most 4, leaves the rest to the event loop and Triton. Each worker
    # holds one prompt's tokens at a time, which bounds the memory long prompts take together.
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class PromptTokenizer:
    """Tokenizes prompts for the serving layer; `tokens_at_least` is the floor that needs no tokenizing (0: none)."""

    def __init__(self, tokenizer: Any, *, workers: int | None = None, inline_chars: int = INLINE_PROMPT_CHARS) -> None:
        self._encode_inline = prompt_encoder(tokenizer)
        self._encode_in_thread = prompt_encoder(tokenizer, for_threads=True)
        self.floor: TokenFloor | None = token_floor(tokenizer)
        self.inline_chars = inline_chars
        self.workers = workers or default_workers()
        self._pool: ThreadPoolExecutor | None = None

    def is_long(self, size: int) -> bool:
        """Whether text of `size` characters is worked on off the event loop."""
        return size > self.inline_chars

    def tokens_at_least(self, text: str) -> int:
        return 0 if self.floor is None else self.floor.tokens_at_least(text)

    async def encode(self, text: str, add_special_tokens: bool) -> tuple[int, ...]:
        if not self.is_long(len(text)):
            return tuple(self._encode_inline(text, add_special_tokens))
        return await self.off_loop(lambda: tuple(self._encode_in_thread(text, add_special_tokens)))

    async def run(self, size: int, work: Callable[[], T]) -> T:
        """`work()` (e.g. a chat template over `size` characters of messages): inline when small, else on a worker."""
        return work() if not self.is_long(size) else await self.off_loop(work)

    async def off_loop(self, work: Callable[[], T]) -> T:
        # A request cancelled while its work waits for a worker takes the work out of the queue; work already
        # running finishes on its thread (tokenizers cannot be interrupted), which the worker count bounds.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tritonrepo-prompts")
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
