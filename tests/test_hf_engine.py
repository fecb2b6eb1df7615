"""The portable runtime's engine, driven directly (no Triton): decoding semantics and concurrency."""

from __future__ import annotations

import threading

import pytest
from conftest import model_code_path, reference_greedy

model_code_path("tensorrt_llm")
from hf_engine import Engine, SamplingParams, Sequence  # noqa: E402

PROMPTS = ["Hello world", "The café in 東京 serves", "def add(a, b):"]


class Collector:
    """Runs one sequence through the engine and records what the callbacks saw."""

    def __init__(self, engine: Engine, prompt_ids: list[int], params: SamplingParams, key: str = "", is_cancelled=None):
        self.steps, self.errors, self.cancelled = [], [], False
        self.done = threading.Event()
        self.sequence = Sequence(
            prompt_ids=prompt_ids,
            params=params,
            on_step=self._on_step,
            on_error=lambda s, e: (self.errors.append(e), self.done.set()),
            on_cancel=lambda s: (setattr(self, "cancelled", True), self.done.set()),
            key=key,
        )
        if is_cancelled is not None:
            self.sequence.is_cancelled = is_cancelled
        engine.submit(self.sequence)

    def _on_step(self, sequence, result):
        self.steps.append(result)
        if result.finished:
            self.done.set()

    def wait(self) -> Collector:
        assert self.done.wait(60), "the engine did not finish the sequence"
        return self

    @property
    def tokens(self) -> list[int]:
        return [t for step in self.steps for t in step.new_tokens]

    @property
    def reason(self) -> str | None:
        return self.steps[-1].finish_reason if self.steps else None


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = Engine(tiny_model_dir, device="cpu", max_num_sequences=4)
    engine.start()
    yield engine
    engine.stop()


def _ids(tokenizer, prompt):
    return tokenizer(prompt).input_ids


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_matches_transformers_generate_token_for_token(engine, tiny_tokenizer, tiny_reference_model, prompt):
    expected = reference_greedy(tiny_reference_model, tiny_tokenizer, prompt, 24)
    run = Collector(engine, _ids(tiny_tokenizer, prompt), SamplingParams(max_new_tokens=24)).wait()
    assert run.tokens == expected
    assert run.reason == "length"
    assert all(len(step.new_tokens) == 1 for step in run.steps), "one token per step"


def test_end_id_stops_before_the_end_token_and_excludes_it(engine, tiny_tokenizer, tiny_reference_model):
    greedy = reference_greedy(tiny_reference_model, tiny_tokenizer, PROMPTS[0], 16)
    end_id = greedy[4]
    run = Collector(engine, _ids(tiny_tokenizer, PROMPTS[0]), SamplingParams(max_new_tokens=16, end_id=end_id)).wait()
    assert run.tokens == greedy[: greedy.index(end_id)]
    assert run.reason == "end_id"
    assert run.steps[-1].new_tokens == []


def test_min_length_suppresses_the_end_token(engine, tiny_tokenizer, tiny_reference_model):
    greedy = reference_greedy(tiny_reference_model, tiny_tokenizer, PROMPTS[0], 16)
    params = SamplingParams(max_new_tokens=16, end_id=greedy[0], min_length=3)
    run = Collector(engine, _ids(tiny_tokenizer, PROMPTS[0]), params).wait()
    assert len(run.tokens) >= 3
    assert greedy[0] not in run.tokens[:3]


def test_stop_word_ends_generation_and_is_included(engine, tiny_tokenizer, tiny_reference_model):
    greedy = reference_greedy(tiny_reference_model, tiny_tokenizer, PROMPTS[1], 16)
    stop = greedy[3:5]
    params = SamplingParams(max_new_tokens=16, stop_words=[[99999], stop])
    run = Collector(engine, _ids(tiny_tokenizer, PROMPTS[1]), params).wait()
    assert run.tokens == greedy[:5]
    assert run.reason == "stop_word"


