"""The DeepSeek-R1 reasoning splitter: whole and streamed splits agree, tags split across pieces are handled."""

from __future__ import annotations

import random

import pytest

from tritonrepo.frontend.reasoning import DeepSeekR1Splitter, Split, split_whole, splitter_for


def _streamed(text: str, cuts: list[int]) -> Split:
    splitter = DeepSeekR1Splitter()
    reasoning, content = [], []
    edges = [0, *sorted(cuts), len(text)]
    for start, end in zip(edges, edges[1:], strict=False):
        piece = splitter.feed(text[start:end])
        reasoning.append(piece.reasoning)
        content.append(piece.content)
    rest = splitter.finish()
    return Split("".join(reasoning) + rest.reasoning, "".join(content) + rest.content)


@pytest.mark.parametrize(
    ("text", "reasoning", "content"),
    [
        ("Let me see. 思考\n</think>\n\nThe answer is 42 ✓", "Let me see. 思考\n", "\n\nThe answer is 42 ✓"),
        ("<think>\nhmm</think>yes", "\nhmm", "yes"),
        ("  <think>a</think>b", "a", "b"),
        ("still thinking when cut short", "still thinking when cut short", ""),
        ("</think>only an answer", "", "only an answer"),
        ("a </think> b </think> c", "a ", " b </think> c"),  # only the first close tag splits
        ("x </thi", "x </thi", ""),  # an incomplete tag at the end is text
        ("<thinking>is not the tag</think>!", "<thinking>is not the tag", "!"),
    ],
)
def test_whole_split(text, reasoning, content):
    assert split_whole("deepseek-r1", text) == Split(reasoning, content)


def test_every_way_of_cutting_the_stream_gives_the_whole_split():
    texts = [
        "<think>\nstep 1 🙂 step 2</think>\n\nanswer 答え",
        "no open tag 思考</think>done",
        "<thi",
        "   ",
        "reasoning only, never closed <",
    ]
    rng = random.Random(0)
    for text in texts:
        whole = split_whole("deepseek-r1", text)
        for cut in range(len(text) + 1):  # every single cut, which crosses every tag boundary
            assert _streamed(text, [cut]) == whole, (text, cut)
        for _ in range(200):
            cuts = rng.sample(range(len(text) + 1), k=min(len(text), rng.randint(1, 6)))
            assert _streamed(text, cuts) == whole, (text, cuts)


def test_a_tag_split_over_pieces_is_held_back_not_leaked():
    splitter = DeepSeekR1Splitter()
    assert splitter.feed("thought </th") == Split(reasoning="thought ")
    assert splitter.feed("ink>ans") == Split(reasoning="", content="ans")
    assert splitter.feed("wer") == Split(content="wer")


def test_none_keeps_everything_as_content_and_unknown_names_are_refused():
    assert splitter_for("none") is None and splitter_for(None) is None
    assert split_whole("none", "a</think>b") == Split(content="a</think>b")
    with pytest.raises(ValueError, match="deepseek-r1"):
        splitter_for("qwen3")
