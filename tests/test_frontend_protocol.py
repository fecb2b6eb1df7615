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


def test_chat_request_accepts_openai_shape():
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
        # Beyond what the entry models' tensors hold (INT32, UINT64), or what OpenAI allows.
        ("top_k", 2**31),
        ("top_k", 2**40),
        ("top_k", 2**63),
        ("top_k", -1),
        ("max_tokens", 2**31),
        ("max_completion_tokens", 2**40),
        ("min_tokens", 2**31),
        ("min_tokens", -1),
        ("seed", 2**64),
        ("n", 129),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -2.01),
        ("repetition_penalty", 0),
        ("repetition_penalty", -1.0),
        ("repetition_penalty", 1e39),
        ("top_logprobs", 21),
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


@pytest.mark.parametrize(
    "field", ["temperature", "top_p", "presence_penalty", "frequency_penalty", "repetition_penalty"]
)
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused_naming_the_field(field, literal):
    body = f'{{"messages": [{{"role": "user", "content": "hi"}}], "{field}": {literal}}}'
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate_json(body)
    assert error_fields(caught.value) == {field}


def test_the_largest_values_the_tensors_hold_are_accepted():
    request = ChatCompletionRequest.model_validate(
        {"messages": MESSAGES, "top_k": 2**31 - 1, "seed": 2**64 - 1, "max_tokens": 2**31 - 1, "min_tokens": 2**31 - 1}
    )
    assert request.top_k == 2**31 - 1 and request.seed == 2**64 - 1


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}]}, "messages.0.tool_calls"),
    ],
)
def test_chat_features_this_server_lacks_are_refused_by_name(fields, where):
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate({"messages": MESSAGES, **fields})
    (error,) = caught.value.errors()
    assert error["type"] == "unsupported" and error_fields(caught.value) == {where}
    assert "not supported" in error["msg"]


def test_values_that_ask_for_no_feature_are_accepted():
    request = ChatCompletionRequest.model_validate(
        {
            "messages": [
                {"role": "assistant", "content": "a", "tool_calls": [], "refusal": None, "name": "bot"},
                {"role": "user", "content": "b", "name": "ann"},
            ],
            "tools": [],
            "tool_choice": "none",
            "functions": [],
            "function_call": "none",
            "response_format": {"type": "text"},
            "logit_bias": {},
            "parallel_tool_calls": False,
            "user": "someone",
        }
    )
    assert request.messages[1].for_template() == {"role": "user", "content": "b", "name": "ann"}
    completion = CompletionRequest.model_validate({"prompt": "p", "suffix": "", "best_of": 1, "user": "someone"})
    assert completion.best_of == 1


@pytest.mark.parametrize(("fields", "where"), [({"suffix": "end"}, "suffix"), ({"best_of": 3}, "best_of")])
def test_completion_features_this_server_lacks_are_refused_by_name(fields, where):
    with pytest.raises(ValidationError) as caught:
        CompletionRequest.model_validate({"prompt": "p", **fields})
    assert error_fields(caught.value) == {where} and caught.value.errors()[0]["type"] == "unsupported"


@pytest.mark.parametrize(
    "body",
    [
        {"messages": MESSAGES, "repetition_penalty_typo": 1.1},
        {"messages": MESSAGES, "min_p": 0.1},
        {"messages": [{"role": "user", "content": "hi", "cache_control": {}}]},
    ],
)
def test_unknown_fields_are_refused_not_ignored(body):
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(body)
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


def test_developer_messages_reach_the_template_as_system_with_their_reasoning():
    request = ChatCompletionRequest.model_validate(
        {
            "messages": [
                {"role": "developer", "content": "d"},
                {"role": "assistant", "content": "x", "reasoning_content": "r"},
            ]
        }
    )
    assert [m.for_template() for m in request.messages] == [
        {"role": "system", "content": "d"},
        {"role": "assistant", "content": "x", "reasoning_content": "r"},
    ]
