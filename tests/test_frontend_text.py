"""Tests for tritonrepo/frontend/text.py: incremental UTF-8 decoding and stop strings."""

from __future__ import annotations

import pytest

from tritonrepo.frontend.text import IncrementalText, StopStringMatcher, tokens_before
from tritonrepo.frontend.triton_client import GeneratedChunk


def decode_all(chunks: list[bytes]) -> list[str]:
    decoder = IncrementalText()
    return [decoder.feed(chunk) for chunk in chunks] + [decoder.finish()]


def test_two_byte_character_split_over_two_chunks_comes_out_once_whole():
    assert decode_all([b"caf\xc3", b"\xa9!"]) == ["caf", "é!", ""]


def test_four_byte_emoji_fed_one_byte_at_a_time():
    pieces = decode_all([b"\xf0", b"\x9f", b"\x99", b"\x82", b" ok"])
    assert pieces == ["", "", "", "🙂", " ok", ""]
    assert "\ufffd" not in "".join(pieces)


@pytest.mark.parametrize("split", range(1, len("héllo 🙂 wörld 日本".encode())))
def test_every_split_point_decodes_to_the_same_text(split):
    data = "héllo 🙂 wörld 日本".encode()
    assert "".join(decode_all([data[:split], data[split:]])) == "héllo 🙂 wörld 日本"


def test_unfinished_character_at_the_end_is_flushed_as_replacement():
    decoder = IncrementalText()
    assert decoder.feed(b"ab\xf0\x9f") == "ab"
    assert decoder.finish() == "\ufffd"


def test_invalid_bytes_become_replacement_not_an_exception():
    assert "".join(decode_all([b"a\xffb"])) == "a\ufffdb"


