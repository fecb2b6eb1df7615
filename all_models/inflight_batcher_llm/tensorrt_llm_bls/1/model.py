"""Triton Python model (BLS): preprocessing -> tensorrt_llm -> postprocessing in code, streaming exact text deltas.

postprocessing returns the raw bytes of each chunk's tokens; this model decodes them incrementally, so a character
split across two tokens is sent whole in one delta and every delta is valid UTF-8. With accumulate_tokens it sends
the whole text so far instead of deltas. Each request runs on a worker thread, so many are in flight at once.
"""

import codecs
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

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


class TritonPythonModel:
    def initialize(self, args):
        params = parameters(args)
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"]))
        self.generation_model = params.get("tensorrt_llm_model_name") or "tensorrt_llm"
        self.accumulate = flag(params.get("accumulate_tokens", "false"))
        self.pool = ThreadPoolExecutor(max_workers=int(params.get("max_requests_in_flight", "64") or 64))

    def finalize(self):
        self.pool.shutdown(wait=False, cancel_futures=True)

    def execute(self, requests):
        if self.decoupled:
            for request in requests:
                self.pool.submit(self._serve, request, request.get_response_sender())
            return None
        futures = [self.pool.submit(self._serve, request, None) for request in requests]
        return [future.result() for future in futures]

    def _serve(self, request, sender):
        """Run one request; in decoupled mode send its responses, otherwise return the single response."""
        try:
            return self._generate(request, sender)
        except Exception as error:  # report to this client only; the model keeps serving
            response = error_response(f"tensorrt_llm_bls: {error}")
            if sender is None:
                return response
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

    def _generate(self, request, sender):
        streaming = self.decoupled and input_scalar(request, "stream", False, bool)
        inputs = self._tokenize(request) + _forward(request, _GENERATION_INPUTS)
        inputs.append(pb_utils.Tensor("streaming", np.array([[streaming]], dtype=bool)))
        inner_id = f"bls-{uuid.uuid4().hex}"
        responses = self._call(
            self.generation_model,
            inputs,
            ["output_ids", "sequence_length", "cum_log_probs", "output_log_probs"],
            decoupled=True,
            request_id=inner_id,
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, tokens, cum, per_token = "", 0, np.zeros((1, 1), np.float32), []
        for generation_response in responses:
            if sender is not None and sender.is_cancelled():
                self._cancel(inner_id)
                sender.send(flags=FINAL)
                return None
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
        tail = decoder.decode(b"", final=True)
        text += tail
        if streaming:
            sender.send(
                self._response(text if self.accumulate else tail, 0, cum, np.zeros((1, 1, 0), np.float32)), flags=FINAL
            )
            return None
        merged = np.concatenate(per_token).reshape(1, 1, -1) if per_token else np.zeros((1, 1, 0), np.float32)
        response = self._response(text, tokens, cum, merged)
        if sender is None:
            return response
        sender.send(response, flags=FINAL)
        return None

    def _cancel(self, inner_id):
        """Ask the generation model to stop the request (TensorRT-LLM's `stop` input, keyed by request id)."""
        stop = [
            pb_utils.Tensor("input_ids", np.zeros((1, 1), np.int32)),
            pb_utils.Tensor("input_lengths", np.ones((1, 1), np.int32)),
            pb_utils.Tensor("request_output_len", np.ones((1, 1), np.int32)),
            pb_utils.Tensor("stop", np.array([[True]])),
        ]
        for _ in self._call(self.generation_model, stop, ["output_ids"], decoupled=True, request_id=inner_id):
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
