"""Tests for tritonrepo/frontend/serving.py (and the pure parts of triton_client.py) without a web server or Triton."""

from __future__ import annotations

import asyncio
import json

import pytest
from frontend_fixtures import REPLY, REPLY_CHUNKS, ScriptedGenerator, make_tokenizer_dir

from tritonrepo.frontend.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    DeltaMessage,
)
from tritonrepo.frontend.serving import ModelLimits, OpenAIError, OpenAIServing, ServedModels
from tritonrepo.frontend.triton_client import GenerationError, GenerationParams

LIMITS = ModelLimits(max_input_len=64, max_seq_len=128, max_batch_size=8)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(make_tokenizer_dir(tmp_path_factory.mktemp("tok") / "tokenizer")))


def make_serving(tokenizer, generator=None, limits=LIMITS, **kwargs):
    models = ServedModels(
        entry_points=("ensemble", "tensorrt_llm_bls"), default_entry_point="ensemble", alias="tiny-llama", limits=limits
    )
    return OpenAIServing(generator or ScriptedGenerator(), models, tokenizer, **kwargs)


def chat_request(**fields):
    return ChatCompletionRequest.model_validate(
        {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


async def collect(starting) -> list[dict | str]:
    """The SSE events of a stream (from serving.chat/complete, awaited here: the stream's generation starts in that
    call, so it must run on the loop that reads the stream), checking the wire format of each as it comes."""
    stream = await starting
    events = []
    async for line in stream:
        assert line.startswith("data: ") and line.endswith("\n\n"), line
        body = line[len("data: ") : -2]
        events.append(body if body == "[DONE]" else json.loads(body))
    return events


def chat_content(events) -> str:
    return "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])


def run(coro):
    return asyncio.run(coro)


# --- chat ----------------------------------------------------------------------------------------------------------
def test_chat_non_streamed_content_usage_and_request(tokenizer):
    generator = ScriptedGenerator()
    response = run(make_serving(tokenizer, generator).chat(chat_request(temperature=0.5, seed=7)))
    assert response.choices[0].message.content == REPLY
    assert response.choices[0].finish_reason == "stop"
    model, params = generator.calls[0]
    assert model == "ensemble" and params.stream is False and params.temperature == 0.5 and params.seed == 7
    assert params.prompt == "<s><|user|>\nhi\n<|assistant|>\n"  # the repository's own chat template
    prompt_tokens = len(tokenizer.encode(params.prompt, add_special_tokens=False))
    assert response.usage.model_dump() == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(REPLY_CHUNKS),
        "total_tokens": prompt_tokens + len(REPLY_CHUNKS),
    }
    assert response.model == "tiny-llama" and response.id.startswith("chatcmpl-")


def test_chat_stream_deltas_equal_non_streamed_content_despite_split_characters(tokenizer):
    serving = make_serving(tokenizer)
    events = run(collect(serving.chat(chat_request(stream=True))))
    assert events[-1] == "[DONE]"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[0]["object"] == "chat.completion.chunk"
    streamed = chat_content(events)
    assert "\ufffd" not in streamed
    assert streamed == run(serving.chat(chat_request())).choices[0].message.content == REPLY
    assert events[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}
    assert all("usage" not in e for e in events[:-1])


def test_chat_stream_usage_chunk_when_asked(tokenizer):
    serving = make_serving(tokenizer)
    events = run(collect(serving.chat(chat_request(stream=True, stream_options={"include_usage": True}))))
    usage_event = events[-2]
    assert usage_event["choices"] == []
    assert usage_event["usage"]["completion_tokens"] == len(REPLY_CHUNKS)
    assert usage_event["usage"]["total_tokens"] == usage_event["usage"]["prompt_tokens"] + len(REPLY_CHUNKS)


@pytest.mark.parametrize(("max_tokens", "reason"), [(len(REPLY_CHUNKS), "length"), (len(REPLY_CHUNKS) + 1, "stop")])
def test_finish_reason_length_only_when_max_tokens_reached(tokenizer, max_tokens, reason):
    response = run(make_serving(tokenizer).chat(chat_request(max_tokens=max_tokens)))
    assert response.choices[0].finish_reason == reason


@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_truncates_sets_stop_and_ends_generation(tokenizer, stream):
    generator = ScriptedGenerator()
    serving = make_serving(tokenizer, generator)
    # "🙂" arrives in three chunks; max_tokens equal to the chunk count would otherwise say "length".
    request = chat_request(stop=["🙂", "never"], max_tokens=len(REPLY_CHUNKS), stream=stream)
    if stream:
        events = run(collect(serving.chat(request)))
        content, reason = chat_content(events), events[-2]["choices"][0]["finish_reason"]
        assert generator.closed_early == 1  # stopping early closes the generation (Triton cancels it)
    else:
        response = run(serving.chat(request))
        content, reason = response.choices[0].message.content, response.choices[0].finish_reason
    assert (content, reason) == ("héllo ", "stop")
    assert generator.calls[0][1].stop == ("🙂", "never")


def test_completion_tokens_counted_by_tokenizer_when_model_reports_none(tokenizer):
    response = run(make_serving(tokenizer, ScriptedGenerator(tokens_per_chunk=None)).chat(chat_request(stream=False)))
    assert response.usage.completion_tokens == len(tokenizer.encode(REPLY, add_special_tokens=False))


def test_entry_points_are_served_by_their_triton_names(tokenizer):
    generator = ScriptedGenerator()
    response = run(make_serving(tokenizer, generator).chat(chat_request(model="tensorrt_llm_bls")))
    assert generator.calls[0][0] == "tensorrt_llm_bls" and response.model == "tensorrt_llm_bls"


def test_unknown_model_is_404_listing_served_names(tokenizer):
    with pytest.raises(OpenAIError) as caught:
        run(make_serving(tokenizer).chat(chat_request(model="gpt-4")))
    assert caught.value.status == 404 and caught.value.code == "model_not_found"
    assert "tiny-llama, ensemble, tensorrt_llm_bls" in caught.value.message


def test_list_models_alias_first_then_entry_points(tokenizer):
    models = run(make_serving(tokenizer).list_models())
    assert [card.id for card in models.data] == ["tiny-llama", "ensemble", "tensorrt_llm_bls"]
    assert models.data[0].max_model_len == 128


# --- limits and unsupported features -------------------------------------------------------------------------------
def expect_400(coro) -> OpenAIError:
    with pytest.raises(OpenAIError) as caught:
        run(coro)
    assert caught.value.status == 400, caught.value.message
    return caught.value


def test_prompt_longer_than_max_input_len_is_400_with_numbers(tokenizer):
    serving = make_serving(tokenizer, limits=ModelLimits(max_input_len=5, max_seq_len=128))
    prompt_tokens = len(tokenizer.encode("<s><|user|>\nhi\n<|assistant|>\n", add_special_tokens=False))
    error = expect_400(serving.chat(chat_request()))
    assert f"{prompt_tokens} tokens" in error.message and "at most 5" in error.message
    assert error.code == "context_length_exceeded"


def test_max_tokens_beyond_sequence_room_is_400_with_numbers(tokenizer):
    error = expect_400(make_serving(tokenizer).chat(chat_request(max_tokens=500)))
    assert "500" in error.message and "128" in error.message and error.param == "max_tokens"


def test_max_tokens_below_one_is_400_even_when_validation_is_bypassed(tokenizer):
    request = chat_request()
    request.max_tokens = 0  # model_validate already refuses 0; serving must not rely on that alone
    assert expect_400(make_serving(tokenizer).chat(request)).param == "max_tokens"


def test_default_max_tokens_is_the_room_left_capped(tokenizer):
    generator = ScriptedGenerator()
    run(make_serving(tokenizer, generator).chat(chat_request()))
    prompt_tokens = len(tokenizer.encode(generator.calls[0][1].prompt, add_special_tokens=False))
    assert generator.calls[0][1].max_tokens == 128 - prompt_tokens
    run(make_serving(tokenizer, generator, max_tokens_cap=10).chat(chat_request()))
    assert generator.calls[1][1].max_tokens == 10
    run(make_serving(tokenizer, generator, limits=ModelLimits(), max_tokens_cap=33).chat(chat_request()))
    assert generator.calls[2][1].max_tokens == 33


def test_n_above_one_and_logprobs_are_refused(tokenizer):
    assert "not supported" in expect_400(make_serving(tokenizer).chat(chat_request(n=2))).message
    assert "not supported yet" in expect_400(make_serving(tokenizer).chat(chat_request(logprobs=True))).message
    assert expect_400(make_serving(tokenizer).complete(CompletionRequest(prompt="p", logprobs=2))).param == "logprobs"
    # logprobs 0 still asks for the chosen tokens' log probabilities: refused, not silently dropped
    assert expect_400(make_serving(tokenizer).complete(CompletionRequest(prompt="p", logprobs=0))).param == "logprobs"


def test_tokenizer_without_chat_template_is_a_clear_400(tmp_path):
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(str(make_tokenizer_dir(tmp_path / "plain", chat_template=None)))
    assert "no chat template" in expect_400(make_serving(plain).chat(chat_request())).message


def test_sampling_parameter_the_model_lacks_is_refused(tokenizer):
    generator = ScriptedGenerator(inputs={"text_input", "max_tokens", "stream", "temperature"})
    assert expect_400(make_serving(tokenizer, generator).chat(chat_request(seed=1))).param == "seed"
    assert expect_400(make_serving(tokenizer, generator).chat(chat_request(repetition_penalty=1.2))).param == (
        "repetition_penalty"
    )
    assert run(make_serving(tokenizer, generator).chat(chat_request(temperature=1.0))).choices[0].message.content


def test_repetition_penalty_reaches_a_model_that_takes_it(tokenizer):
    generator = ScriptedGenerator(inputs={"text_input", "max_tokens", "stream", "repetition_penalty"})
    run(make_serving(tokenizer, generator).chat(chat_request(repetition_penalty=1.3)))
    assert generator.calls[0][1].repetition_penalty == 1.3


def test_message_names_and_reasoning_reach_the_chat_template(tokenizer):
    generator = ScriptedGenerator()
    template = (
        "{% for m in messages %}[{{ m['name'] | default('-') }}/{{ m['reasoning_content'] | default('') }}]{% endfor %}"
    )
    messages = [
        {"role": "user", "content": "hi", "name": "ann"},
        {"role": "assistant", "content": "x", "reasoning_content": "r"},
    ]
    run(make_serving(tokenizer, generator, chat_template=template).chat(chat_request(messages=messages)))
    assert generator.calls[0][1].prompt == "[ann/][-/r]"


# --- sampling defaults (item: temperature > 0 must sample; absent values follow the checkpoint) -------------------
def sampled_params(tokenizer, defaults=None, **fields):
    from tritonrepo.frontend.sampling import SamplingDefaults

    generator = ScriptedGenerator()
    sampling = SamplingDefaults.from_generation_config(defaults) if defaults is not None else None
    run(make_serving(tokenizer, generator, sampling_defaults=sampling).chat(chat_request(**fields)))
    params = generator.calls[0][1]
    return params.temperature, params.top_p, params.top_k


def test_without_a_recorded_default_a_request_gets_openais_sampling(tokenizer):
    assert sampled_params(tokenizer) == (1.0, 1.0, None)  # OpenAI's defaults: temperature 1, top_p 1
    assert sampled_params(tokenizer, {}) == (1.0, 1.0, None)
    assert sampled_params(tokenizer, temperature=0.7) == (0.7, 1.0, None)
    assert sampled_params(tokenizer, temperature=0) == (0.0, None, None)  # greedy takes no top_p default
    assert sampled_params(tokenizer, temperature=0.5, top_p=0.2, top_k=3) == (0.5, 0.2, 3)


def test_absent_values_follow_the_checkpoints_generation_config(tokenizer):
    qwen_like = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20}
    assert sampled_params(tokenizer, qwen_like) == (0.7, 0.8, 20)
    assert sampled_params(tokenizer, qwen_like, temperature=1.0) == (1.0, 0.8, 20)
    assert sampled_params(tokenizer, qwen_like, temperature=0) == (0.0, None, None)
    # do_sample false means greedy, as in transformers, whatever temperature the file also holds
    greedy = {"do_sample": False, "temperature": 0.9}
    assert sampled_params(tokenizer, greedy) == (0.0, None, None)
    assert sampled_params(tokenizer, greedy, temperature=0.8) == (0.8, 1.0, None)
    # values no request could carry are not defaults
    assert sampled_params(tokenizer, {"temperature": "hot", "top_p": 7, "top_k": True}) == (1.0, 1.0, None)


