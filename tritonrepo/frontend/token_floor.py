"""A floor on a prompt's token count from its length alone, read off the tokenizer's pipeline, so that a prompt that
cannot fit the model is refused without tokenizing it.

Why it is safe: when nothing in the pipeline can delete text or let one token stand for an unbounded run of it,
every code point of the prompt ends up inside some token, and one token covers at most as many code points as its
longest string in the vocabulary (byte-level tokens: one byte, so at most one code point, per character of the
token). Normalizers may shrink the text first: Unicode composition (NFC, NFKC) merges at most
MAX_COMPOSED_CODE_POINTS code points into one, and a Replace of a longer string by a shorter one shrinks by their
ratio. Anything else that could shrink or drop text without limit (Strip, StripAccents, regex replacements,
SentencePiece's precompiled normalizer, whitespace-removing pre-tokenizers, models other than BPE, fused unknown
tokens, added tokens that swallow the whitespace around them) turns the floor off: such prompts are tokenized first.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# The longest canonical decomposition (e.g. U+1F84 GREEK SMALL LETTER ALPHA WITH PSILI AND OXIA AND YPOGEGRAMMENI):
# composition turns at most this many code points into one. Decomposition and case mapping never shorten text.
MAX_COMPOSED_CODE_POINTS = 4


@dataclass(frozen=True)
class TokenFloor:
    """No text of n code points tokenizes to fewer than ceil(n / chars_per_token) tokens; for ASCII text (which no
    Unicode normalization shortens) ceil(n / ascii_chars_per_token)."""

    chars_per_token: int
    ascii_chars_per_token: int

    def tokens_at_least(self, text: str) -> int:
        # len() and isascii() of a str take constant time: the floor costs nothing, however long the prompt.
        per_token = self.ascii_chars_per_token if text.isascii() else self.chars_per_token
        return -(-len(text) // per_token)


class _Unbounded(Exception):
    """The pipeline can shrink or drop text without limit; the message says which part."""


def token_floor(tokenizer: Any) -> TokenFloor | None:
    """The floor for a fast (Rust-backed) tokenizer, or None when its pipeline allows none (or it is not one)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        log.info("prompts are measured only by tokenizing them: the tokenizer is not a fast tokenizer")
        return None
    try:
        spec = json.loads(backend.to_str())
    except Exception as exc:  # a backend that cannot serialize itself: no floor rather than no front end
        log.info("prompts are measured only by tokenizing them: cannot read the tokenizer's pipeline (%s)", exc)
        return None
    try:
        floor = floor_from_spec(spec)
    except _Unbounded as exc:
        log.info("prompts are measured only by tokenizing them: the tokenizer has %s", exc)
        return None
    log.debug(
        "token floor: one token per %d characters at most (%d for ASCII)",
        floor.chars_per_token,
        floor.ascii_chars_per_token,
    )
    return floor


def floor_from_spec(spec: dict[str, Any]) -> TokenFloor:
    """The floor for a tokenizer.json document; raises _Unbounded when there is none."""
    shrink, ascii_shrink = _normalizer_shrink(spec.get("normalizer"))
    byte_level = _check_pre_tokenizer(spec.get("pre_tokenizer")) or _mentions_byte_level(spec.get("normalizer"))
    longest = _longest_model_token(spec.get("model") or {}, byte_level)
    for added in spec.get("added_tokens") or ():
        if added.get("lstrip") or added.get("rstrip"):
            raise _Unbounded(f"the added token {added.get('content')!r}, which absorbs the whitespace around it")
        longest = max(longest, len(added.get("content") or ""))
    if longest < 1:
        raise _Unbounded("an empty vocabulary")
    return TokenFloor(
        chars_per_token=math.ceil(longest * shrink), ascii_chars_per_token=math.ceil(longest * ascii_shrink)
    )


