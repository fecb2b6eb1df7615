"""OpenAI chat and completion semantics over a TextGenerator (no web framework here; testable directly)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .prompts import PromptTokenizer
from .protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    ErrorInfo,
    ErrorResponse,
    ModelCard,
    ModelList,
    UsageInfo,
)
from .reasoning import Split, split_whole, splitter_for
from .sampling import SamplingDefaults
from .text import IncrementalText, StopStringMatcher, tokens_before
from .triton_client import GeneratedChunk, GenerationError, GenerationParams, TextGenerator, input_for

_END = object()  # the end of a text stream, for anext()

if TYPE_CHECKING:
    from .metrics import FrontendMetrics

DEFAULT_MAX_TOKENS_CAP = 2048  # max_tokens when the request gives none: the room left, but at most this
DONE_EVENT = "data: [DONE]\n\n"


class OpenAIError(Exception):
    """The one error type of the serving layer; the router turns it into an HTTP status and an OpenAI error body."""

    def __init__(
        self, status: int, message: str, *, type: str | None = None, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.param = param
        self.code = code

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code))

    @classmethod
    def from_generation(cls, exc: GenerationError) -> OpenAIError:
        return cls(exc.status, exc.message)


def sse_event(payload: BaseModel) -> str:
    return f"data: {payload.model_dump_json()}\n\n"


class EventTemplate:
    """An SSE event with one string left open: serialized once by pydantic around a unique mark, then filled per
    event. Text pieces are most of a stream's events, and building and serializing their models each time was
    the front end's largest cost per token."""

    def __init__(self, render: Callable[[str], str]) -> None:
        mark = f"fill{uuid.uuid4().hex}"  # letters and digits only: serialized as itself
        self._render = render
        parts = render(mark).split(mark)
        self._parts = (parts[0], parts[1]) if len(parts) == 2 else None

    def fill(self, text: str) -> str:
        if self._parts is None:  # the mark showed up twice (cannot happen with our models): serialize in full
            return self._render(text)
        # json.dumps escapes a string exactly as the serializer does (quotes, backslashes, control characters)
        return f"{self._parts[0]}{json.dumps(text, ensure_ascii=False)[1:-1]}{self._parts[1]}"


@dataclass(frozen=True)
class ModelLimits:
    """Token limits of the served model; None where the repository does not say."""

    max_input_len: int | None = None
    max_seq_len: int | None = None
    max_batch_size: int | None = None


@dataclass(frozen=True)
class ServedModels:
    """The names clients may ask for: an alias (the model's name) for the default entry point, and each entry point."""

    entry_points: tuple[str, ...]
    default_entry_point: str
    alias: str | None = None
    limits: ModelLimits = field(default_factory=ModelLimits)
    # The runtime model the alias goes straight to (tokenizing and detokenizing here, as vLLM's front end does),
    # skipping the ensemble's Python pre/postprocessing steps on every token; None: the alias is the ensemble.
    fast_path: str | None = None

    def names(self) -> list[str]:
        return list(dict.fromkeys(([self.alias] if self.alias else []) + list(self.entry_points)))

    def resolve(self, name: str | None) -> str:
        """The Triton entry-point model for a requested name (no name: the default)."""
        if name is None or name == self.alias:
            return self.fast_path or self.default_entry_point
        if name in self.entry_points:
            return name
        raise OpenAIError(
            404,
            f"The model {name!r} does not exist; served models: {', '.join(self.names())}.",
            param="model",
            code="model_not_found",
        )

    def public_name(self, name: str | None) -> str:
        return name or self.alias or self.default_entry_point


@dataclass
class _Job:
    """One validated request, ready to run."""

    entry_point: str
    model_name: str
    params: GenerationParams
    prompt_tokens: int
    include_usage: bool
    request_id: str
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class _Outcome:
    completion_tokens: int = 0
    finish_reason: str = "stop"
    reported_reason: str | None = None  # the model's own finish reason, when it gives one

    def usage(self, prompt_tokens: int) -> UsageInfo:
        return UsageInfo(
            prompt_tokens=prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=prompt_tokens + self.completion_tokens,
        )