# --- usage after a stop string: only the tokens of the returned text ----------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_completion_tokens_count_only_the_returned_text_when_a_stop_string_cuts_it(tokenizer, stream):
    # REPLY_CHUNKS hold one token each: "h\xc3" | "\xa9llo \xf0" | ... ; "🙂" starts inside the second chunk, so the
    # returned "héllo " comes from the first two tokens (the second only in part); the stop string's are not counted.
    request = chat_request(stop=["🙂"], stream=stream, stream_options={"include_usage": True} if stream else None)
    serving = make_serving(tokenizer, ScriptedGenerator())
    if stream:
        usage = run(collect(serving.chat(request)))[-2]["usage"]
    else:
        usage = run(serving.chat(request)).usage.model_dump()
    # Non-streamed, the one response holds all six tokens: its returned part is counted by tokenizing it.
    expected = 2 if stream else len(tokenizer.encode("héllo ", add_special_tokens=False))
    assert usage["completion_tokens"] == expected
    assert usage["total_tokens"] == usage["prompt_tokens"] + expected


def test_completion_tokens_after_a_stop_string_are_exact_with_token_sizes(tokenizer):
    from tritonrepo.frontend.triton_client import GeneratedChunk

    class RuntimeModel(ScriptedGenerator):  # the runtime model's answer: token ids, so each token's size is known
        async def generate(self, model, request):
            self.calls.append((model, request))
            yield GeneratedChunk(b"one two three four", num_tokens=4, token_sizes=(3, 4, 6, 5))

    serving = make_serving(tokenizer, RuntimeModel())
    for stop, expected_text, expected_tokens in [
        (" three", "one two", 2),  # the cut falls between tokens
        ("hree", "one two t", 3),  # the cut splits " three": its text was returned in part, so it counts
        ("one", "", 0),
    ]:
        response = run(serving.complete(CompletionRequest(prompt="p", stop=[stop], max_tokens=4)))
        assert (response.choices[0].text, response.usage.completion_tokens) == (expected_text, expected_tokens)
    whole = run(serving.complete(CompletionRequest(prompt="p", max_tokens=4)))
    assert whole.usage.completion_tokens == 4 and whole.choices[0].finish_reason == "length"


