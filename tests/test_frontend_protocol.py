"""Tests for tritonrepo/frontend/protocol.py: request validation and response shapes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tritonrepo.frontend.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    CompletionRequest,
    DeltaMessage,
    UsageInfo,
)

MESSAGES = [{"role": "user", "content": "hi"}]


def error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(part) for part in error["loc"]) for error in exc.errors()}


def test_chat_request_accepts_openai_shape_and_ignores_unknown_fields():
    request = ChatCompletionRequest.model_validate(
        {
            "model": "tiny-llama",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ],
            "max_completion_tokens": 5,
            "max_tokens": 9,
            "temperature": 0,
            "stop": "x",
            "tool_choice": "none",
            "stream_options": {"include_usage": True},
            "stream": True,
        }
    )
    assert request.requested_max_tokens() == 5  # the newer name wins
    assert request.messages[1].text() == "a\nb"
    assert request.stop_strings() == ["x"]
    assert request.include_usage()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 2.5),
        ("temperature", -0.1),
        ("top_p", 1.5),
        ("max_tokens", 0),
        ("max_tokens", -3),
        ("max_completion_tokens", 0),
        ("n", 0),
        ("seed", -1),
        ("max_tokens", "5"),
        ("stream", "yes"),
    ],
)
def test_chat_request_rejects_out_of_range_or_wrong_type(field, value):
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate({"messages": MESSAGES, field: value})
    assert field in error_fields(caught.value)


def test_chat_request_needs_messages_with_known_roles_and_text_parts():
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": []})
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate({"messages": [{"role": "robot", "content": "x"}]})
    assert "messages.0.role" in error_fields(caught.value)
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
        )


def test_completion_request_defaults_and_single_prompt_list():
    request = CompletionRequest.model_validate({"prompt": ["once upon"]})
    assert request.prompt == "once upon"
    assert request.max_tokens == 16 and request.n == 1 and not request.stream
    assert request.stop_strings() == []


@pytest.mark.parametrize("prompt", ["", ["a", "b"], [[1, 2, 3]], 5])
def test_completion_request_rejects_empty_batched_or_token_prompts(prompt):
    with pytest.raises(ValidationError) as caught:
        CompletionRequest.model_validate({"prompt": prompt})
    assert "prompt" in error_fields(caught.value)


def test_stop_list_drops_empty_strings():
    request = CompletionRequest.model_validate({"prompt": "p", "stop": ["", "\n", "END"]})
    assert request.stop_strings() == ["\n", "END"]


def test_chunk_serialization_matches_openai_delta_shape():
    def dumped(delta: DeltaMessage, finish: str | None = None, usage: UsageInfo | None = None) -> dict:
        chunk = ChatCompletionChunk(
            id="c", created=1, model="m", choices=[ChatChunkChoice(delta=delta, finish_reason=finish)], usage=usage
        )
        return json.loads(chunk.model_dump_json())

    first = dumped(DeltaMessage(role="assistant", content=""))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["choices"][0]["finish_reason"] is None and "usage" not in first
    assert dumped(DeltaMessage(content="hé"))["choices"][0]["delta"] == {"content": "hé"}
    last = dumped(DeltaMessage(), "stop", UsageInfo(prompt_tokens=1, completion_tokens=2, total_tokens=3))
    assert last["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}
    assert last["usage"]["total_tokens"] == 3
