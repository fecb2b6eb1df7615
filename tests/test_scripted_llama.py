"""Tests for the embedded test model `scripted-llama`: greedy output is exactly its script, in transformers and hf_engine."""

from __future__ import annotations

import hashlib
import json
import pathlib
import threading

import pytest
from conftest import model_code_path

from tritonrepo.source.scripted_llama import (
    COMPLETION_PROMPT,
    DEFAULT_SCRIPT,
    SCRIPTED_LLAMA_NAME,
    THINK_SCRIPT,
    create_scripted_llama,
    expected_reasoning_and_answer,
)
from tritonrepo.source.tiny_llama import EOS_TOKEN, THINK_END, THINK_START, TINY_LLAMA

CONVERSATIONS = [
    [{"role": "user", "content": "What does 猫 mean?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "<think>greet</think>\n\nHello."},
        {"role": "user", "content": "The café in 東京 serves crêpes 🙂"},
    ],
]


def _digests(directory: pathlib.Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> pathlib.Path:
    return create_scripted_llama(tmp_path_factory.mktemp("scripted") / SCRIPTED_LLAMA_NAME)


@pytest.fixture(scope="module")
def think_model_dir(tmp_path_factory) -> pathlib.Path:
    return create_scripted_llama(tmp_path_factory.mktemp("scripted-think") / SCRIPTED_LLAMA_NAME, script=THINK_SCRIPT)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def _greedy(model, tokenizer, prompt: str, max_new_tokens: int = 100) -> list[int]:
    import torch

    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs.input_ids.shape[1] :].tolist()


def _chat_prompt(tokenizer, messages) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _script_ids(tokenizer, script: str) -> list[int]:
    return tokenizer(script, add_special_tokens=False).input_ids


@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["one-turn", "multi-turn"])
def test_chat_prompt_generates_the_script_then_eos(model, tokenizer, messages):
    prompt = _chat_prompt(tokenizer, messages)
    assert prompt.endswith(f"<｜Assistant｜>{THINK_START}\n")
    generated = _greedy(model, tokenizer, prompt)
    assert generated[-1] == tokenizer.eos_token_id
    assert generated[:-1] == _script_ids(tokenizer, DEFAULT_SCRIPT)  # stopped at the first EOS, nothing after it
    assert tokenizer.decode(generated[:-1]) == DEFAULT_SCRIPT
    assert tokenizer.decode(generated, skip_special_tokens=True) == DEFAULT_SCRIPT