# --- errors and cancellation ---------------------------------------------------------------------------------------
def test_triton_unavailable_fails_before_the_stream_starts(tokenizer):
    generator = ScriptedGenerator(error=GenerationError(503, "Triton is down"))
    with pytest.raises(OpenAIError) as caught:
        run(make_serving(tokenizer, generator).chat(chat_request(stream=True)))
    assert caught.value.status == 503 and not generator.calls


def test_generation_error_mid_stream_surfaces_as_openai_error(tokenizer):
    generator = ScriptedGenerator(error=GenerationError(400, "bad stop words"), error_after=2)

    with pytest.raises(OpenAIError) as caught:
        run(collect(make_serving(tokenizer, generator).chat(chat_request(stream=True))))
    assert caught.value.status == 400 and caught.value.message == "bad stop words"


def test_closing_the_stream_early_closes_the_generation(tokenizer):
    generator = ScriptedGenerator(hang_after=2)

    async def consume_two_then_leave():
        stream = await make_serving(tokenizer, generator).chat(chat_request(stream=True))
        first, second = await anext(stream), await anext(stream)
        await stream.aclose()  # what the router does when the HTTP client goes away
        return first, second

    first, second = run(consume_two_then_leave())
    assert '"role":"assistant"' in first and '"content":"h"' in second
    assert generator.closed_early == 1 and generator.finished == 0


