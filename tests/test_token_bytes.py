"""postprocessing's token byte table: decoding is concatenation, equal to the tokenizer's own decode."""

from __future__ import annotations

import random

import pytest
from conftest import model_code_path

model_code_path("postprocessing")
from token_bytes import stream_chunk, token_byte_table  # noqa: E402


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
    chunks = [
        b"".join(table[i] for i in ids[:cut]) + b"|" + b"".join(table[i] for i in ids[cut:]) for cut in range(len(ids))
    ]
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


def _incremental(chunks):
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return "".join(decoder.decode(c) for c in chunks) + decoder.decode(b"", final=True)


def test_streamed_chunks_decode_to_exactly_the_whole_text_for_any_split(tiny_tokenizer):
    table = token_byte_table(tiny_tokenizer, skip_special_tokens=True)
    rng = random.Random(1)
    for _ in range(300):
        ids = [rng.randrange(len(tiny_tokenizer)) for _ in range(rng.randrange(1, 25))]
        cuts = sorted(rng.sample(range(1, len(ids)), rng.randrange(0, len(ids)))) if len(ids) > 1 else []
        pieces = [ids[a:b] for a, b in zip([0, *cuts], [*cuts, len(ids)], strict=True)]
        chunks = [stream_chunk(b"".join(table[i] for i in piece)) for piece in pieces]
        whole = b"".join(table[i] for i in ids).decode("utf-8", "replace")
        assert _incremental(chunks) == whole == tiny_tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize(
    "chunk, kept",
    [
        (b"plain", b"plain"),
        ("東".encode()[:2], "東".encode()[:2]),  # a character that continues in the next chunk stays raw
        ("東".encode()[2:] + b" ok", "東".encode()[2:] + b" ok"),  # ...and so does its end at the next chunk's start
        (b"a\xffb", "a\ufffdb".encode()),  # invalid wherever the boundaries fall: replaced
        ("🙂".encode()[:3], "🙂".encode()[:3]),
    ],
)
def test_stream_chunk_keeps_only_edge_fragments_raw(chunk, kept):
    assert stream_chunk(chunk) == kept
