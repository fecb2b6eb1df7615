"""Triton Python model: the tensorrt_llm tensor contract served by the portable runtime (hf_engine.py).

Decoupled mode streams one response per decode step (only the new tokens, as TensorRT-LLM does); the last response
carries the final flag, with zero tokens when generation ended on the end token. Non-decoupled mode returns one
response per request with all tokens.
"""

import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils
from hf_engine import Engine, SamplingParams, Sequence
from model_utils import (
    error_response,
    flag,
    input_array,
    input_scalar,
    parameters,
    resolve,
)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _word_lists(request, name):
    """[1, 2, n] TensorRT-LLM word list (flat ids + end offsets, -1 padded) -> [[ids of word 1], ...]."""
    array = input_array(request, name)
    if array is None:
        return []
    flat, offsets = array.reshape(-1, 2, array.shape[-1])[0]
    words, start = [], 0
    for end in offsets.tolist():
        if end < 0:
            break
        words.append(flat[start:end].tolist())
        start = end
    return [w for w in words if w]


def _outputs(tokens, log_probs, cum_log_prob):
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("output_ids", np.array([[tokens]], dtype=np.int32).reshape(1, 1, len(tokens))),
            pb_utils.Tensor("sequence_length", np.array([[len(tokens)]], dtype=np.int32)),
            pb_utils.Tensor("cum_log_probs", np.array([[cum_log_prob]], dtype=np.float32)),
            pb_utils.Tensor(
                "output_log_probs",
                np.array(log_probs if len(log_probs) == len(tokens) else [0.0] * len(tokens), dtype=np.float32).reshape(
                    1, 1, len(tokens)
                ),
            ),
        ]
    )


