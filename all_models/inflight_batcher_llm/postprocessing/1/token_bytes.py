"""The exact bytes of every token id, so that detokenizing is concatenation (and exact across stream chunks)."""

import json


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
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


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
    added_tokens = getattr(tokenizer, "added_tokens_decoder", {})
    added = {index: token.content for index, token in added_tokens.items()}
    # all_special_ids misses added tokens marked special (transformers 5 lists only bos/eos/unk/pad there)
    special = set(tokenizer.all_special_ids) | {i for i, t in added_tokens.items() if t.special}
    special = special if skip_special_tokens else set()
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


def _sequence_length(lead):
    return 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


def stream_chunk(data):
    """Valid UTF-8 except a character that may continue in the neighbouring chunk, kept raw at either edge.

    Bytes that are invalid wherever the chunk boundaries fall are replaced (as the decoder would), so decoding the
    concatenated chunks incrementally still gives exactly the text of the whole output.
    """
    start = 0
    while start < min(3, len(data)) and 0x80 <= data[start] < 0xC0:
        start += 1
    end = len(data)
    for back in range(1, min(4, len(data) - start) + 1):
        byte = data[end - back]
        if byte >= 0xC0:
            if back < _sequence_length(byte):
                end -= back
            break
        if byte < 0x80:
            break
    return data[:start] + data[start:end].decode("utf-8", "replace").encode("utf-8") + data[end:]
