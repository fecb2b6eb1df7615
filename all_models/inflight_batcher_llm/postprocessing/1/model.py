"""Triton Python model: token ids -> the exact UTF-8 bytes of those tokens.

Why bytes and not `tokenizer.decode(new_tokens)`: in streaming, each response carries only the new token(s), and
decoding them alone loses the leading space of SentencePiece pieces and turns a character split across two tokens
into U+FFFD (the upstream streaming bug). Each token's bytes, concatenated over the stream, are exactly the bytes of
the whole text; a consumer that decodes them incrementally (our BLS model and front end do) gets the exact text.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from model_utils import flag, parameters, resolve


def _byte_level_decoder():
    """The inverse of GPT-2's byte-to-unicode table used by byte-level BPE vocabularies."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


def _decoder_kinds(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    return {part.get("type") for part in parts}


def token_byte_table(tokenizer, skip_special_tokens):
    """bytes of every token id, so that decoding is a concatenation (exact across stream chunks)."""
    size = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    added = {index: token.content for index, token in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    special = set(tokenizer.all_special_ids) if skip_special_tokens else set()
    kinds = _decoder_kinds(tokenizer)
    byte_level = _byte_level_decoder() if "ByteLevel" in kinds else None
    table = []
    for index, piece in enumerate(pieces):
        if index in special or piece is None:
            table.append(b"")
        elif index in added:
            table.append(added[index].encode("utf-8"))
        elif byte_level is not None:
            table.append(
                bytes(byte_level[ch] for ch in piece)
                if all(ch in byte_level for ch in piece)
                else piece.encode("utf-8")
            )
        elif piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:  # SentencePiece byte fallback
            table.append(bytes([int(piece[3:5], 16)]))
        elif "Replace" in kinds or "Metaspace" in kinds:
            table.append(piece.replace("\u2581", " ").encode("utf-8"))
        else:  # other vocabularies: per-token decode is the best available approximation
            table.append(tokenizer.decode([index], skip_special_tokens=skip_special_tokens).encode("utf-8"))
    return table


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
                texts[b, beam] = b"".join(table[i] for i in ids.tolist() if 0 <= i < size)
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
