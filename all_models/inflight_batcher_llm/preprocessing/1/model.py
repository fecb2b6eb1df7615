"""Triton Python model: text -> token ids. Tokenization only; chat templates are the front end's job."""

import numpy as np
import triton_python_backend_utils as pb_utils
from model_utils import error_response, flag, input_scalar, parameters, resolve


class TritonPythonModel:
    def initialize(self, args):
        from transformers import AutoTokenizer  # heavy: import once, at load

        params = parameters(args)
        self.tokenizer = AutoTokenizer.from_pretrained(str(resolve(args, params["tokenizer_dir"])))
        self.add_special_tokens = flag(params.get("add_special_tokens", "true"))
        self.max_input_len = int(params.get("max_input_len", "0") or 0)
        tok = self.tokenizer
        self.end_id = tok.eos_token_id if tok.eos_token_id is not None else 0
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.end_id
        # A prompt that already starts with BOS (a chat template put it there) must not get a second one.
        self.bos_text = tok.bos_token or None

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._tokenize(request))
            except ValueError as error:
                responses.append(error_response(f"preprocessing: {error}"))
        return responses

    def _encode(self, text):
        add_special = self.add_special_tokens and not (self.bos_text and text.startswith(self.bos_text))
        ids = self.tokenizer.encode(text, add_special_tokens=add_special)
        if not ids:
            raise ValueError("the prompt is empty (it tokenizes to zero tokens)")
        if self.max_input_len and len(ids) > self.max_input_len:
            raise ValueError(f"the prompt has {len(ids)} tokens, more than max_input_len={self.max_input_len}")
        return ids

    def _tokenize(self, request):
        queries = pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy().reshape(-1)
        batch = len(queries)
        ids = [self._encode(q.decode("utf-8") if isinstance(q, bytes) else str(q)) for q in queries]
        pad_id = input_scalar(request, "PAD_ID", self.pad_id)
        end_id = input_scalar(request, "END_ID", self.end_id)
        width = max(len(x) for x in ids)
        input_ids = np.full((batch, width), pad_id, dtype=np.int32)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = x
        lengths = np.array([[len(x)] for x in ids], dtype=np.int32)
        output_len = pb_utils.get_input_tensor_by_name(request, "REQUEST_OUTPUT_LEN").as_numpy()
        outputs = [
            pb_utils.Tensor("INPUT_ID", input_ids),
            pb_utils.Tensor("REQUEST_INPUT_LEN", lengths),
            pb_utils.Tensor("BAD_WORDS_IDS", self._word_list(request, "BAD_WORDS_DICT", batch)),
            pb_utils.Tensor("STOP_WORDS_IDS", self._word_list(request, "STOP_WORDS_DICT", batch)),
            pb_utils.Tensor("REQUEST_OUTPUT_LEN", output_len.astype(np.int32).reshape(batch, 1)),
            pb_utils.Tensor("OUT_END_ID", np.full((batch, 1), end_id, dtype=np.int32)),
            pb_utils.Tensor("OUT_PAD_ID", np.full((batch, 1), pad_id, dtype=np.int32)),
        ]
        return pb_utils.InferenceResponse(output_tensors=outputs + self._upstream_extras(request, input_ids, pad_id))

    def _upstream_extras(self, request, input_ids, pad_id):
        """Upstream's other outputs, each only when its input is given: an absent output reaches tensorrt_llm as an
        absent input (not set). What the generation model cannot honour, it refuses there, naming the input."""
        batch, extras = len(input_ids), []
        decoder = pb_utils.get_input_tensor_by_name(request, "DECODER_QUERY")
        if decoder is not None:
            texts = [q.decode("utf-8") if isinstance(q, bytes) else str(q) for q in decoder.as_numpy().reshape(-1)]
            ids = [self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens) for text in texts]
            width = max(len(x) for x in ids)
            decoder_ids = np.full((batch, width), pad_id, dtype=np.int32)
            for row, x in enumerate(ids):
                decoder_ids[row, : len(x)] = x
            extras.append(pb_utils.Tensor("DECODER_INPUT_ID", decoder_ids))
            extras.append(pb_utils.Tensor("REQUEST_DECODER_INPUT_LEN", np.array([[len(x)] for x in ids], np.int32)))
        bias = self._embedding_bias(request, batch)
        if bias is not None:
            extras.append(pb_utils.Tensor("EMBEDDING_BIAS", bias))
        extra_id = pb_utils.get_input_tensor_by_name(request, "PROMPT_TABLE_EXTRA_ID")
        if extra_id is not None:  # marks the ids past the vocabulary (prompt-table rows) with the request's extra id
            marks = np.where(input_ids >= len(self.tokenizer), extra_id.as_numpy().reshape(batch, 1), 0)
            extras.append(pb_utils.Tensor("OUT_PROMPT_TABLE_EXTRA_IDS", marks.astype(np.uint64)))
        return extras

    def _embedding_bias(self, request, batch):
        """Words and weights -> a [batch, vocab] bias: each token of a word gets the word's weight added."""
        words = pb_utils.get_input_tensor_by_name(request, "EMBEDDING_BIAS_WORDS")
        weights = pb_utils.get_input_tensor_by_name(request, "EMBEDDING_BIAS_WEIGHTS")
        if words is None and weights is None:
            return None
        if words is None or weights is None:
            given, missing = ("WORDS", "WEIGHTS") if weights is None else ("WEIGHTS", "WORDS")
            raise ValueError(f"EMBEDDING_BIAS_{given} needs EMBEDDING_BIAS_{missing} (one weight per word)")
        words, weights = words.as_numpy().reshape(batch, -1), weights.as_numpy().reshape(batch, -1)
        if words.shape != weights.shape:
            raise ValueError(
                f"EMBEDDING_BIAS_WORDS has {words.shape[1]} words but EMBEDDING_BIAS_WEIGHTS has {weights.shape[1]} "
                "weights; give one weight per word"
            )
        bias = np.zeros((batch, len(self.tokenizer)), dtype=np.float32)
        for row in range(batch):
            for word, weight in zip(words[row], weights[row], strict=True):
                text = word.decode("utf-8") if isinstance(word, bytes) else str(word)
                for token in self.tokenizer.encode(text, add_special_tokens=False):
                    bias[row, token] += weight
        return bias

    def _word_list(self, request, name, batch):
        """Words -> the [batch, 2, n] layout of TensorRT-LLM: flat token ids, then end offsets (padded with -1)."""
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        rows = tensor.as_numpy().reshape(batch, -1) if tensor is not None else [[] for _ in range(batch)]
        flat_rows, offset_rows = [], []
        for words in rows:
            flat, offsets = [], []
            for word in words:
                text = word.decode("utf-8") if isinstance(word, bytes) else str(word)
                if not text:
                    continue
                flat += self.tokenizer.encode(text, add_special_tokens=False)
                offsets.append(len(flat))
            flat_rows.append(flat)
            offset_rows.append(offsets)
        width = max(1, *(len(f) for f in flat_rows))
        out = np.zeros((batch, 2, width), dtype=np.int32)
        out[:, 1, :] = -1
        for row, (flat, offsets) in enumerate(zip(flat_rows, offset_rows, strict=True)):
            out[row, 0, : len(flat)] = flat
            out[row, 1, : len(offsets)] = offsets
        return out