def run_matcher(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopStringMatcher(stops)
    out = []
    for piece in pieces:
        text, matched = matcher.feed(piece)
        out.append(text)
        if matched:
            return "".join(out), True
    return "".join(out) + matcher.finish(), False


def test_no_stop_strings_passes_text_through_immediately():
    matcher = StopStringMatcher([])
    assert matcher.feed("hello") == ("hello", False)
    assert matcher.finish() == ""


def test_stop_string_truncates_and_is_not_included():
    assert run_matcher(["STOP"], ["one two STOP three"]) == ("one two ", True)


def test_stop_string_split_across_chunks_is_found():
    assert run_matcher(["\n\n"], ["first line\n", "\nsecond"]) == ("first line", True)
    assert run_matcher(["<|end|>"], ["answer<", "|e", "nd", "|>more"]) == ("answer", True)


def test_possible_stop_prefix_is_held_back_then_released():
    matcher = StopStringMatcher(["<|end|>"])
    assert matcher.feed("value <|e") == ("value ", False)
    assert matcher.feed("xtra") == ("<|extra", False)


def test_held_back_tail_is_released_at_finish():
    matcher = StopStringMatcher(["END"])
    assert matcher.feed("the EN") == ("the ", False)
    assert matcher.finish() == "EN"


def test_first_of_several_stop_strings_wins():
    assert run_matcher(["world", "lo"], ["hello world"]) == ("hel", True)


def test_nothing_after_a_match():
    matcher = StopStringMatcher(["x"])
    assert matcher.feed("axb") == ("a", True)
    assert matcher.feed("more") == ("", True)
    assert matcher.finish() == ""


def test_empty_stop_strings_are_ignored():
    assert run_matcher(["", "Z"], ["abc"]) == ("abc", False)


def test_stop_with_multibyte_text_through_both_layers():
    decoder, matcher = IncrementalText(), StopStringMatcher(["🙂"])
    out = []
    for chunk in [b"h\xc3", b"\xa9 \xf0\x9f", b"\x99\x82 after"]:
        text, matched = matcher.feed(decoder.feed(chunk))
        out.append(text)
        if matched:
            break
    assert "".join(out) == "hé " and matcher.matched


# --- prompt_encoder ------------------------------------------------------------------------------------------------
PROMPTS = ["héllo 🙂 wörld", "<s>already has BOS</s> and an end", "  leading spaces\n\ttabs", "日本語のテキスト", "x"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from frontend_fixtures import make_tokenizer_dir
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(make_tokenizer_dir(tmp_path_factory.mktemp("tok") / "tokenizer")))


@pytest.mark.parametrize("for_threads", [False, True], ids=["inline", "for-threads"])
@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_prompt_encoder_gives_the_tokenizers_own_ids(tokenizer, add_special_tokens, for_threads):
    from tritonrepo.frontend.text import prompt_encoder

    encode = prompt_encoder(tokenizer, for_threads=for_threads)
    for prompt in PROMPTS:
        assert encode(prompt, add_special_tokens) == tokenizer.encode(prompt, add_special_tokens=add_special_tokens)
    assert encode("x", True)[0] == tokenizer.bos_token_id and encode("x", False)[0] != tokenizer.bos_token_id


@pytest.mark.parametrize("for_threads", [False, True], ids=["inline", "for-threads"])
def test_prompt_encoder_leaves_a_truncating_backend_to_transformers(tokenizer, for_threads):
    import copy

    from tritonrepo.frontend.text import prompt_encoder

    truncating = copy.deepcopy(tokenizer)
    truncating.backend_tokenizer.enable_truncation(max_length=2)
    encode = prompt_encoder(truncating, for_threads=for_threads)
    # transformers switches the backend's truncation off for a plain encode; calling the backend would cut at 2
    assert encode(PROMPTS[0], False) == tokenizer.encode(PROMPTS[0], add_special_tokens=False)
    assert len(encode(PROMPTS[0], False)) > 2


# --- tokens_before: usage after a stop string --------------------------------------------------------------------
def _by_length(data: bytes) -> int:
    return len(data)  # a stand-in tokenizer: one token per byte, so what it was asked to count shows


def test_tokens_before_counts_one_token_chunks_that_start_before_the_cut():
    chunks = [GeneratedChunk(b"ab", 1), GeneratedChunk(b"cd", 1), GeneratedChunk(b"", 1), GeneratedChunk(b"ef", 1)]
    assert [tokens_before(cut, chunks, _by_length) for cut in range(7)] == [0, 1, 1, 2, 2, 4, 4]


def test_tokens_before_uses_token_sizes_and_counts_a_token_the_cut_splits():
    chunk = GeneratedChunk(b"one two three", 3, token_sizes=(3, 4, 6))
    assert [tokens_before(cut, [chunk], _by_length) for cut in (0, 1, 3, 4, 7, 8, 13)] == [0, 1, 1, 2, 2, 3, 3]


def test_tokens_before_tokenizes_the_returned_part_of_a_chunk_of_many_tokens_never_beyond_its_count():
    chunk = GeneratedChunk(b"abcdef", 3)  # three tokens, sizes unknown
    assert tokens_before(2, [GeneratedChunk(b"xy", 1), chunk], _by_length) == 1
    assert tokens_before(4, [GeneratedChunk(b"xy", 1), chunk], _by_length) == 1 + 2
    assert tokens_before(7, [GeneratedChunk(b"xy", 1), chunk], _by_length) == 1 + 3


def test_the_encoder_for_threads_lets_other_threads_run_while_it_works(tokenizer):
    # The backend's single encode holds the GIL until it is done (another thread gets to run once or twice during a
    # 1 MB prompt); the encoder for worker threads must not, or a long prompt on a worker would stall the event loop's
    # thread all the same. Seen by progress, not by time: a thread that counts while the encoder works gets to count.
    import threading

    from tritonrepo.frontend.text import prompt_encoder

    encode = prompt_encoder(tokenizer, for_threads=True)
    text = "héllo 🙂 wörld, the quick brown fox " * 30000  # about 1 MB
    done = threading.Event()
    worker = threading.Thread(target=lambda: (encode(text, False), done.set()))
    ticks = 0
    worker.start()
    while not done.wait(0.001):
        ticks += 1
    worker.join()
    assert ticks > 10
