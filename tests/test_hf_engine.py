"""The portable runtime's engine, driven directly (no Triton): decoding semantics and concurrency."""

from __future__ import annotations

import re
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


# --- continuous batching (issue 13): every sequence in flight in one pass, joining and leaving between steps --------
LONG_PROMPTS = [
    "The café in 東京 serves",
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):",
    "Hello",
    "A much longer prompt, so that its prefill takes several chunks when chunks are small: one two three four",
]


@pytest.fixture(scope="module", params=[False, True], ids=["results-at-once", "results-overlapped"])
def small_chunks(tiny_model_dir, request):
    """Four slots and prefill passes of at most 8 prompt tokens: long prompts prefill over several steps. Run both
    ways results reach requests: at once (the CPU's way) and while the next pass runs (the GPU's way)."""
    engine = Engine(
        tiny_model_dir, device="cpu", max_num_sequences=4, max_seq_len=256, prefill_tokens=8, overlap=request.param
    )
    engine.start()
    yield engine
    engine.stop()


def _joiner(engine, tokenizer, prompt, tokens, when, key=""):
    """A Collector submitted from the engine's thread once `when()` holds (checked at each step of another run)."""
    started = []

    def maybe_start():
        if not started and when():
            started.append(Collector(engine, _ids(tokenizer, prompt), SamplingParams(max_new_tokens=tokens), key=key))

    return started, maybe_start


def test_sequences_joining_at_different_steps_each_match_generate_alone(
    small_chunks, tiny_tokenizer, tiny_reference_model
):
    engine = small_chunks
    expected = [reference_greedy(tiny_reference_model, tiny_tokenizer, p, 30) for p in LONG_PROMPTS]
    engine.decode_batches.clear()
    joined: list[Collector] = []
    first = Collector(engine, _ids(tiny_tokenizer, LONG_PROMPTS[0]), SamplingParams(max_new_tokens=30))

    def on_step(sequence, result, original=first._on_step):
        original(sequence, result)
        produced = len(first.tokens)
        if produced in (3, 7, 12) and len(joined) < 3:  # each joins while the others are mid-decode
            prompt = LONG_PROMPTS[len(joined) + 1]
            joined.append(Collector(engine, _ids(tiny_tokenizer, prompt), SamplingParams(max_new_tokens=30)))

    first.sequence.on_step = on_step
    runs = [first.wait(), *(run.wait() for run in _wait_for(joined, 3))]
    assert [run.tokens for run in runs] == expected
    assert max(engine.decode_batches) >= 3, f"never decoded together: {dict(engine.decode_batches)}"


def _wait_for(items: list, count: int) -> list:
    import time

    deadline = time.monotonic() + 60
    while len(items) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(items) == count
    return items


def test_a_sequence_leaving_mid_batch_leaves_the_others_exact(
    small_chunks, tiny_tokenizer, tiny_reference_model, monkeypatch
):
    # Cancelling a row in the middle moves the last decoding row into its slot (and a prefilling one after it):
    # what they generate next must not change.
    import hf_engine

    engine = small_chunks
    monkeypatch.setattr(hf_engine, "CANCEL_CHECK_S", 0.0)  # cancellation seen at the very next step
    moves = []
    original_move = engine.cache.move
    monkeypatch.setattr(engine.cache, "move", lambda *args, **kw: (moves.append(args), original_move(*args, **kw)))
    expected = [reference_greedy(tiny_reference_model, tiny_tokenizer, p, 40) for p in LONG_PROMPTS]
    flag = threading.Event()
    runs = [
        Collector(engine, _ids(tiny_tokenizer, LONG_PROMPTS[0]), SamplingParams(max_new_tokens=40)),
        Collector(
            engine, _ids(tiny_tokenizer, LONG_PROMPTS[1]), SamplingParams(max_new_tokens=200), is_cancelled=flag.is_set
        ),
        Collector(engine, _ids(tiny_tokenizer, LONG_PROMPTS[2]), SamplingParams(max_new_tokens=40)),
    ]

    def cancel_then_join(sequence, result, original=runs[2]._on_step):
        original(sequence, result)
        if len(runs[2].tokens) == 5:
            runs.append(Collector(engine, _ids(tiny_tokenizer, LONG_PROMPTS[3]), SamplingParams(max_new_tokens=40)))
        if len(runs[2].tokens) == 6:
            flag.set()  # the long prompt is being prefilled in chunks of 8 now

    runs[2].sequence.on_step = cancel_then_join
    _wait_for(runs, 4)
    finished = [run.wait() for run in runs]
    assert finished[1].cancelled
    assert [finished[i].tokens for i in (0, 2, 3)] == [expected[i] for i in (0, 2, 3)]
    # slot 2 (decoding) into slot 1, then slot 3 (prefilling) into slot 2, as it was part-way through its prompt
    assert [(source, target) for source, target, _ in moves[:2]] == [(2, 1), (3, 2)], moves
    assert moves[1][2] == engine.prefill_tokens < len(_ids(tiny_tokenizer, LONG_PROMPTS[3]))  # one chunk in