class _Counters:
    """The runtime's own Prometheus counters on Triton's metrics port: how requests ended, tokens generated.
    They show from outside whether a cancelled request really stopped generating."""

    def __init__(self):
        requests = pb_utils.MetricFamily(
            name="tritonrepo_runtime_requests_total",
            description="Requests the runtime finished, by outcome (completed, cancelled, error)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        tokens = pb_utils.MetricFamily(
            name="tritonrepo_runtime_generated_tokens_total",
            description="Tokens the runtime generated, cancelled requests included",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.outcomes = {
            name: requests.Metric(labels={"outcome": name}) for name in ("completed", "cancelled", "error")
        }
        self.tokens = tokens.Metric(labels={})
        self._families = (requests, tokens)  # metrics live only as long as their family

    def ended(self, outcome, generated_tokens):
        self.outcomes[outcome].increment(1)
        self.tokens.increment(generated_tokens)


class _NoCounters:
    def ended(self, outcome, generated_tokens):
        pass


class _Reply:
    """Delivers one request's results: streamed per step, or all at once at the end."""

    def __init__(self, request, sender, streaming, prompt_ids, exclude_input, counters):
        self.request, self.sender, self.streaming, self.counters = request, sender, streaming, counters
        self.echo = [] if exclude_input or streaming else list(prompt_ids)
        self.log_probs = []
        self.response = None  # non-decoupled mode: what execute() returns
        self.done = threading.Event()

    def is_cancelled(self):
        if self.sender is not None:
            return self.sender.is_cancelled()
        return self.request.is_cancelled()

    def on_step(self, sequence, result):
        self.log_probs += result.log_probs
        if self.streaming:
            response = _outputs(result.new_tokens, result.log_probs, sequence.cum_log_prob)
            self.sender.send(response, flags=FINAL if result.finished else 0)
        elif result.finished:
            self._finish(
                _outputs(
                    self.echo + sequence.output_ids, [0.0] * len(self.echo) + self.log_probs, sequence.cum_log_prob
                )
            )
        if result.finished:
            self.counters.ended("completed", len(sequence.output_ids))
            self.done.set()

    def on_error(self, sequence, error):
        self.counters.ended("error", len(sequence.output_ids))
        self._finish(error_response(f"tensorrt_llm (hf runtime): {error}"))

    def on_cancel(self, sequence):
        self.counters.ended("cancelled", len(sequence.output_ids))
        pb_utils.Logger.log_info(f"hf runtime: request cancelled after {len(sequence.output_ids)} tokens")
        if self.sender is not None:
            self.sender.send(flags=FINAL)
        else:
            self.response = error_response("request cancelled")
        self.done.set()

    def _finish(self, response):
        if self.sender is not None:
            self.sender.send(response, flags=FINAL)
        else:
            self.response = response
        self.done.set()


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"]))
        self.exclude_input_default = flag(params.get("exclude_input_in_output", "false"))
        self.max_input_len = int(params.get("max_input_len", "0") or 0)
        self.engine = Engine(
            resolve(args, params["hf_model_dir"]),
            device=params.get("device", "auto"),
            dtype=params.get("dtype", "auto"),
            max_seq_len=int(params.get("max_seq_len", "0") or 0),
            max_num_sequences=int(params.get("max_num_sequences", "8") or 8),
        )
        self.engine.start()
        try:
            self.counters = _Counters()
        except Exception as error:  # metrics switched off in tritonserver: serve without the counters
            pb_utils.Logger.log_warn(f"hf runtime: no runtime counters ({error})")
            self.counters = _NoCounters()
        pb_utils.Logger.log_info(
            f"hf runtime: {self.engine.model.config.architectures} on {self.engine.device} ({self.engine.dtype}), "
            f"max_seq_len {self.engine.max_seq_len}, {self.engine.max_num_sequences} sequences in flight"
        )

    def finalize(self):
        self.engine.stop()

    def execute(self, requests):
        replies = [self._submit(request) for request in requests]
        if self.decoupled:
            return None
        for reply in replies:
            if isinstance(reply, _Reply):
                reply.done.wait()
        return [reply.response if isinstance(reply, _Reply) else reply for reply in replies]

    def _submit(self, request):
        """Queue one request; returns its _Reply, or (non-decoupled) an immediate response."""
        sender = request.get_response_sender() if self.decoupled else None
        try:
            if input_scalar(request, "stop", False, bool):
                self.engine.cancel(request.request_id())
                return self._immediate(sender, _outputs([], [], 0.0))
            sequence, reply = self._parse(request, sender)
            self.engine.submit(sequence)
            return reply
        except ValueError as error:
            return self._immediate(sender, error_response(f"tensorrt_llm (hf runtime): {error}"))

    @staticmethod
    def _immediate(sender, response):
        if sender is None:
            return response
        sender.send(response, flags=FINAL)
        return None

    def _parse(self, request, sender):
        input_ids = input_array(request, "input_ids")
        if input_ids.ndim > 1 and input_ids.shape[0] != 1:
            raise ValueError(f"one sequence per request is supported, got a batch of {input_ids.shape[0]}")
        length = input_scalar(request, "input_lengths", input_ids.size)
        prompt_ids = input_ids.reshape(-1)[:length].tolist()
        if self.max_input_len and len(prompt_ids) > self.max_input_len:
            raise ValueError(f"input length {len(prompt_ids)} exceeds max_input_len {self.max_input_len}")
        if input_scalar(request, "beam_width", 1) != 1:
            raise ValueError("beam search is not supported by the hf runtime; use beam_width 1")
        params = SamplingParams(
            max_new_tokens=input_scalar(request, "request_output_len", 0),
            end_id=input_scalar(request, "end_id", None),
            temperature=input_scalar(request, "temperature", 1.0, float),
            top_k=input_scalar(request, "runtime_top_k", 0),
            top_p=input_scalar(request, "runtime_top_p", 0.0, float),
            seed=input_scalar(request, "random_seed", None),
            repetition_penalty=input_scalar(request, "repetition_penalty", 1.0, float),
            presence_penalty=input_scalar(request, "presence_penalty", 0.0, float),
            frequency_penalty=input_scalar(request, "frequency_penalty", 0.0, float),
            min_length=input_scalar(request, "min_length", 0),
            stop_words=_word_lists(request, "stop_words_list"),
            bad_words=_word_lists(request, "bad_words_list"),
            return_log_probs=input_scalar(request, "return_log_probs", False, bool),
        )
        self.engine.check(len(prompt_ids), params)
        streaming = self.decoupled and input_scalar(request, "streaming", False, bool)
        exclude = input_scalar(request, "exclude_input_in_output", self.exclude_input_default, bool)
        reply = _Reply(request, sender, streaming, prompt_ids, exclude, self.counters)
        sequence = Sequence(
            prompt_ids=prompt_ids,
            params=params,
            on_step=reply.on_step,
            on_error=reply.on_error,
            on_cancel=reply.on_cancel,
            is_cancelled=reply.is_cancelled,
            key=request.request_id() or "",
        )
        return sequence, reply
