"""Triton Python model (BLS): preprocessing -> tensorrt_llm -> postprocessing in code, streaming exact text deltas.

postprocessing returns the raw bytes of each chunk's tokens; this model decodes them incrementally, so a character
split across two tokens is sent whole in one delta and every delta is valid UTF-8. With accumulate_tokens it sends
the whole text so far instead of deltas. Each request runs on a worker thread, so many are in flight at once.

Cancellation (a client that leaves) is passed on to the generation model as a `stop` request under the inner
request's id, TensorRT-LLM's mechanism. Two limits of the Python backend (Triton 2.51) shape how:
- A BLS call waits for its first response on one of a fixed pool of server threads per model instance (32 by
  default), and this model's other BLS calls (postprocessing, stop requests) and its responses to clients need the
  same pool. Generation requests queued behind a full engine would hold every thread, so nothing could be stopped
  or detokenized until the engine drained. At most FIRST_RESPONSE_WAITERS of them wait at once here.
- A request can only check its cancellation between the generation model's responses, and a non-streamed
  generation has just one. A watcher thread checks the requests waiting on a response and stops those cancelled.
"""

import codecs
import json
import queue
import threading
import uuid
from concurrent.futures import Future

import numpy as np
import triton_python_backend_utils as pb_utils
from model_utils import error_response, flag, input_array, input_scalar, parameters

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL

# Entry-point input -> (model, input) it feeds. Inputs absent from a request are simply not forwarded.
_PREPROCESSING_INPUTS = {
    "text_input": "QUERY",
    "max_tokens": "REQUEST_OUTPUT_LEN",
    "bad_words": "BAD_WORDS_DICT",
    "stop_words": "STOP_WORDS_DICT",
    "end_id": "END_ID",
    "pad_id": "PAD_ID",
}
_GENERATION_INPUTS = {
    "top_k": "runtime_top_k",
    "top_p": "runtime_top_p",
    "temperature": "temperature",
    "length_penalty": "len_penalty",
    "repetition_penalty": "repetition_penalty",
    "min_length": "min_length",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "random_seed": "random_seed",
    "return_log_probs": "return_log_probs",
    "beam_width": "beam_width",
    "exclude_input_in_output": "exclude_input_in_output",
}
_PREPROCESSING_OUTPUTS = {
    "INPUT_ID": "input_ids",
    "REQUEST_INPUT_LEN": "input_lengths",
    "REQUEST_OUTPUT_LEN": "request_output_len",
    "BAD_WORDS_IDS": "bad_words_list",
    "STOP_WORDS_IDS": "stop_words_list",
    "OUT_END_ID": "end_id",
    "OUT_PAD_ID": "pad_id",
}


def _forward(request, mapping):
    tensors = []
    for source, target in mapping.items():
        array = input_array(request, source)
        if array is not None:
            tensors.append(pb_utils.Tensor(target, array))
    return tensors


def _outputs(response, names):
    return {name: pb_utils.get_output_tensor_by_name(response, name) for name in names}


FIRST_RESPONSE_WAITERS = 16  # half the Python backend's default thread pool (backend option thread-pool-size)
WATCH_INTERVAL_S = 0.1  # how often requests waiting on a response are checked for cancellation
FINALIZE_WAIT_S = 5.0  # how long unloading waits for requests in flight to end after they were stopped


class _Cancelled(Exception):
    """The client left (the request ends without a result), or the model is unloading (it ends with an error)."""

    def __init__(self, unloading=False):
        super().__init__("the model is unloading" if unloading else "request cancelled")
        self.unloading = unloading


