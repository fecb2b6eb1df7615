"""Triton Python model: token ids -> the exact UTF-8 bytes of those tokens.

Why bytes and not `tokenizer.decode(new_tokens)`: in streaming, each response carries only the new token(s), and
decoding them alone loses the leading space of SentencePiece pieces and turns a character split across two tokens
into U+FFFD (the upstream streaming bug). Here a character split across two responses stays raw bytes at the chunk's
edge (everything else is valid UTF-8), so a consumer that decodes the chunks incrementally (our BLS model and front
end do) gets exactly the text of the whole output. This model cannot tell a streamed chunk from a complete output (an
ensemble may not feed it anything but the decoupled model's outputs), so a complete output that ends inside a
character (cut by max_tokens) also keeps that fragment raw.
"""

import numpy as np
import triton_python_backend_utils as pb_utils
from model_utils import flag, parameters, resolve
from token_bytes import stream_chunk, token_byte_table


class TritonPythonModel:
    def initialize(self, args):
        from transformers import AutoTokenizer  # heavy: import once, at load

        params = parameters(args)
        tokenizer = AutoTokenizer.from_pretrained(str(resolve(args, params["tokenizer_dir"])))
        self.table = token_byte_table(tokenizer, flag(params.get("skip_special_tokens", "true")))

    def execute(self, requests):
        return [self._decode(request) for request in requests]

    def _decode(self, request):
        tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
        lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
        batch, beams = tokens.shape[0], tokens.shape[1]
        table, size = self.table, len(self.table)
        texts = np.empty((batch, beams), dtype=object)
        for b in range(batch):
            for beam in range(beams):
                ids = tokens[b, beam, : int(lengths[b, beam])]
                texts[b, beam] = stream_chunk(b"".join(table[i] for i in ids.tolist() if 0 <= i < size))
        counts = lengths[:, :1].astype(np.int32).reshape(batch, 1)
        cum = pb_utils.get_input_tensor_by_name(request, "CUM_LOG_PROBS")
        per_token = pb_utils.get_input_tensor_by_name(request, "OUTPUT_LOG_PROBS")
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("OUTPUT", texts),
                pb_utils.Tensor("NUM_OUTPUT_TOKENS", counts),
                pb_utils.Tensor(
                    "OUT_CUM_LOG_PROBS", cum.as_numpy() if cum is not None else np.zeros((batch, beams), np.float32)
                ),
                pb_utils.Tensor(
                    "OUT_OUTPUT_LOG_PROBS",
                    per_token.as_numpy() if per_token is not None else np.zeros((batch, beams, 1), np.float32),
                ),
            ]
        )
