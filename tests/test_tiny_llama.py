"""Tests for the embedded default model `tiny-llama`."""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import sys

import pytest

from tritonrepo.source.tiny_llama import (
    ASSISTANT_TOKEN,
    BOS_TOKEN,
    EOS_TOKEN,
    THINK_END,
    THINK_START,
    TINY_LLAMA,
    TINY_LLAMA_NAME,
    USER_TOKEN,
    create_tiny_llama,
)

MULTI_BYTE = "Le café est prêt, naïve! Καλημέρα, Привет, 日本語 и 中文 🙂🚀 ∑≈π — 42 tokens."


def _digests(directory: pathlib.Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> pathlib.Path:
    return create_tiny_llama(tmp_path_factory.mktemp("tiny") / TINY_LLAMA_NAME)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def test_files_are_byte_identical_across_runs(tmp_path, model_dir):
    first = create_tiny_llama(tmp_path / "a")
    second = create_tiny_llama(tmp_path / "b")
    assert sorted(_digests(first)) == sorted(TINY_LLAMA.files)
    assert _digests(first) == _digests(second) == _digests(model_dir)


def test_seed_changes_weights_only(tmp_path, model_dir):
    other = _digests(create_tiny_llama(tmp_path / "seed1", seed=1))
    base = _digests(model_dir)
    assert other["model.safetensors"] != base["model.safetensors"]
    assert other["tokenizer.json"] == base["tokenizer.json"]


def test_replaces_existing_directory_atomically(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    create_tiny_llama(target)
    create_tiny_llama(target)
    assert sorted(p.name for p in target.iterdir()) == sorted(TINY_LLAMA.files)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging or old directories left behind


def test_concurrent_creators_all_succeed(tmp_path, model_dir):
    from concurrent.futures import ThreadPoolExecutor

    target = tmp_path / "shared"
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: create_tiny_llama(target), range(8)))
    assert results == [target] * 8
    assert _digests(target) == _digests(model_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["shared"]


def test_module_import_is_light():
    code = (
        "import sys, tritonrepo.source.tiny_llama; "
        "print(sorted(m for m in ('torch', 'transformers', 'tokenizers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_matches_tokenizer(model_dir, tokenizer):
    config = json.loads((model_dir / "config.json").read_text())
    generation = json.loads((model_dir / "generation_config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["vocab_size"] == len(tokenizer)
    assert 900 <= len(tokenizer) <= 1100
    assert config["bos_token_id"] == generation["bos_token_id"] == tokenizer.bos_token_id
    assert config["eos_token_id"] == generation["eos_token_id"] == tokenizer.eos_token_id
    assert config["pad_token_id"] == tokenizer.pad_token_id == tokenizer.eos_token_id
    assert config["dtype"] == "float32" and config["tie_word_embeddings"] is False


def test_encode_prepends_bos(tokenizer):
    ids = tokenizer.encode("Hello, world", add_special_tokens=True)
    assert ids[0] == tokenizer.convert_tokens_to_ids(BOS_TOKEN)
    assert ids.count(ids[0]) == 1
    assert tokenizer.encode("Hello, world", add_special_tokens=False)[0] != ids[0]


def test_multi_byte_round_trip_and_split_characters(tokenizer):
    ids = tokenizer.encode(MULTI_BYTE, add_special_tokens=False)
    assert tokenizer.decode(ids) == MULTI_BYTE
    split = [ch for ch in "🙂🚀€π" if len(tokenizer.encode(ch, add_special_tokens=False)) > 1]
    assert split, "no multi-byte character is split across tokens"
    # A lone prefix of a split character decodes to a replacement character, not the character itself.
    first = tokenizer.encode(split[0], add_special_tokens=False)[:1]
    assert tokenizer.decode(first) != split[0]


def test_special_and_think_tokens(tokenizer):
    for token in (BOS_TOKEN, EOS_TOKEN, USER_TOKEN, ASSISTANT_TOKEN, THINK_START, THINK_END):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    text = f"{BOS_TOKEN}{USER_TOKEN}hi{ASSISTANT_TOKEN}{THINK_START}hmm{THINK_END}ok{EOS_TOKEN}"
    decoded = tokenizer.decode(tokenizer.encode(text, add_special_tokens=False), skip_special_tokens=True)
    assert decoded == f"hi{THINK_START}hmm{THINK_END}ok"


def test_chat_template(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": f"{THINK_START}\nsecret reasoning\n{THINK_END}\n\nHello!"},
        {"role": "user", "content": [{"type": "text", "text": "Again"}]},
    ]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == (
        f"{BOS_TOKEN}Be brief.{USER_TOKEN}Hi{ASSISTANT_TOKEN}Hello!{EOS_TOKEN}"
        f"{USER_TOKEN}Again{ASSISTANT_TOKEN}{THINK_START}\n"
    )
    plain = tokenizer.apply_chat_template(messages[1:2], add_generation_prompt=False, tokenize=False)
    assert plain == f"{BOS_TOKEN}{USER_TOKEN}Hi"


def test_greedy_generate_is_varied(model_dir, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.vocab_size == len(tokenizer)
    all_new: list[int] = []
    for prompt in ("The café in 東京", "def fibonacci(n):"):
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=32, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1] :].tolist()
        assert len(new) == 32  # control tokens have zero logits, so generation runs to max_new_tokens
        assert len(set(new)) > 3
        all_new += new
    assert any(ord(ch) > 127 and ch != "\ufffd" for ch in tokenizer.decode(all_new))