def test_the_generation_starts_with_the_stream_and_closing_it_unread_cancels_it(tokenizer):
    generator = ScriptedGenerator(hang_after=0)

    async def start_then_leave():
        stream = await make_serving(tokenizer, generator).chat(chat_request(stream=True))
        # Triton is asked before anyone reads the stream (the web layer sets up its response meanwhile) ...
        await asyncio.wait_for(generator.hanging.wait(), 5)
        started = len(generator.calls)
        await stream.aclose()  # ... and a client gone before the response started still cancels the request
        return started

    assert run(start_then_leave()) == 1
    assert generator.closed_early == 1 and generator.finished == 0


def test_the_opening_event_waits_for_the_first_text(tokenizer):
    generator = ScriptedGenerator(hang_after=0)  # the runtime is still prefilling: no text yet

    async def read_while_prefilling():
        stream = await make_serving(tokenizer, generator).chat(chat_request(stream=True))
        reading = asyncio.ensure_future(anext(stream))
        await asyncio.wait_for(generator.hanging.wait(), 5)
        for _ in range(10):  # an opening sent ahead of the text would have arrived by now
            await asyncio.sleep(0)
        waiting = not reading.done()
        reading.cancel()
        await asyncio.wait({reading})
        await stream.aclose()
        return waiting

    assert run(read_while_prefilling())
    assert generator.closed_early == 1


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        'quote " backslash \\ slash /',
        "controls \x00\x01\x1f\x7f\t\n\r\b\f",
        "é 🙂 猫 \u2028\u2029",
        "fill" + "0" * 32,
    ],
)
def test_event_templates_serialize_exactly_as_the_models_do(text):
    from tritonrepo.frontend.serving import EventTemplate, sse_event

    def chat(content=None, reasoning=None):
        delta = DeltaMessage(content=content, reasoning_content=reasoning)
        return sse_event(ChatCompletionChunk(id="c-1", created=7, model="m", choices=[ChatChunkChoice(delta=delta)]))

    def completion(piece):
        choice = CompletionChoice(text=piece, finish_reason=None)
        return sse_event(CompletionChunk(id="c-1", created=7, model="m", choices=[choice]))

    assert EventTemplate(lambda t: chat(content=t)).fill(text) == chat(content=text)
    assert EventTemplate(lambda t: chat(reasoning=t)).fill(text) == chat(reasoning=text)
    assert EventTemplate(completion).fill(text) == completion(text)