@pytest.mark.parametrize("prompt", [COMPLETION_PROMPT, f"Something else entirely 🚀\n{COMPLETION_PROMPT}"])
def test_completion_prompt_generates_the_script_then_eos(model, tokenizer, prompt):
    generated = _greedy(model, tokenizer, tokenizer.bos_token + prompt)
    assert generated[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(generated[:-1]) == DEFAULT_SCRIPT


def test_other_prompts_end_at_once(model, tokenizer):
    assert _greedy(model, tokenizer, "Hello world") == [tokenizer.eos_token_id]


def test_max_new_tokens_shorter_than_the_script_truncates(model, tokenizer):
    prompt = _chat_prompt(tokenizer, CONVERSATIONS[0])
    generated = _greedy(model, tokenizer, prompt, max_new_tokens=8)
    assert generated == _script_ids(tokenizer, DEFAULT_SCRIPT)[:8]
    assert tokenizer.eos_token_id not in generated
    assert DEFAULT_SCRIPT.startswith(tokenizer.decode(generated).rstrip("\ufffd"))


def test_default_script_has_the_parts_the_reasoning_tests_need(tokenizer):
    reasoning, answer = expected_reasoning_and_answer(DEFAULT_SCRIPT)
    assert DEFAULT_SCRIPT == f"{reasoning}{THINK_END}{answer}"
    assert answer.startswith("\n\n") and answer.strip()
    assert any(ord(char) > 0xFFFF for char in reasoning)  # an emoji
    assert any(0x4E00 <= ord(char) <= 0x9FFF for char in reasoning)  # a CJK ideograph
    assert any(len(char.encode()) > 1 for char in answer.strip())
    ids = _script_ids(tokenizer, DEFAULT_SCRIPT)
    assert len(ids) == len(set(ids))
    assert tokenizer.convert_tokens_to_ids(THINK_END) in ids
    assert tokenizer.convert_tokens_to_ids(EOS_TOKEN) not in ids


def test_a_multibyte_character_spans_several_tokens(tokenizer):
    encoding = tokenizer(DEFAULT_SCRIPT, add_special_tokens=False, return_offsets_mapping=True)
    spans: dict[tuple[int, int], int] = {}
    for span in encoding.offset_mapping:
        spans[tuple(span)] = spans.get(tuple(span), 0) + 1
    split = {DEFAULT_SCRIPT[start:end] for (start, end), count in spans.items() if count > 1}
    reasoning, answer = expected_reasoning_and_answer(DEFAULT_SCRIPT)
    assert {char for char in split if char in reasoning and len(char.encode()) > 1}
    assert {char for char in split if char in answer and len(char.encode()) > 1}
    # Single tokens of a split character are not valid UTF-8 on their own: what streaming detokenizers must handle.
    assert any("\ufffd" in tokenizer.decode([token]) for token in encoding.input_ids)


def test_expected_reasoning_and_answer():
    assert expected_reasoning_and_answer(DEFAULT_SCRIPT) == (
        "Okay, so the user wrote 猫 — which means cat in Chinese (中文) 🙂. I should reply kindly and briefly.\n",
        "\n\nHello! Cats are lovely ✨",
    )
    # The model's own opening tag is dropped; the newline after it stays in the reasoning, as a parser leaves it.
    reasoning, answer = expected_reasoning_and_answer(THINK_SCRIPT)
    assert (reasoning, answer) == ("\n" + expected_reasoning_and_answer(DEFAULT_SCRIPT)[0], answer)
    assert expected_reasoning_and_answer("cut short while thinking") == ("cut short while thinking", "")


def test_files_load_with_auto_classes(model_dir, model, tokenizer):
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(TINY_LLAMA.files)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["vocab_size"] == len(tokenizer) == model.config.vocab_size
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert sum(p.numel() for p in model.parameters()) < 500_000  # stays tiny
    assert tokenizer.bos_token == "<｜begin▁of▁sentence｜>"
    assert tokenizer.decode(tokenizer(f"{THINK_START}x{THINK_END}").input_ids, skip_special_tokens=True) == (
        f"{THINK_START}x{THINK_END}"
    )


def test_building_twice_gives_identical_bytes(tmp_path, model_dir):
    assert _digests(create_scripted_llama(tmp_path / "again")) == _digests(model_dir)


def test_replaces_an_existing_directory(tmp_path, model_dir):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    create_scripted_llama(target)
    assert _digests(target) == _digests(model_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging or old directories left behind


def test_think_script_starts_with_the_tag_after_a_prompt_without_it(think_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(think_model_dir)
    model = AutoModelForCausalLM.from_pretrained(think_model_dir).eval()
    prompt = _chat_prompt(tokenizer, CONVERSATIONS[0])
    assert prompt.endswith("<｜Assistant｜>")
    for text in (prompt, tokenizer.bos_token + COMPLETION_PROMPT):
        generated = _greedy(model, tokenizer, text)
        assert generated[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(generated[:-1]) == THINK_SCRIPT


def test_custom_script(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    script = "Yes 🙂</think>\n\nOkay."
    target = create_scripted_llama(tmp_path / "custom", script=script)
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target).eval()
    generated = _greedy(model, tokenizer, tokenizer.bos_token + COMPLETION_PROMPT)
    assert tokenizer.decode(generated) == script + EOS_TOKEN


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("so so so", "must not repeat a token"),
        ("first\nsecond", "ends a prompt it starts from"),  # "\n" ends the chat template's prompt
        ("Answer: yes", "ends a prompt it starts from"),  # ":" ends COMPLETION_PROMPT
        (f"done{EOS_TOKEN}", "must not contain"),
        ("", "empty"),
    ],
)
def test_rejects_scripts_the_token_chain_cannot_express(tmp_path, script, message):
    with pytest.raises(ValueError, match=message):
        create_scripted_llama(tmp_path / "bad", script=script)
    assert not (tmp_path / "bad").exists()


def test_portable_runtime_engine_in_bfloat16_follows_the_script(model_dir, tokenizer):
    model_code_path("tensorrt_llm")
    from hf_engine import Engine, SamplingParams, Sequence

    engine = Engine(model_dir, device="cpu", dtype="bfloat16")  # the dtype the runtime picks on a GPU
    engine.start()
    try:
        results, done = [], threading.Event()

        def on_step(sequence, result):
            results.append(result)
            if result.finished:
                done.set()

        prompt_ids = tokenizer(_chat_prompt(tokenizer, CONVERSATIONS[1]), add_special_tokens=False).input_ids
        sequence = Sequence(
            prompt_ids=prompt_ids,
            params=SamplingParams(max_new_tokens=100, top_k=1),
            on_step=on_step,
            on_error=lambda sequence, error: (results.append(error), done.set()),
        )
        engine.submit(sequence)
        assert done.wait(60), "the engine did not finish the sequence"
    finally:
        engine.stop()
    assert results[-1].finish_reason == "end_id"
    assert sequence.output_ids == _script_ids(tokenizer, DEFAULT_SCRIPT)
    assert tokenizer.decode(sequence.output_ids) == DEFAULT_SCRIPT
