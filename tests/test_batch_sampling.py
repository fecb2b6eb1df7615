"""Choosing the next token for every row of a decode step at once, each row by its own request's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from conftest import model_code_path

model_code_path("tensorrt_llm")
from batch_sampling import choose  # noqa: E402
from hf_engine import SamplingParams  # noqa: E402

VOCAB = 50


@dataclass
class Row:
    params: SamplingParams
    prompt_ids: list[int] = field(default_factory=lambda: [1, 2])
    output_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    bias: torch.Tensor | None = None


def _sampling(seed: int, **settings) -> Row:
    generator = torch.Generator().manual_seed(seed)
    return Row(SamplingParams(max_new_tokens=8, temperature=1.0, top_p=1.0, **settings), generator=generator)


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn((rows, VOCAB), generator=torch.Generator().manual_seed(seed))


def test_greedy_rows_take_the_argmax():
    logits = _logits(3)
    rows = [Row(SamplingParams(max_new_tokens=8, top_k=1)) for _ in range(3)]
    tokens, _ = choose(rows, logits.clone())
    assert tokens == logits.argmax(-1).tolist()


def test_a_seeded_row_draws_the_same_token_whatever_else_is_in_the_batch():
    alone, _ = choose([_sampling(7)], _logits(1, seed=3))
    mixed_logits = torch.cat([_logits(2, seed=9), _logits(1, seed=3)])
    rows = [Row(SamplingParams(max_new_tokens=8)), _sampling(11), _sampling(7)]
    mixed, _ = choose(rows, mixed_logits)
    assert mixed[2] == alone[0]


def test_different_seeds_draw_different_tokens():
    flat = torch.zeros((1, VOCAB))  # every token equally likely
    drawn = {choose([_sampling(seed)], flat.clone())[0][0] for seed in range(20)}
    assert len(drawn) > 10


def test_top_k_and_top_p_limit_each_row_to_its_own_candidates():
    logits = torch.arange(VOCAB, dtype=torch.float32).repeat(2, 1)  # token VOCAB-1 most likely
    for seed in range(30):
        rows = [_sampling(seed, top_k=3), _sampling(seed + 100)]
        rows[1].params.top_p = 0.5
        tokens, _ = choose(rows, logits.clone() * 0.5)
        assert tokens[0] >= VOCAB - 3
        # top_p 0.5 over logits 0.5 * i keeps the few most likely tokens (the one crossing 0.5 included)
        assert tokens[1] >= VOCAB - 3


def test_min_length_suppresses_the_end_token_for_that_row_only():
    logits = torch.zeros((2, VOCAB))
    logits[:, 5] = 10.0  # the end token is the argmax
    rows = [Row(SamplingParams(max_new_tokens=8, top_k=1, end_id=5, min_length=2)) for _ in range(2)]
    rows[1].output_ids = [7, 8]  # already long enough
    tokens, _ = choose(rows, logits)
    assert tokens[0] != 5 and tokens[1] == 5


def test_log_probs_are_reported_where_asked():
    logits = _logits(2)
    rows = [
        Row(SamplingParams(max_new_tokens=8, top_k=1, return_log_probs=True)),
        Row(SamplingParams(max_new_tokens=8, top_k=1)),
    ]
    tokens, log_probs = choose(rows, logits.clone())
    expected = torch.log_softmax(logits[0], -1)[tokens[0]].item()
    assert log_probs[0] == pytest.approx(expected, abs=1e-5) and log_probs[1] == 0.0