# --- completions ---------------------------------------------------------------------------------------------------
def test_completion_non_streamed_with_echo_and_bos_counted(tokenizer):
    generator = ScriptedGenerator()
    response = run(make_serving(tokenizer, generator).complete(CompletionRequest(prompt="Once", echo=True)))
    assert response.choices[0].text == "Once" + REPLY
    assert response.object == "text_completion" and response.id.startswith("cmpl-")
    assert response.usage.prompt_tokens == len(tokenizer.encode("Once", add_special_tokens=True))
    assert generator.calls[0][1].max_tokens == 16  # OpenAI's default for completions
    assert generator.calls[0][1].prompt == "Once"


def test_completion_stream_matches_non_streamed(tokenizer):
    serving = make_serving(tokenizer)
    events = run(collect(serving.complete(CompletionRequest(prompt="Once", stream=True, stop=["wör"]))))
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"
    streamed = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert streamed == run(serving.complete(CompletionRequest(prompt="Once", stop=["wör"]))).choices[0].text
    assert streamed == "héllo 🙂 "


def test_blank_prompt_is_400(tokenizer):
    assert expect_400(make_serving(tokenizer).complete(CompletionRequest(prompt="   "))).param == "prompt"


# --- triton_client.py: the pure parts (the gRPC path itself needs a tritonserver) ----------------------------------
def entry_model(batched=True, extra=()):
    from tritonrepo.frontend.triton_client import EntryModel

    types = {
        "text_input": "BYTES",
        "max_tokens": "INT32",
        "stream": "BOOL",
        "exclude_input_in_output": "BOOL",
        "temperature": "FP32",
        "top_k": "INT32",
        "random_seed": "UINT64",
        "stop_words": "BYTES",
    }
    types.update(dict(extra))
    return EntryModel(input_types=types, batched=batched)


def sent(inputs) -> dict:
    return {tensor.name: (tensor.datatype, tensor.shape) for tensor in inputs}


def test_tensors_are_in_tritons_raw_wire_format_and_reach_the_request():
    import numpy as np
    from tritonclient.utils import deserialize_bytes_tensor

    from tritonrepo.frontend.triton_client import build_inputs, build_request

    params = GenerationParams(prompt="hé", max_tokens=5, temperature=0.5, seed=2**63 + 1, stop=("a", "bc"))
    tensors = {tensor.name: tensor for tensor in build_inputs(entry_model(), params)}
    # Decoded with tritonclient's own readers, so the bytes are what Triton expects.
    assert list(deserialize_bytes_tensor(tensors["text_input"].data)) == ["hé".encode()]
    assert list(deserialize_bytes_tensor(tensors["stop_words"].data)) == [b"a", b"bc"]
    assert np.frombuffer(tensors["max_tokens"].data, np.int32).tolist() == [5]
    assert np.frombuffer(tensors["temperature"].data, np.float32).tolist() == [0.5]
    assert np.frombuffer(tensors["random_seed"].data, np.uint64).tolist() == [2**63 + 1]
    assert np.frombuffer(tensors["stream"].data, np.bool_).tolist() == [True]
    request = build_request("ensemble", "req-1", list(tensors.values()))
    assert request.model_name == "ensemble" and request.id == "req-1"
    assert [(i.name, i.datatype, list(i.shape)) for i in request.inputs] == [
        (t.name, t.datatype, t.shape) for t in tensors.values()
    ]
    assert list(request.raw_input_contents) == [t.data for t in tensors.values()]