class _StartedStream:
    """SSE events whose generation is already running. Closing it, also before the first event is read (the client
    left while the response was being set up), cancels that generation and so the Triton request."""

    def __init__(self, events: AsyncIterator[str], texts: AsyncIterator[str], first: asyncio.Future) -> None:
        self._events, self._texts, self._first = events, texts, first

    def __aiter__(self) -> _StartedStream:
        return self

    async def __anext__(self) -> str:
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()  # type: ignore[attr-defined]
        self._first.cancel()  # nothing when it is done
        await asyncio.wait({self._first})  # its cleanup runs before the text generator is closed
        if not self._first.cancelled():
            self._first.exception()  # a failure nobody reads is not reported as "never retrieved"
        await self._texts.aclose()  # type: ignore[attr-defined]


class OpenAIServing:
    """Validates OpenAI requests against the served model, runs them, and shapes responses or SSE streams."""

    def __init__(
        self,
        generator: TextGenerator,
        models: ServedModels,
        tokenizer: Any,
        *,
        max_tokens_cap: int = DEFAULT_MAX_TOKENS_CAP,
        reasoning_parser: str | None = None,
        chat_template: str | None = None,
        metrics: FrontendMetrics | None = None,
        sampling_defaults: SamplingDefaults | None = None,
    ) -> None:
        self.generator = generator
        self.models = models
        self.tokenizer = tokenizer
        self.prompts = PromptTokenizer(tokenizer)
        self.max_tokens_cap = max_tokens_cap
        splitter_for(reasoning_parser)  # an unknown parser name fails here, at start-up
        self.reasoning_parser = reasoning_parser
        self.chat_template = chat_template  # replaces the tokenizer's own (--chat-template)
        self.metrics = metrics
        # What a request without temperature/top_p/top_k gets: the checkpoint's generation defaults, else OpenAI's.
        self.sampling_defaults = sampling_defaults or SamplingDefaults()

    def close(self) -> None:
        """Stops the prompt workers (at shutdown)."""
        self.prompts.close()

    async def list_models(self) -> ModelList:
        created = int(time.time())
        return ModelList(
            data=[
                ModelCard(id=name, created=created, max_model_len=self.models.limits.max_seq_len)
                for name in self.models.names()
            ]
        )

    # --- chat ------------------------------------------------------------------------------------------------------
    async def chat(self, request: ChatCompletionRequest) -> ChatCompletionResponse | AsyncIterator[str]:
        if request.logprobs or request.top_logprobs:
            raise OpenAIError(400, "logprobs are not supported yet.", param="logprobs")
        prompt = await self._chat_prompt(request)
        # The chat template already writes BOS, so the tokenizer must not add it again.
        job = await self._prepare(request, prompt, add_special_tokens=False, prefix="chatcmpl")
        if request.stream:
            return self._stream(
                job,
                ChatCompletionChunk,
                opening=ChatChunkChoice(delta=DeltaMessage(role="assistant", content=""), finish_reason=None),
                piece=lambda split: ChatChunkChoice(
                    delta=DeltaMessage(reasoning_content=split.reasoning or None, content=split.content or None)
                ),
                final=lambda reason: ChatChunkChoice(delta=DeltaMessage(), finish_reason=reason),
                reasoning_parser=self.reasoning_parser,
            )
        outcome = _Outcome()
        text = "".join([piece async for piece in self._texts(job, outcome)])
        split = split_whole(self.reasoning_parser, text)
        message = (
            AssistantMessage(content=split.content, reasoning_content=split.reasoning)
            if self.reasoning_parser not in (None, "none")
            else AssistantMessage(content=text)
        )
        return ChatCompletionResponse(
            id=job.request_id,
            created=job.created,
            model=job.model_name,
            choices=[ChatChoice(message=message, finish_reason=outcome.finish_reason)],
            usage=outcome.usage(job.prompt_tokens),
        )

    async def _chat_prompt(self, request: ChatCompletionRequest) -> str:
        if not (self.chat_template or getattr(self.tokenizer, "chat_template", None)):
            raise OpenAIError(
                400, "This model's tokenizer has no chat template; use /v1/completions instead.", param="messages"
            )
        messages = [message.for_template() for message in request.messages]
        size = sum(len(value) for message in messages for value in message.values())
        try:
            prompt = await self.prompts.run(
                size,  # long conversations are templated off the event loop
                lambda: self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False, chat_template=self.chat_template
                ),
            )
        except Exception as exc:  # jinja raises for conversations the template refuses (e.g. no system role)
            raise OpenAIError(400, f"The chat template rejected these messages: {exc}", param="messages") from exc
        return prompt

    # --- streams ---------------------------------------------------------------------------------------------------
    def _stream(
        self,
        job: _Job,
        chunk_type: Any,
        opening: Any,
        piece: Callable[[Split], Any],
        final: Callable[[str], Any],
        reasoning_parser: str | None = None,
    ) -> AsyncIterator[str]:
        """SSE events for chat and completions alike: an optional opening choice, one per text piece (split into
        reasoning and answer when a parser is set), the finish reason, the usage chunk when asked for
        (stream_options.include_usage), then [DONE].

        The Triton request starts here, before the caller has set up its response, so that setup overlaps the
        runtime's prefill instead of adding to time to first token. The opening event waits for the first text: on a
        busy host, sending it during the prefill takes CPU from the runtime, and a failure before any text can then
        still be an HTTP error status.
        """
        outcome = _Outcome()
        texts = self._texts(job, outcome)
        first = asyncio.ensure_future(anext(texts, _END))

        def event(choices: list[Any], **extra: Any) -> str:
            return sse_event(
                chunk_type(id=job.request_id, created=job.created, model=job.model_name, choices=choices, **extra)
            )

        async def events() -> AsyncIterator[str]:
            splitter = splitter_for(reasoning_parser)
            # Serialized while the runtime prefills, so none of it is left for the first token to wait on.
            opened = event([opening]) if opening is not None else None
            content = EventTemplate(lambda text: event([piece(Split(content=text))]))
            reasoning = (
                EventTemplate(lambda text: event([piece(Split(reasoning=text))])) if splitter is not None else None
            )

            def piece_event(split: Split) -> str:
                # Pieces with only answer or only reasoning text (nearly all) fill a template; others are built whole.
                if split.content and not split.reasoning:
                    return content.fill(split.content)
                if split.reasoning and not split.content and reasoning is not None:
                    return reasoning.fill(split.reasoning)
                return event([piece(split)])

            text = await first
            if opened is not None:  # with the first text: nothing is sent while the runtime prefills
                yield opened
            while text is not _END:
                split = splitter.feed(text) if splitter is not None else Split(content=text)
                if split:
                    yield piece_event(split)
                text = await anext(texts, _END)
            if splitter is not None and (rest := splitter.finish()):
                yield event([piece(rest)])
            yield event([final(outcome.finish_reason)])
            if job.include_usage:
                yield event([], usage=outcome.usage(job.prompt_tokens))
            yield DONE_EVENT

        return _StartedStream(events(), texts, first)

    # --- completions -----------------------------------------------------------------------------------------------
    async def complete(self, request: CompletionRequest) -> CompletionResponse | AsyncIterator[str]:
        if request.logprobs is not None:  # 0 too: it asks for the chosen tokens' log probabilities
            raise OpenAIError(400, "logprobs are not supported yet.", param="logprobs")
        job = await self._prepare(request, request.prompt, add_special_tokens=True, prefix="cmpl")
        echoed = request.prompt if request.echo else ""
        if request.stream:
            return self._stream(
                job,
                CompletionChunk,
                opening=CompletionChoice(text=echoed, finish_reason=None) if echoed else None,
                piece=lambda split: CompletionChoice(text=split.content, finish_reason=None),
                final=lambda reason: CompletionChoice(text="", finish_reason=reason),
            )
        outcome = _Outcome()
        text = "".join([piece async for piece in self._texts(job, outcome)])
        return CompletionResponse(
            id=job.request_id,
            created=job.created,
            model=job.model_name,
            choices=[CompletionChoice(text=echoed + text, finish_reason=outcome.finish_reason)],
            usage=outcome.usage(job.prompt_tokens),
        )

    # --- shared ----------------------------------------------------------------------------------------------------
    async def _prepare(
        self, request: ChatCompletionRequest | CompletionRequest, prompt: str, *, add_special_tokens: bool, prefix: str
    ) -> _Job:
        if request.n != 1:
            raise OpenAIError(400, "n > 1 is not supported; send one request per completion.", param="n")
        entry_point = self.models.resolve(request.model)
        if not prompt or prompt.isspace():
            raise OpenAIError(400, "The prompt is empty.", param="prompt")
        prompt_param = "messages" if isinstance(request, ChatCompletionRequest) else "prompt"
        if self.prompts.is_long(len(prompt)) and (at_least := self.prompts.tokens_at_least(prompt)):
            # A prompt too long for the model by its length alone is refused before any tokenizing.
            self._max_tokens(request.requested_max_tokens(), at_least, prompt_param, at_least=True)
        prompt_ids = await self.prompts.encode(prompt, add_special_tokens)
        prompt_tokens = len(prompt_ids)
        max_tokens = self._max_tokens(request.requested_max_tokens(), prompt_tokens, prompt_param)
        try:
            # Asked before any streaming starts, so an unreachable Triton is a 503 rather than an error event.
            declared = await self.generator.model_inputs(entry_point)
        except GenerationError as exc:
            raise OpenAIError.from_generation(exc) from exc
        self._check_supported(request, declared, entry_point)
        min_tokens = max_tokens if request.ignore_eos else request.min_tokens
        if min_tokens and input_for("min_tokens", declared) is None:
            param = "ignore_eos" if request.ignore_eos else "min_tokens"
            raise OpenAIError(400, f"{param} is not supported by the model {entry_point!r}.", param=param)
        if min_tokens and min_tokens > max_tokens:
            raise OpenAIError(
                400, f"min_tokens ({min_tokens}) is larger than max_tokens ({max_tokens}).", param="min_tokens"
            )
        temperature, top_p, top_k = self.sampling_defaults.resolve(request.temperature, request.top_p, request.top_k)
        params = GenerationParams(
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            repetition_penalty=request.repetition_penalty,
            min_tokens=min_tokens,
            prompt_ids=prompt_ids,
            stop=tuple(request.stop_strings()),
            stream=request.stream,
        )
        return _Job(
            entry_point=entry_point,
            model_name=self.models.public_name(request.model),
            params=params,
            prompt_tokens=prompt_tokens,
            include_usage=request.include_usage(),
            request_id=f"{prefix}-{uuid.uuid4().hex}",
        )

    def _max_tokens(
        self, requested: int | None, prompt_tokens: int, prompt_param: str, *, at_least: bool = False
    ) -> int:
        """max_tokens for the request, or a 400 with the numbers; `at_least`: prompt_tokens is a floor, not a count."""
        limits = self.models.limits
        counted = f"at least {prompt_tokens}" if at_least else str(prompt_tokens)
        if limits.max_input_len is not None and prompt_tokens > limits.max_input_len:
            raise OpenAIError(
                400,
                f"The prompt has {counted} tokens; this model accepts at most {limits.max_input_len} input tokens.",
                param=prompt_param,
                code="context_length_exceeded",
            )
        if requested is not None and requested < 1:
            raise OpenAIError(400, f"max_tokens must be at least 1, got {requested}.", param="max_tokens")
        if limits.max_seq_len is None:
            return requested if requested is not None else self.max_tokens_cap
        room = limits.max_seq_len - prompt_tokens
        if requested is None:
            if room < 1:
                raise OpenAIError(
                    400,
                    f"The prompt has {counted} tokens, which leaves no room to generate "
                    f"within the model's {limits.max_seq_len} tokens.",
                    param=prompt_param,
                    code="context_length_exceeded",
                )
            return min(room, self.max_tokens_cap)
        if requested > room:
            raise OpenAIError(
                400,
                f"max_tokens is {requested} but the prompt has {counted} tokens and this "
                f"model handles at most {limits.max_seq_len} tokens in all, so at most "
                f"{max(room, 0)} can be generated.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return requested

    @staticmethod
    def _check_supported(request: Any, declared: set[str], entry_point: str) -> None:
        # A sampling parameter the entry model has no input for would be silently ignored; say so instead.
        names = ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty", "repetition_penalty")
        for name in names:
            if getattr(request, name) is not None and input_for(name, declared) is None:
                raise OpenAIError(400, f"{name} is not supported by the model {entry_point!r}.", param=name)

    async def _texts(self, job: _Job, outcome: _Outcome) -> AsyncIterator[str]:
        """The generated text in pieces: decoded across chunk borders and cut at the first stop string.

        Non-streamed responses join these same pieces, so streamed and non-streamed content are identical.
        """
        decoder = IncrementalText()
        matcher = StopStringMatcher(job.params.stop)
        received: list[GeneratedChunk] = []
        returned = 0  # UTF-8 bytes of the text handed out; usage counts only these when a stop string cut the rest
        observer = self.metrics.generation(job.model_name) if self.metrics is not None else None
        cancelled = False
        try:
            # aclosing: leaving early (stop string, client gone) closes the generator, which cancels the request.
            async with contextlib.aclosing(self.generator.generate(job.entry_point, job.params)) as chunks:
                async for chunk in chunks:
                    received.append(chunk)
                    outcome.reported_reason = chunk.finish_reason or outcome.reported_reason
                    if observer is not None:
                        observer.chunk(chunk.num_tokens or 1)
                    text, matched = matcher.feed(decoder.feed(chunk.text_bytes))
                    if text:
                        returned += len(text.encode())
                        yield text
                    if matched:
                        break
            if not matcher.matched:
                text, _ = matcher.feed(decoder.finish())
                tail = text + matcher.finish()
                if tail:
                    returned += len(tail.encode())
                    yield tail
        except GenerationError as exc:
            raise OpenAIError.from_generation(exc) from exc
        except (GeneratorExit, asyncio.CancelledError):
            cancelled = True  # the consumer stopped reading: the client went away or the server is stopping
            raise
        finally:
            outcome.completion_tokens = self._completion_tokens(received, returned if matcher.matched else None)
            if observer is not None:
                observer.finish(job.prompt_tokens, outcome.completion_tokens, cancelled=cancelled)
        if matcher.matched:
            outcome.finish_reason = "stop"
        elif outcome.reported_reason is not None:
            outcome.finish_reason = outcome.reported_reason
        else:
            # The end token is not part of the output, so reaching max_tokens is the only sign of truncation.
            outcome.finish_reason = "length" if outcome.completion_tokens >= job.params.max_tokens else "stop"

    def _completion_tokens(self, chunks: Sequence[GeneratedChunk], cut: int | None) -> int:
        """The generated tokens usage reports: all of them, or, when a stop string cut the text after `cut` bytes,
        those whose text was returned (text.tokens_before)."""
        if any(chunk.num_tokens is None for chunk in chunks):
            # The model does not report token counts: count by re-tokenizing what it generated (and returned).
            raw = b"".join(chunk.text_bytes for chunk in chunks)
            return self._count_text(raw if cut is None else raw[:cut])
        if cut is None:
            return sum(chunk.num_tokens or 0 for chunk in chunks)
        return tokens_before(cut, chunks, self._count_text)

    def _count_text(self, data: bytes) -> int:
        text = data.decode("utf-8", errors="replace")
        return len(self.tokenizer.encode(text, add_special_tokens=False)) if text else 0