class _Job:
    """One request in flight, as the cancellation watcher and finalize() see it."""

    def __init__(self, request, sender):
        self.request, self.sender = request, sender
        self.inner_id = f"bls-{uuid.uuid4().hex}"
        self.waiting = False  # blocked where it cannot check its own cancellation: the watcher does it
        self.submitted = False  # the generation request was sent: a stop can reach it
        self.stops_sent = 0
        self._lock = threading.Lock()
        self._finished = False

    def cancelled(self):
        return self.sender.is_cancelled() if self.sender is not None else self.request.is_cancelled()

    def cancelled_unless_finished(self):
        """For the watcher: once the final response is out the response sender is gone, and asking it is unsafe."""
        with self._lock:
            return not self._finished and self.cancelled()

    def finish(self):
        """Called before the final response is sent."""
        with self._lock:
            self._finished = True

    def claim_stop(self, again):
        """Whether the caller should send a stop now: once (the worker and the watcher may both notice), or again."""
        with self._lock:
            if not self.submitted or (self.stops_sent and not again):
                return False
            self.stops_sent += 1
            return True


class _Workers:
    """Daemon worker threads. ThreadPoolExecutor's threads are joined when the stub's interpreter exits, so one stuck
    in a BLS call whose answer never comes (its model already unloaded) would keep this model from unloading."""

    def __init__(self, count):
        self._tasks = queue.SimpleQueue()
        for index in range(count):
            threading.Thread(target=self._run, name=f"bls-worker-{index}", daemon=True).start()

    def submit(self, function, *args):
        future = Future()
        self._tasks.put((future, function, args))
        return future

    def _run(self):
        while True:
            future, function, args = self._tasks.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args))
            except BaseException as error:  # handed to the caller, as ThreadPoolExecutor does
                future.set_exception(error)