def test_more_requests_than_slots_wait_their_turn(small_chunks, tiny_tokenizer, tiny_reference_model):
    engine = small_chunks
    engine.decode_batches.clear()
    prompts = [f"request number {n}" for n in range(9)]
    expected = [reference_greedy(tiny_reference_model, tiny_tokenizer, p, 12) for p in prompts]
    runs = [Collector(engine, _ids(tiny_tokenizer, p), SamplingParams(max_new_tokens=12)) for p in prompts]
    assert [run.wait().tokens for run in runs] == expected
    assert max(engine.decode_batches) == engine.max_num_sequences == 4


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps(small_chunks, tiny_tokenizer, tiny_reference_model):
    import torch

    engine = small_chunks
    prompt = LONG_PROMPTS[3] * 3
    ids = _ids(tiny_tokenizer, prompt)
    assert len(ids) > 3 * engine.prefill_tokens
    engine.prefill_batches.clear()
    params = SamplingParams(max_new_tokens=10, return_context_logits=True)
    run = Collector(engine, ids, params).wait()
    assert run.tokens == reference_greedy(tiny_reference_model, tiny_tokenizer, prompt, 10)
    assert sum(engine.prefill_batches.values()) >= len(ids) // engine.prefill_tokens
    with torch.inference_mode():
        reference = tiny_reference_model(torch.tensor([ids])).logits[0]
    assert torch.allclose(run.steps[0].context_logits, reference, atol=1e-4)


def test_a_seeded_request_samples_the_same_text_alone_or_in_a_batch(small_chunks, tiny_tokenizer):
    engine = small_chunks
    ids = _ids(tiny_tokenizer, LONG_PROMPTS[0])

    def sampled(seed):
        return SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=seed)

    alone = Collector(engine, ids, sampled(5)).wait().tokens
    crowd = [Collector(engine, _ids(tiny_tokenizer, p), sampled(9)) for p in LONG_PROMPTS[1:]]
    together = Collector(engine, ids, sampled(5))
    assert together.wait().tokens == alone
    other = Collector(engine, ids, sampled(6)).wait().tokens
    assert other != alone
    for run in crowd:
        run.wait()


def test_the_kv_cache_is_sized_to_the_memory_there_is(tiny_model_dir, monkeypatch):
    probe = Engine(tiny_model_dir, device="cpu", max_num_sequences=1, max_seq_len=100)
    per_slot = probe.kv_cache_bytes
    probe.stop()
    monkeypatch.setattr(Engine, "_kv_memory", lambda self: (3 * per_slot + 1, "a small device"))
    fitted = Engine(tiny_model_dir, device="cpu", max_num_sequences=8, max_seq_len=100)
    assert fitted.max_num_sequences == 3 and fitted.kv_cache_bytes == 3 * per_slot
    assert "3 sequence slot(s) (of 8 asked for: that many do not fit) x 100 tokens" in fitted.kv_cache_note
    fitted.stop()
    with pytest.raises(
        ValueError, match=r"one sequence of max_seq_len 400 needs .* GiB of KV cache .* lower max_seq_len"
    ):
        Engine(tiny_model_dir, device="cpu", max_num_sequences=8, max_seq_len=400)


