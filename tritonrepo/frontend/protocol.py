"""OpenAI API request and response shapes (pydantic models only, no behaviour beyond validation)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_serializer
from pydantic_core import PydanticCustomError


# --- errors --------------------------------------------------------------------------------------------------------
class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# --- requests ------------------------------------------------------------------------------------------------------
# The ranges of the tensors request fields are sent as (the entry models' INT32, UINT64 and FP32 inputs): a value
# outside them could not be sent at all, so it is refused here with the field's name instead.
INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1
FP32_MAX = 3.4028234663852886e38


def _unsupported(message: str) -> PydanticCustomError:
    """A feature this server does not implement; the router answers it as a 400 with this message and the field."""
    return PydanticCustomError("unsupported", "{message}", {"message": message})


class _Request(BaseModel):
    # strict: "max_tokens": "5" is rejected as OpenAI does. extra="forbid": a field this server does not know is a
    # 400 naming it (OpenAI answers "Unrecognized request argument"), never silently ignored.
    model_config = ConfigDict(strict=True, extra="forbid")


class TextContentPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    # "developer" is OpenAI's newer name for "system".
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextContentPart]
    name: str | None = None  # passed to the chat template, which may use it or not
    reasoning_content: str | None = None  # an earlier answer's reasoning (extension); passed to the chat template
    # Tool calling is not implemented: an assistant message may carry these fields only without a value.
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None
    refusal: str | None = None

    @field_validator("tool_calls", "function_call", "refusal")
    @classmethod
    def _no_tool_calls(cls, value: Any, info: ValidationInfo) -> Any:
        if value:
            raise _unsupported(f"'{info.field_name}' in a message is not supported: tool calling is not implemented.")
        return value

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)

    def for_template(self) -> dict[str, str]:
        """The message as chat templates read it: role, content, and name and reasoning_content when given."""
        message = {"role": "system" if self.role == "developer" else self.role, "content": self.text()}
        if self.name is not None:
            message["name"] = self.name
        if self.reasoning_content is not None:
            message["reasoning_content"] = self.reasoning_content
        return message


class StreamOptions(_Request):
    include_usage: bool = False


class _SamplingRequest(_Request):
    """Fields that chat and plain completions share."""

    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0, le=INT32_MAX)  # extension (vLLM, TensorRT-LLM); 0 means "not limited"
    seed: int | None = Field(None, ge=0, le=UINT64_MAX)  # Triton's random_seed is UINT64
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=128)
    presence_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(None, ge=-2, le=2, allow_inf_nan=False)
    # extension (vLLM, TensorRT-LLM): > 1 discourages tokens already in the prompt or the output, < 1 favours them
    repetition_penalty: float | None = Field(None, gt=0, le=FP32_MAX, allow_inf_nan=False)
    min_tokens: int | None = Field(None, ge=0, le=INT32_MAX)  # extension (vLLM, TensorRT-LLM): no end token before
    ignore_eos: bool = False  # extension (vLLM, TensorRT-LLM): generate max_tokens whatever the model says
    user: str | None = None  # end-user id for abuse monitoring at OpenAI; accepted and not used here
    # OpenAI features this server does not implement: accepted only with a value that asks for nothing.
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise _unsupported("logit_bias is not supported yet; leave it out (or send {}).")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_format_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value != {"type": "text"}:
            raise _unsupported(
                'response_format is not supported yet (no JSON mode or schemas); leave it out or send {"type": "text"}.'
            )
        return value

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return [s for s in stops if s]

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=INT32_MAX)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT32_MAX)  # OpenAI's newer name; wins over max_tokens
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # Tool (function) calling is not implemented: accepted only as "no tools".
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None  # only means something with tools
    functions: list[dict[str, Any]] | None = None  # OpenAI's deprecated form of tools
    function_call: str | dict[str, Any] | None = None

    @field_validator("tools", "functions")
    @classmethod
    def _no_tools(cls, value: list[dict[str, Any]] | None, info: ValidationInfo) -> list[dict[str, Any]] | None:
        if value:
            raise _unsupported(f"{info.field_name} are not supported yet (no function calling); leave them out.")
        return value

    @field_validator("tool_choice", "function_call")
    @classmethod
    def _no_tool_choice(cls, value: str | dict[str, Any] | None, info: ValidationInfo) -> Any:
        if value is not None and value != "none":
            raise _unsupported(
                f'{info.field_name} is not supported yet (no function calling); leave it out or send "none".'
            )
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_SamplingRequest):
    prompt: str
    max_tokens: int | None = Field(16, ge=1, le=INT32_MAX)  # OpenAI's default for /v1/completions
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=20)

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        # OpenAI allows a batch of prompts; one string in a list is the only batch we serve.
        if isinstance(value, list):
            if len(value) == 1 and isinstance(value[0], str):
                value = value[0]
            else:
                raise ValueError("only a single string prompt is supported (no token ids, no batches)")
        if isinstance(value, str) and not value:
            raise ValueError("prompt must not be empty")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise _unsupported("suffix is not supported yet (no text insertion); leave it out.")
        return value

    @field_validator("best_of")
    @classmethod
    def _one_candidate(cls, value: int | None) -> int | None:
        if value is not None and value > 1:
            raise _unsupported("best_of > 1 is not supported; send one request per completion.")
        return value

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


# --- responses -----------------------------------------------------------------------------------------------------
class UsageInfo(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class _WithoutNullReasoning(BaseModel):
    @model_serializer(mode="wrap")
    def _reasoning_only_when_set(self, handler: Any) -> dict[str, Any]:
        # reasoning_content is an extension (vLLM, trtllm-serve); responses of models that do not reason omit it.
        data = handler(self)
        if data.get("reasoning_content") is None:
            data.pop("reasoning_content", None)
        return data


class AssistantMessage(_WithoutNullReasoning):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: Any) -> dict[str, Any]:
        # OpenAI deltas carry only the keys that changed: {"role": ...} first, then {"content": ...}, then {}.
        return {key: value for key, value in handler(self).items() if value is not None}


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None


class _Chunk(BaseModel):
    @model_serializer(mode="wrap")
    def _usage_only_when_set(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("usage") is None:
            data.pop("usage", None)
        return data


class ChatCompletionChunk(_Chunk):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo


class CompletionChunk(_Chunk):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tritonrepo"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