def test_bad_words_are_never_generated(engine, tiny_tokenizer, tiny_reference_model):
    greedy = reference_greedy(tiny_reference_model, tiny_tokenizer, PROMPTS[2], 8)
    run = Collector(
        engine, _ids(tiny_tokenizer, PROMPTS[2]), SamplingParams(max_new_tokens=8, bad_words=[[greedy[0]]])
    ).wait()
    assert greedy[0] not in run.tokens
    assert len(run.tokens) == 8


def test_seeded_sampling_is_reproducible_and_seed_dependent(engine, tiny_tokenizer):
    ids = _ids(tiny_tokenizer, PROMPTS[0])

    def sample(seed):
        params = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=1.0, seed=seed)
        return Collector(engine, ids, params).wait().tokens

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_top_k_one_is_greedy(engine, tiny_tokenizer, tiny_reference_model):
    expected = reference_greedy(tiny_reference_model, tiny_tokenizer, PROMPTS[2], 12)
    params = SamplingParams(max_new_tokens=12, temperature=0.7, top_k=1, seed=3)
    assert Collector(engine, _ids(tiny_tokenizer, PROMPTS[2]), params).wait().tokens == expected


def test_top_k_restricts_choices_to_the_k_most_likely(engine, tiny_tokenizer, tiny_reference_model):
    import torch

    ids = _ids(tiny_tokenizer, PROMPTS[0])
    with torch.inference_mode():
        logits = tiny_reference_model(torch.tensor([ids])).logits[0, -1]
    top2 = set(torch.topk(logits, 2).indices.tolist())
    firsts = {
        Collector(engine, ids, SamplingParams(max_new_tokens=1, top_k=2, temperature=5.0, seed=s)).wait().tokens[0]
        for s in range(12)
    }
    assert firsts <= top2 and len(firsts) == 2


def test_log_probs_are_reported_and_sum_to_the_cumulative(engine, tiny_tokenizer):
    run = Collector(
        engine, _ids(tiny_tokenizer, PROMPTS[0]), SamplingParams(max_new_tokens=6, return_log_probs=True)
    ).wait()
    log_probs = [lp for step in run.steps for lp in step.log_probs]
    assert len(log_probs) == 6 and all(lp <= 0 for lp in log_probs)
    assert run.sequence.cum_log_prob == pytest.approx(sum(log_probs), abs=1e-4)


def test_requests_in_flight_interleave_and_each_matches_its_solo_result(engine, tiny_tokenizer, tiny_reference_model):
    expected = [reference_greedy(tiny_reference_model, tiny_tokenizer, p, 20) for p in PROMPTS]
    runs = [Collector(engine, _ids(tiny_tokenizer, p), SamplingParams(max_new_tokens=20)) for p in PROMPTS]
    assert [run.wait().tokens for run in runs] == expected


def test_cancel_by_key_stops_a_sequence(engine, tiny_tokenizer):
    run = Collector(engine, _ids(tiny_tokenizer, PROMPTS[0]), SamplingParams(max_new_tokens=1500), key="req-1")
    engine.cancel("req-1")
    run.wait()
    assert run.cancelled and len(run.tokens) < 1500


def test_stops_for_requests_that_never_come_or_already_ended_do_not_pile_up(engine, tiny_tokenizer):
    # The front end and the BLS model send `stop` after a stop string or a client leaving, often once the request
    # has ended; each is kept only until its request claims it, and only the latest MAX_PENDING_STOPS of those.
    import hf_engine

    for number in range(hf_engine.MAX_PENDING_STOPS + 100):
        engine.cancel(f"gone-{number}")
    assert len(engine._cancelled_keys) == hf_engine.MAX_PENDING_STOPS
    engine.cancel("early")  # a stop that comes before its request still stops it
    run = Collector(engine, _ids(tiny_tokenizer, PROMPTS[0]), SamplingParams(max_new_tokens=1500), key="early")
    run.wait()
    assert run.cancelled and "early" not in engine._cancelled_keys


