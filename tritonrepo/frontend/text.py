"""Text in and out of the model: incremental decoding of streamed UTF-8, OpenAI-style stop strings, prompt encoding."""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .triton_client import GeneratedChunk


class IncrementalText:
    """Decodes UTF-8 bytes that arrive in pieces; a character split across pieces comes out whole, once."""

    def __init__(self) -> None:
        # errors="replace": invalid bytes from the model become U+FFFD instead of failing the request.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        """The text completed by `data`; an unfinished trailing character is kept for the next call."""
        return self._decoder.decode(data)

    def finish(self) -> str:
        """Flush: a character left unfinished at the end becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)


class StopStringMatcher:
    """Cuts streamed text at the first stop string (which is not emitted), as OpenAI does.

    Text that could be the start of a stop string is held back until the next piece shows whether it is.
    """

    def __init__(self, stops: Iterable[str] = ()) -> None:
        self._stops = tuple(dict.fromkeys(s for s in stops if s))
        self._held = ""
        self.matched = False

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit now, whether a stop string has matched). After a match, nothing more comes."""
        if self.matched:
            return "", True
        if not self._stops:
            return text, False
        buffer = self._held + text
        cut = self._first_match(buffer)
        if cut is not None:
            self.matched = True
            self._held = ""
            return buffer[:cut], True
        keep = self._partial_suffix_len(buffer)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def finish(self) -> str:
        """The held-back tail at the end of generation (it never became a stop string)."""
        held, self._held = self._held, ""
        return "" if self.matched else held

    def _first_match(self, buffer: str) -> int | None:
        positions = [i for i in (buffer.find(stop) for stop in self._stops) if i >= 0]
        return min(positions) if positions else None

    def _partial_suffix_len(self, buffer: str) -> int:
        """Length of the longest end of `buffer` that is the beginning of some stop string."""
        longest = max(len(stop) for stop in self._stops) - 1
        for size in range(min(longest, len(buffer)), 0, -1):
            tail = buffer[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0


def tokens_before(cut: int, chunks: Iterable[GeneratedChunk], count_text: Callable[[bytes], int]) -> int:
    """How many generated tokens start before byte `cut` of the output. When a stop string cut the text there, these
    are the tokens whose text was returned, in whole or in part; the stop string's tokens and any after it are not.

    Exact where each token's size is known (the runtime model's token ids) or chunks hold one token each (streamed
    responses); a chunk of several tokens that the cut falls inside (a non-streamed ensemble or BLS response) is
    counted by tokenizing its returned part with `count_text`, never beyond the count the model reported.
    """
    total = offset = 0
    for chunk in chunks:
        if offset >= cut:
            break
        size, tokens = len(chunk.text_bytes), chunk.num_tokens or 0
        if offset + size <= cut:
            total += tokens
        elif chunk.token_sizes is not None:
            starts = list(itertools.accumulate(chunk.token_sizes, initial=offset))[:-1]  # each token's first byte
            total += sum(1 for start in starts if start < cut)
        else:
            total += min(tokens, count_text(chunk.text_bytes[: cut - offset]))
        offset += size
    return total


def prompt_encoder(tokenizer: Any, *, for_threads: bool = False) -> Callable[[str, bool], list[int]]:
    """`tokenizer.encode(text, add_special_tokens=...)` as a function, calling a fast tokenizer's backend directly
    when that gives the same ids: around the same backend encoding, transformers adds work on every call and sends a
    batch of one, which the backend hands to its thread pool. The same means no truncation or padding is set
    on the backend (transformers would switch them off) and special tokens are not split.

    `for_threads`: for long prompts tokenized on worker threads. The backend's single encode holds the GIL until it
    is done, which would stall the event loop as surely as running it there; its batch encoding releases the GIL
    while it works (and the fast variant skips the character offsets, which nobody reads here)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not (
        backend is not None
        and backend.truncation is None
        and backend.padding is None
        and not getattr(tokenizer, "split_special_tokens", False)
        and not getattr(backend, "encode_special_tokens", False)
    ):
        return lambda text, add_special_tokens: tokenizer.encode(text, add_special_tokens=add_special_tokens)
    if for_threads:
        encode_batch = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        return lambda text, add_special_tokens: encode_batch([text], add_special_tokens=add_special_tokens)[0].ids
    return lambda text, add_special_tokens: backend.encode(text, add_special_tokens=add_special_tokens).ids