class _Counters:
    """How BLS requests ended, on Triton's metrics port, next to the generation model's own counters."""

    def __init__(self):
        family = pb_utils.MetricFamily(
            name="tritonrepo_bls_requests_total",
            description="Requests tensorrt_llm_bls finished, by outcome (completed, cancelled, error)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.outcomes = {name: family.Metric(labels={"outcome": name}) for name in ("completed", "cancelled", "error")}
        self._family = family  # metrics live only as long as their family
        # A Metric is not thread-safe: two increments at once overwrite each other's message to tritonserver,
        # which then reads freed shared memory and crashes (seen with Triton 2.51).
        self._lock = threading.Lock()

    def ended(self, outcome):
        with self._lock:
            self.outcomes[outcome].increment(1)


class _NoCounters:
    def ended(self, outcome):
        pass


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"]))
        self.generation_model = params.get("tensorrt_llm_model_name") or "tensorrt_llm"
        self.accumulate = flag(params.get("accumulate_tokens", "false"))
        self.workers = _Workers(int(params.get("max_requests_in_flight", "64") or 64))
        self.first_response_slots = threading.BoundedSemaphore(FIRST_RESPONSE_WAITERS)
        self.jobs = {}  # inner id -> _Job
        self.jobs_changed = threading.Condition()
        self.closing = threading.Event()
        try:
            self.counters = _Counters()
        except Exception as error:  # metrics switched off in tritonserver
            pb_utils.Logger.log_warn(f"tensorrt_llm_bls: no request counters ({error})")
            self.counters = _NoCounters()
        threading.Thread(target=self._watch, name="bls-cancellation-watcher", daemon=True).start()

    def finalize(self):
        """Unloading: stop what is still generating, so the generation model frees it and the unload is prompt."""
        self.closing.set()
        with self.jobs_changed:
            jobs = list(self.jobs.values())
        for job in jobs:
            self._stop(job)
        with self.jobs_changed:
            self.jobs_changed.wait_for(lambda: not self.jobs, timeout=FINALIZE_WAIT_S)
            left = len(self.jobs)
        if left:
            pb_utils.Logger.log_warn(f"tensorrt_llm_bls: {left} request(s) still in flight at unload")

    def execute(self, requests):
        if self.decoupled:
            for request in requests:
                self.workers.submit(self._serve, request, request.get_response_sender())
            return None
        futures = [self.workers.submit(self._serve, request, None) for request in requests]
        return [future.result() for future in futures]

    def _serve(self, request, sender):
        """Run one request; in decoupled mode send its responses, otherwise return the single response."""
        job = _Job(request, sender)
        with self.jobs_changed:
            self.jobs[job.inner_id] = job
        outcome = "error"
        try:
            response = self._generate(job)
            outcome = "completed"
            return response
        except _Cancelled as cancelled:
            outcome = "cancelled"
            return self._final(job, error_response(f"tensorrt_llm_bls: {cancelled}"), empty=not cancelled.unloading)
        except Exception as error:  # report to this client only; the model keeps serving
            return self._final(job, error_response(f"tensorrt_llm_bls: {error}"))
        finally:
            with self.jobs_changed:
                del self.jobs[job.inner_id]
                self.jobs_changed.notify_all()
            self.counters.ended(outcome)

    @staticmethod
    def _final(job, response, empty=False):
        """The last response: returned (non-decoupled) or sent; `empty`: the stream just ends (its client left)."""
        job.finish()
        sender = job.sender
        if sender is None:
            return response
        if empty:
            sender.send(flags=FINAL)
        else:
            sender.send(response, flags=FINAL)
        return None

    def _call(self, model, inputs, outputs, decoupled=False, request_id=""):
        request = pb_utils.InferenceRequest(
            model_name=model, inputs=inputs, requested_output_names=outputs, request_id=request_id
        )
        return request.exec(decoupled=decoupled)

    def _tokenize(self, request):
        response = self._call("preprocessing", _forward(request, _PREPROCESSING_INPUTS), list(_PREPROCESSING_OUTPUTS))
        if response.has_error():
            raise RuntimeError(response.error().message())
        found = _outputs(response, _PREPROCESSING_OUTPUTS)
        return [pb_utils.Tensor(_PREPROCESSING_OUTPUTS[name], tensor.as_numpy()) for name, tensor in found.items()]

    def _detokenize(self, generation_response):
        names = ["output_ids", "sequence_length", "cum_log_probs", "output_log_probs"]
        found = _outputs(generation_response, names)
        inputs = [
            pb_utils.Tensor(target, found[source].as_numpy())
            for source, target in zip(
                names, ["TOKENS_BATCH", "SEQUENCE_LENGTH", "CUM_LOG_PROBS", "OUTPUT_LOG_PROBS"], strict=True
            )
            if found[source] is not None
        ]
        response = self._call(
            "postprocessing", inputs, ["OUTPUT", "NUM_OUTPUT_TOKENS", "OUT_CUM_LOG_PROBS", "OUT_OUTPUT_LOG_PROBS"]
        )
        if response.has_error():
            raise RuntimeError(response.error().message())
        out = _outputs(response, ["OUTPUT", "NUM_OUTPUT_TOKENS", "OUT_CUM_LOG_PROBS", "OUT_OUTPUT_LOG_PROBS"])
        return (
            out["OUTPUT"].as_numpy().reshape(-1)[0],
            int(out["NUM_OUTPUT_TOKENS"].as_numpy().reshape(-1)[0]),
            out["OUT_CUM_LOG_PROBS"].as_numpy(),
            out["OUT_OUTPUT_LOG_PROBS"].as_numpy(),
        )

    def _check(self, job):
        if self.closing.is_set():
            raise _Cancelled(unloading=True)
        if job.cancelled():
            raise _Cancelled

    def _start_generation(self, job, inputs):
        """The generation request's response iterator, once its first response is in. Waits its turn for one of the
        FIRST_RESPONSE_WAITERS places, checking its cancellation meanwhile; while it then waits for the first
        response, the watcher stops it if it is cancelled."""
        while not self.first_response_slots.acquire(timeout=WATCH_INTERVAL_S):
            self._check(job)
        try:
            self._check(job)  # cancelled before anything was generated: the generation model never sees it
            job.waiting = job.submitted = True
            responses = self._call(
                self.generation_model,
                inputs,
                ["output_ids", "sequence_length", "cum_log_probs", "output_log_probs"],
                decoupled=True,
                request_id=job.inner_id,
            )
        finally:
            self.first_response_slots.release()
        return responses

    def _generate(self, job):
        request, sender = job.request, job.sender
        self._check(job)  # it may have waited for a worker
        streaming = self.decoupled and input_scalar(request, "stream", False, bool)
        inputs = self._tokenize(request) + _forward(request, _GENERATION_INPUTS)
        inputs.append(pb_utils.Tensor("streaming", np.array([[streaming]], dtype=bool)))
        responses = self._start_generation(job, inputs)
        job.waiting = not streaming  # streamed: checked at every response below; else the single one is the last
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, tokens, cum, per_token = "", 0, np.zeros((1, 1), np.float32), []
        for index, generation_response in enumerate(responses):
            if job.stops_sent:  # wait for the generation model to end the request, then report it cancelled
                if index == 0 and streaming and generation_response.output_tensors():
                    # Stopped while waiting, perhaps before the model knew the request id (TensorRT-LLM then
                    # ignores the stop), and still generating: say it again.
                    self._stop(job, again=True)
                continue
            if streaming and job.cancelled():
                self._stop(job)
                continue
            if generation_response.has_error():
                raise RuntimeError(generation_response.error().message())
            if not generation_response.output_tensors():  # an empty final response
                continue
            chunk, count, cum, log_probs = self._detokenize(generation_response)
            delta = decoder.decode(chunk)
            text, tokens = text + delta, tokens + count
            per_token.append(log_probs.reshape(-1))
            if streaming and (delta or count):
                sender.send(self._response(text if self.accumulate else delta, count, cum, log_probs))
        if job.stops_sent:
            self._check(job)
            raise _Cancelled(unloading=True)  # stopped by finalize() before the client's cancellation was seen
        tail = decoder.decode(b"", final=True)
        text += tail
        if streaming:
            last = self._response(text if self.accumulate else tail, 0, cum, np.zeros((1, 1, 0), np.float32))
            return self._final(job, last)
        merged = np.concatenate(per_token).reshape(1, 1, -1) if per_token else np.zeros((1, 1, 0), np.float32)
        return self._final(job, self._response(text, tokens, cum, merged))

    def _watch(self):
        """Stops the cancelled requests that cannot notice it themselves (see the module docstring)."""
        while not self.closing.wait(WATCH_INTERVAL_S):
            with self.jobs_changed:
                waiting = [job for job in self.jobs.values() if job.waiting and job.submitted and not job.stops_sent]
            for job in waiting:
                try:
                    if job.cancelled_unless_finished():
                        self._stop(job)
                except Exception as error:  # the watcher must outlive any one request's failure
                    pb_utils.Logger.log_warn(f"tensorrt_llm_bls: cancelling {job.inner_id} failed: {error}")

    def _stop(self, job, again=False):
        """Ask the generation model to stop the request (TensorRT-LLM's `stop` input, keyed by request id)."""
        if not job.claim_stop(again):
            return
        stop = [
            pb_utils.Tensor("input_ids", np.zeros((1, 1), np.int32)),
            pb_utils.Tensor("input_lengths", np.ones((1, 1), np.int32)),
            pb_utils.Tensor("request_output_len", np.ones((1, 1), np.int32)),
            pb_utils.Tensor("stop", np.array([[True]])),
        ]
        for _ in self._call(self.generation_model, stop, ["output_ids"], decoupled=True, request_id=job.inner_id):
            pass

    @staticmethod
    def _response(text, count, cum, log_probs):
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("text_output", np.array([[text.encode("utf-8")]], dtype=object)),
                pb_utils.Tensor("num_output_tokens", np.array([[count]], dtype=np.int32)),
                pb_utils.Tensor("cum_log_probs", np.asarray(cum, np.float32).reshape(1, -1)),
                pb_utils.Tensor("output_log_probs", np.asarray(log_probs, np.float32).reshape(1, 1, -1)),
            ]
        )