def test_cancellation_through_the_callback(engine, tiny_tokenizer):
    flag = threading.Event()  # the engine polls is_cancelled between steps, as it polls Triton's sender
    run = Collector(
        engine, _ids(tiny_tokenizer, PROMPTS[0]), SamplingParams(max_new_tokens=1500), is_cancelled=flag.is_set
    )
    flag.set()
    run.wait()
    assert run.cancelled and len(run.tokens) < 1500


@pytest.mark.parametrize(
    "prompt_len, params, message",
    [
        (0, SamplingParams(max_new_tokens=4), "no input tokens"),
        (4, SamplingParams(max_new_tokens=0), "at least 1"),
        (2000, SamplingParams(max_new_tokens=100), "exceeds max_seq_len 2048"),
    ],
)
def test_requests_that_cannot_be_served_are_refused_with_numbers(engine, prompt_len, params, message):
    with pytest.raises(ValueError, match=message):
        engine.check(prompt_len, params)


# --- upstream's tensorrt_llm inputs the runtime honours: embedding_bias, context and generation logits -------------
def test_a_zero_embedding_bias_changes_nothing_and_a_large_one_picks_its_token(
    engine, tiny_tokenizer, tiny_reference_model
):
    expected = reference_greedy(tiny_reference_model, tiny_tokenizer, PROMPTS[0], 8)
    ids = _ids(tiny_tokenizer, PROMPTS[0])
    zero = SamplingParams(max_new_tokens=8, embedding_bias=[0.0] * engine.vocab_size)
    assert Collector(engine, ids, zero).wait().tokens == expected
    favoured = next(t for t in range(10, engine.vocab_size) if t not in expected)
    bias = [0.0] * favoured + [1000.0]  # shorter than the vocabulary: it covers the first entries
    run = Collector(engine, ids, SamplingParams(max_new_tokens=8, embedding_bias=bias)).wait()
    assert run.tokens == [favoured] * 8


def test_context_and_generation_logits_are_the_models_own(engine, tiny_tokenizer, tiny_reference_model):
    import torch

    ids = _ids(tiny_tokenizer, PROMPTS[1])
    expected = reference_greedy(tiny_reference_model, tiny_tokenizer, PROMPTS[1], 6)
    params = SamplingParams(max_new_tokens=6, return_context_logits=True, return_generation_logits=True)
    run = Collector(engine, ids, params).wait()
    assert run.tokens == expected
    with torch.inference_mode():
        reference = tiny_reference_model(torch.tensor([ids + expected])).logits[0]
    context = run.steps[0].context_logits
    assert context.shape == (len(ids), engine.vocab_size)
    assert torch.allclose(context, reference[: len(ids)], atol=1e-4)
    assert all(step.context_logits is None for step in run.steps[1:])
    generation = torch.cat([step.generation_logits for step in run.steps])
    assert generation.shape == (6, engine.vocab_size)
    assert torch.allclose(generation, reference[len(ids) - 1 : len(ids) + 5], atol=1e-4)
    assert generation.argmax(-1).tolist() == expected


def test_generation_logits_are_taken_before_the_bias_and_penalties(engine, tiny_tokenizer):
    ids = _ids(tiny_tokenizer, PROMPTS[0])
    plain = Collector(engine, ids, SamplingParams(max_new_tokens=1, return_generation_logits=True)).wait()
    favoured = 10 if plain.tokens[0] != 10 else 11
    bias = [0.0] * favoured + [1000.0]
    params = SamplingParams(
        max_new_tokens=1, embedding_bias=bias, repetition_penalty=1.3, return_generation_logits=True
    )
    biased = Collector(engine, ids, params).wait()
    assert biased.tokens == [favoured]
    assert biased.steps[0].generation_logits.equal(plain.steps[0].generation_logits)