def test_build_inputs_sends_only_declared_inputs_with_batch_dim():
    from tritonrepo.frontend.triton_client import build_inputs

    params = GenerationParams(prompt="hé", max_tokens=5, temperature=0.7, top_p=0.9, seed=3, stop=("a", "bc"))
    tensors = sent(build_inputs(entry_model(), params))
    assert tensors == {
        "text_input": ("BYTES", [1, 1]),
        "max_tokens": ("INT32", [1, 1]),
        "stream": ("BOOL", [1, 1]),
        "exclude_input_in_output": ("BOOL", [1, 1]),
        "temperature": ("FP32", [1, 1]),
        "random_seed": ("UINT64", [1, 1]),
        "stop_words": ("BYTES", [1, 2]),
    }  # no top_p declared
    unbatched = sent(build_inputs(entry_model(batched=False), params))
    assert unbatched["max_tokens"] == ("INT32", [1]) and unbatched["stop_words"] == ("BYTES", [2])


@pytest.mark.parametrize(
    ("extra", "top_p_input"),
    [({"top_p": "FP32"}, "top_p"), ({"runtime_top_p": "FP32"}, "runtime_top_p")],
)
def test_temperature_above_zero_without_top_p_samples_from_the_whole_distribution(extra, top_p_input):
    import numpy as np

    from tritonrepo.frontend.triton_client import build_inputs

    # TensorRT-LLM and the portable runtime decode greedily when top_p and top_k are both 0 (their defaults).
    tensors = {
        t.name: t
        for t in build_inputs(entry_model(extra=extra), GenerationParams(prompt="x", max_tokens=1, temperature=0.7))
    }
    assert np.frombuffer(tensors[top_p_input].data, np.float32).tolist() == [1.0]
    assert np.frombuffer(tensors["temperature"].data, np.float32).tolist() == pytest.approx([0.7])
    given = GenerationParams(prompt="x", max_tokens=1, temperature=0.7, top_p=0.25)
    tensors = {t.name: t for t in build_inputs(entry_model(extra=extra), given)}
    assert np.frombuffer(tensors[top_p_input].data, np.float32).tolist() == [0.25]


def test_the_largest_values_requests_may_carry_fit_their_tensors():
    import numpy as np

    from tritonrepo.frontend.protocol import INT32_MAX, UINT64_MAX
    from tritonrepo.frontend.triton_client import build_inputs

    params = GenerationParams(prompt="x", max_tokens=INT32_MAX, temperature=2.0, top_k=INT32_MAX, seed=UINT64_MAX)
    tensors = {t.name: t for t in build_inputs(entry_model(), params)}
    assert np.frombuffer(tensors["top_k"].data, np.int32).tolist() == [INT32_MAX]
    assert np.frombuffer(tensors["random_seed"].data, np.uint64).tolist() == [UINT64_MAX]


def test_temperature_zero_becomes_greedy_top_k():
    from tritonrepo.frontend.triton_client import build_inputs

    greedy = GenerationParams(prompt="x", max_tokens=1, temperature=0.0)
    tensors = sent(build_inputs(entry_model(), greedy))
    assert "temperature" not in tensors and "top_k" in tensors
    without_top_k = entry_model()
    del without_top_k.input_types["top_k"]
    assert "temperature" in sent(build_inputs(without_top_k, greedy))  # no better way to ask for greedy


def test_parse_result_joins_bytes_and_reads_final_flag():
    import struct

    import numpy as np
    from tritonclient.grpc import service_pb2

    from tritonrepo.frontend.triton_client import parse_result

    response = service_pb2.ModelInferResponse(model_name="ensemble")
    response.outputs.add(name="text_output", datatype="BYTES", shape=[1, 1])
    response.raw_output_contents.append(struct.pack("<I", 2) + b"h\xc3")  # Triton's BYTES wire format
    response.outputs.add(name="num_output_tokens", datatype="INT32", shape=[1, 1])
    response.raw_output_contents.append(np.array([[2]], dtype=np.int32).tobytes())
    chunk, final = parse_result(response)
    assert chunk.text_bytes == b"h\xc3" and chunk.num_tokens == 2 and not final

    empty_final = service_pb2.ModelInferResponse(model_name="ensemble")
    empty_final.parameters["triton_final_response"].bool_param = True
    assert parse_result(empty_final) == (None, True)