def _normalizer_shrink(spec: dict[str, Any] | None) -> tuple[float, float]:
    """(the most the normalizer shortens any text, the most it shortens ASCII text), as factors of code points."""
    shrink, ascii_shrink, still_ascii = 1.0, 1.0, True
    for step in _flatten(spec, "normalizers"):
        kind = step.get("type")
        if kind in ("NFC", "NFKC"):
            shrink *= MAX_COMPOSED_CODE_POINTS
            # ASCII is already composed and composes with nothing, unless an earlier step made it something else.
            ascii_shrink *= 1 if still_ascii else MAX_COMPOSED_CODE_POINTS
        elif kind in ("NFD", "NFKD", "Lowercase"):
            pass  # each code point becomes one or more
        elif kind == "Prepend":
            still_ascii = still_ascii and str(step.get("prepend", "")).isascii()
        elif kind == "Replace":
            factor, produces_ascii = _replace_shrink(step)
            shrink *= factor
            ascii_shrink *= factor
            still_ascii = still_ascii and produces_ascii
        elif kind == "ByteLevel":
            still_ascii = False  # bytes become characters such as "Ġ"; it never shortens
        else:
            raise _Unbounded(f"the {kind} normalizer, which may remove text")
    return shrink, ascii_shrink


def _replace_shrink(step: dict[str, Any]) -> tuple[float, bool]:
    pattern = (step.get("pattern") or {}).get("String")
    content = str(step.get("content", ""))
    if pattern is None:
        raise _Unbounded("a Replace normalizer with a regular expression, which may match any length")
    if not content and pattern:
        raise _Unbounded(f"a Replace normalizer that deletes {pattern!r}")
    return max(1.0, len(pattern) / max(len(content), 1)), content.isascii()


def _check_pre_tokenizer(spec: dict[str, Any] | None) -> bool:
    """Raises for pre-tokenizers that drop text; returns whether one of them maps bytes to characters (ByteLevel)."""
    byte_level = False
    for step in _flatten(spec, "pretokenizers"):
        kind = step.get("type")
        if kind in ("Split", "Punctuation") and str(step.get("behavior", "")).lower() == "removed":
            raise _Unbounded(f"a {kind} pre-tokenizer that removes what it splits on")
        if kind == "ByteLevel":
            byte_level = True
        elif kind not in ("Split", "Punctuation", "Metaspace", "Digits", "UnicodeScripts"):
            raise _Unbounded(f"the {kind} pre-tokenizer, which may drop text")
    return byte_level


def _longest_model_token(model: dict[str, Any], byte_level: bool) -> int:
    kind = model.get("type")
    if kind != "BPE":
        # WordPiece and WordLevel give one unknown token for a whole word, Unigram fuses unknown runs.
        raise _Unbounded(f"a {kind} model, whose unknown token may stand for any length of text")
    vocab = model.get("vocab") or {}
    if not _every_character_has_a_token(model, vocab, byte_level):
        raise _Unbounded("a BPE model that skips characters it does not know, or fuses them into one unknown token")
    return max((len(token) for token in vocab), default=0)


def _every_character_has_a_token(model: dict[str, Any], vocab: dict[str, Any], byte_level: bool) -> bool:
    """Whether each character of the text becomes at least one token (BPE without an unknown token skips unknown
    characters; with fuse_unk, a run of them becomes one token)."""
    if byte_level:
        from tokenizers import pre_tokenizers

        if all(char in vocab for char in pre_tokenizers.ByteLevel.alphabet()):
            return True
    if model.get("byte_fallback") and all(f"<0x{byte:02X}>" in vocab for byte in range(256)):
        return True
    unknown = model.get("unk_token")
    return unknown is not None and unknown in vocab and not model.get("fuse_unk")


def _mentions_byte_level(spec: dict[str, Any] | None) -> bool:
    return any(step.get("type") == "ByteLevel" for step in _flatten(spec, "normalizers"))


def _flatten(spec: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """The steps of a component, Sequences opened up (`key` names a Sequence's list of steps)."""
    if spec is None:
        return []
    if spec.get("type") == "Sequence":
        return [step for inner in spec.get(key) or () for step in _flatten(inner, key)]
    return [spec]
