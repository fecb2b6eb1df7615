"""postprocessing's token byte table: decoding is concatenation, equal to the tokenizer's own decode."""

from __future__ import annotations

import random

import pytest
from conftest import model_code_path

model_code_path("postprocessing")
from token_bytes import token_byte_table  # noqa: E402


def _decode(table, ids):
    return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")


def test_table_decode_equals_tokenizer_decode_for_random_sequences(tiny_tokenizer):
    table = token_byte_table(tiny_tokenizer, skip_special_tokens=True)
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(len(tiny_tokenizer)) for _ in range(rng.randrange(1, 30))]
        assert _decode(table, ids) == tiny_tokenizer.decode(ids, skip_special_tokens=True)


def test_any_split_of_a_sequence_concatenates_to_the_whole_text(tiny_tokenizer):
    table = token_byte_table(tiny_tokenizer, skip_special_tokens=True)
    text = "naïve café 🙂 東京 and 🚀"
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    chunks = [b"".join(table[i] for i in ids[:cut]) + b"|" + b"".join(table[i] for i in ids[cut:]) for cut in range(len(ids))]
    assert all(chunk.replace(b"|", b"").decode() == text for chunk in chunks)
    # and at least one cut falls inside a character, where per-chunk decoding would have produced U+FFFD
    assert any("\ufffd" in chunk.split(b"|")[0].decode("utf-8", "replace") for chunk in chunks)


def test_special_tokens_are_skipped_but_think_tags_are_kept(tiny_tokenizer):
    table = token_byte_table(tiny_tokenizer, skip_special_tokens=True)
    ids = tiny_tokenizer.encode("<think>\nhmm</think>ok", add_special_tokens=True)
    assert ids[0] == tiny_tokenizer.bos_token_id
    assert _decode(table, ids) == "<think>\nhmm</think>ok"
    kept = token_byte_table(tiny_tokenizer, skip_special_tokens=False)
    assert _decode(kept, ids).startswith(tiny_tokenizer.bos_token)


def test_sentencepiece_style_vocabulary_keeps_leading_spaces(tmp_path):
    from tokenizers import SentencePieceBPETokenizer
    from transformers import PreTrainedTokenizerFast

    sp = SentencePieceBPETokenizer()
    sp.train_from_iterator(["hello world, hello there world"] * 20, vocab_size=60, min_frequency=1, show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=sp)
    table = token_byte_table(tokenizer, skip_special_tokens=True)
    ids = tokenizer.encode("hello world", add_special_tokens=False)
    assert _decode(table, ids) == " hello world"  # a continuation keeps the word boundary
    assert _decode(table, ids[1:]).startswith(" ") or _decode(table, ids[1:]).startswith("o")


@pytest.mark.parametrize("skip", [True, False])
def test_table_covers_every_token(tiny_tokenizer, skip):
    assert len(token_byte_table(tiny_tokenizer, skip_special_tokens=skip)) == len(tiny_tokenizer)