@pytest.mark.parametrize(
    ("code", "message", "status"),
    [
        ("StatusCode.INVALID_ARGUMENT", "anything", 400),
        ("StatusCode.UNAVAILABLE", "failed to connect", 503),
        (None, "[request id: 1] unexpected shape for input 'max_tokens'", 400),
        (None, "Request for unknown model: 'ensemble' is not found", 503),
        (None, "CUDA out of memory", 500),
    ],
)
def test_status_for_triton_errors(code, message, status):
    from tritonrepo.frontend.triton_client import status_for

    assert status_for(code, message) == status


# --- reasoning, min_tokens/ignore_eos, chat template override, llmapi inputs -----------------------------------------
THOUGHT = [b"Let me ", b"think \xe6\x80", b"\x9d</th", b"ink>\n\nIt is ", b"\xe7\x8c\xab."]  # split chars and tag


def test_chat_reasoning_split_whole_and_streamed_agree(tokenizer):
    generator = ScriptedGenerator(THOUGHT)
    serving = make_serving(tokenizer, generator, reasoning_parser="deepseek-r1")
    whole = run(serving.chat(chat_request())).model_dump()["choices"][0]["message"]
    assert whole == {"role": "assistant", "content": "\n\nIt is 猫.", "reasoning_content": "Let me think 思"}
    events = run(collect(serving.chat(chat_request(stream=True))))
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == whole["reasoning_content"]
    assert "".join(d.get("content", "") for d in deltas) == whole["content"]
    assert not any("</" in d.get("reasoning_content", "") for d in deltas)  # the split tag never leaks


def test_without_a_reasoning_parser_the_tags_stay_in_the_content(tokenizer):
    message = run(make_serving(tokenizer, ScriptedGenerator(THOUGHT)).chat(chat_request())).model_dump()
    assert message["choices"][0]["message"] == {"role": "assistant", "content": "Let me think 思</think>\n\nIt is 猫."}


def test_ignore_eos_sends_min_tokens_equal_to_max_tokens(tokenizer):
    generator = ScriptedGenerator(inputs={"text_input", "max_tokens", "stream", "min_length"})
    run(make_serving(tokenizer, generator).chat(chat_request(max_tokens=7, ignore_eos=True)))
    run(make_serving(tokenizer, generator).chat(chat_request(max_tokens=7, min_tokens=3)))
    assert [params.min_tokens for _, params in generator.calls] == [7, 3]


def test_min_tokens_on_a_model_without_that_input_or_above_max_tokens_is_400(tokenizer):
    plain = make_serving(tokenizer, ScriptedGenerator(inputs={"text_input", "max_tokens", "stream"}))
    assert expect_400(plain.chat(chat_request(ignore_eos=True))).param == "ignore_eos"
    capable = make_serving(tokenizer, ScriptedGenerator(inputs={"text_input", "max_tokens", "stream", "min_tokens"}))
    assert expect_400(capable.chat(chat_request(max_tokens=2, min_tokens=5))).param == "min_tokens"


def test_chat_template_override_replaces_the_tokenizers(tokenizer):
    generator = ScriptedGenerator()
    template = "{% for m in messages %}<<{{ m['role'] }}:{{ m['content'] }}>>{% endfor %}ASSISTANT:"
    run(make_serving(tokenizer, generator, chat_template=template).chat(chat_request()))
    assert generator.calls[0][1].prompt == "<<user:hi>>ASSISTANT:"


def test_a_model_reported_finish_reason_wins_over_the_length_guess(tokenizer):
    from tritonrepo.frontend.triton_client import GeneratedChunk

    class Reporting(ScriptedGenerator):
        async def generate(self, model, request):
            yield GeneratedChunk(b"short", num_tokens=1, finish_reason="length")

    response = run(make_serving(tokenizer, Reporting()).chat(chat_request(max_tokens=50)))
    assert response.choices[0].finish_reason == "length"