def test_a_model_the_slots_cannot_reproduce_is_refused_at_load(tiny_model_dir, monkeypatch):
    import hf_engine
    import torch

    def blind(positions, capacity, dtype, window):  # a cache that hides every earlier token: wrong attention
        columns = torch.arange(capacity + 1)
        visible = columns == positions[..., None]
        return torch.where(visible, 0.0, torch.finfo(dtype).min).to(dtype)[:, None]

    monkeypatch.setattr(hf_engine, "attention_mask", blind)
    with pytest.raises(ValueError, match="logits through the slot cache differ from the model's own"):
        Engine(tiny_model_dir, device="cpu", max_num_sequences=2, max_seq_len=64)


def test_a_request_whose_results_cannot_be_delivered_fails_alone(small_chunks, tiny_tokenizer, tiny_reference_model):
    engine = small_chunks
    expected = reference_greedy(tiny_reference_model, tiny_tokenizer, LONG_PROMPTS[0], 20)
    keeps = Collector(engine, _ids(tiny_tokenizer, LONG_PROMPTS[0]), SamplingParams(max_new_tokens=20))
    breaks = Collector(engine, _ids(tiny_tokenizer, LONG_PROMPTS[1]), SamplingParams(max_new_tokens=20))

    def gone(sequence, result, original=breaks._on_step):
        original(sequence, result)
        if len(breaks.tokens) == 3:
            raise ConnectionError("the client went away")

    breaks.sequence.on_step = gone
    assert keeps.wait().tokens == expected
    breaks.wait()
    assert len(breaks.tokens) == 3 and [type(e) for e in breaks.errors] == [ConnectionError]


def test_layers_that_fail_to_compile_run_uncompiled_and_say_so(tiny_model_dir, tiny_tokenizer, tiny_reference_model):
    import hf_engine

    def broken(model):  # stands in for a machine without a working compiler: every compiled part raises
        parts = [m for m in model.modules() if type(m).__name__.endswith("MLP")]
        for part in parts:
            part._compiled_call_impl = lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("no C compiler"))
        return parts

    original = hf_engine.compile_parts
    hf_engine.compile_parts = broken
    try:
        engine = Engine(tiny_model_dir, device="cpu", max_num_sequences=2, max_seq_len=64, compile_layers=True)
    finally:
        hf_engine.compile_parts = original
    engine.start()
    try:
        assert engine.compile_note == "layers not compiled: torch.compile failed (RuntimeError: no C compiler)"
        run = Collector(engine, _ids(tiny_tokenizer, PROMPTS[0]), SamplingParams(max_new_tokens=8)).wait()
        assert run.tokens == reference_greedy(tiny_reference_model, tiny_tokenizer, PROMPTS[0], 8)
    finally:
        engine.stop()


def test_compiled_layers_give_the_models_own_tokens(tiny_model_dir, tiny_tokenizer, tiny_reference_model):
    # On a GPU the norms and MLPs are compiled by default; on a CPU only when asked (inductor's C++ build is slow).
    engine = Engine(tiny_model_dir, device="cpu", max_num_sequences=2, max_seq_len=64, compile_layers=True)
    engine.start()
    try:
        assert re.fullmatch(r"[1-9]\d* norm and MLP modules compiled in [\d.]+ s", engine.compile_note)
        runs = [Collector(engine, _ids(tiny_tokenizer, p), SamplingParams(max_new_tokens=12)) for p in PROMPTS[:2]]
        expected = [reference_greedy(tiny_reference_model, tiny_tokenizer, p, 12) for p in PROMPTS[:2]]
        assert [run.wait().tokens for run in runs] == expected
    finally:
        engine.stop()