def test_llmapi_model_inputs_and_its_cumulative_text():
    from tritonrepo.frontend.triton_client import EntryModel, GeneratedChunk, build_inputs, new_text

    llmapi = EntryModel(
        input_types={
            "text_input": "BYTES",
            "streaming": "BOOL",
            "sampling_param_max_tokens": "INT32",
            "sampling_param_temperature": "FP32",
            "sampling_param_seed": "UINT64",
            "exclude_input_from_output": "BOOL",
            "return_finish_reason": "BOOL",
        },
        batched=True,
    )
    params = GenerationParams(prompt="hi", max_tokens=9, temperature=0.5, seed=1, top_p=0.3)
    assert set(sent(build_inputs(llmapi, params))) == {
        "text_input",
        "streaming",
        "sampling_param_max_tokens",
        "sampling_param_temperature",
        "sampling_param_seed",
        "exclude_input_from_output",
        "return_finish_reason",
    }
    assert llmapi.cumulative_text and not entry_model().cumulative_text
    assert new_text(GeneratedChunk(b"Hello wor"), b"Hello").text_bytes == b" wor"
    assert new_text(GeneratedChunk(b"other"), b"Hello").text_bytes == b"other"


# --- the fast path: the alias streams straight from the runtime model ----------------------------------------------
def test_the_alias_goes_to_the_runtime_model_and_named_entry_points_stay_themselves(tokenizer):
    models = ServedModels(
        entry_points=("ensemble", "tensorrt_llm_bls"),
        default_entry_point="ensemble",
        alias="m",
        fast_path="tensorrt_llm",
    )
    assert models.resolve("m") == "tensorrt_llm" and models.resolve(None) == "tensorrt_llm"
    assert models.resolve("ensemble") == "ensemble" and models.names() == ["m", "ensemble", "tensorrt_llm_bls"]
    generator = ScriptedGenerator()
    serving = OpenAIServing(generator, models, tokenizer)
    run(serving.complete(CompletionRequest(model="m", prompt="hello there", max_tokens=3)))
    model, params = generator.calls[0]
    assert model == "tensorrt_llm" and params.prompt_ids == tuple(tokenizer.encode("hello there"))


def test_runtime_model_inputs_are_token_ids_and_its_output_ids_become_exact_bytes():
    import numpy as np
    from tritonclient.grpc import service_pb2

    from tritonrepo.frontend.triton_client import EntryModel, build_inputs, parse_result

    runtime = EntryModel(
        input_types={
            "input_ids": "INT32",
            "input_lengths": "INT32",
            "request_output_len": "INT32",
            "streaming": "BOOL",
            "runtime_top_k": "INT32",
            "runtime_top_p": "FP32",
            "temperature": "FP32",
            "min_length": "INT32",
            "exclude_input_in_output": "BOOL",
            "stop": "BOOL",
        },
        batched=True,
    )
    params = GenerationParams(prompt="ignored", prompt_ids=(5, 6, 7), max_tokens=4, temperature=0, top_p=0.5)
    tensors = sent(build_inputs(runtime, params))
    assert tensors == {
        "input_ids": ("INT32", [1, 3]),
        "input_lengths": ("INT32", [1, 1]),
        "request_output_len": ("INT32", [1, 1]),
        "streaming": ("BOOL", [1, 1]),
        "runtime_top_k": ("INT32", [1, 1]),  # temperature 0 -> greedy
        "runtime_top_p": ("FP32", [1, 1]),
        "exclude_input_in_output": ("BOOL", [1, 1]),
    }
    response = service_pb2.ModelInferResponse(model_name="tensorrt_llm")
    response.outputs.add(name="output_ids", datatype="INT32", shape=[1, 1, 2])
    response.raw_output_contents.append(np.array([[[1, 2]]], dtype=np.int32).tobytes())
    chunk, _ = parse_result(response, token_bytes=[b"", b"\xe7\x8c", b"\xab!"])
    assert chunk.text_bytes == "猫!".encode() and chunk.num_tokens == 2 and chunk.token_sizes == (2, 2)


def test_an_own_decoupled_repository_gets_the_fast_path_and_others_do_not(tmp_path):
    from frontend_fixtures import make_repository

    from tritonrepo.frontend.app import load_repository_info

    tokenizer_dir = make_tokenizer_dir(tmp_path / "tok")
    ours = make_repository(tmp_path / "ours", tokenizer_dir)
    manifest = json.loads((ours / "tritonrepo.json").read_text())
    manifest["parameters"] = {"decoupled_mode": True, "tensorrt_llm_model_name": "tensorrt_llm"}
    (ours / "tritonrepo.json").write_text(json.dumps(manifest))
    assert load_repository_info(ours).models.fast_path == "tensorrt_llm"
    manifest["parameters"]["decoupled_mode"] = False  # streaming straight from the runtime needs it decoupled
    (ours / "tritonrepo.json").write_text(json.dumps(manifest))
    assert load_repository_info(ours).models.fast_path is None
