"""Tests for tritonrepo/frontend/token_floor.py: the floor never exceeds the real token count (property-tested on the
pipelines LLM tokenizers use, with text chosen to shrink under normalization), and pipelines that could shrink text
without limit get no floor."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from tritonrepo.frontend.token_floor import MAX_COMPOSED_CODE_POINTS, _Unbounded, floor_from_spec, token_floor

CORPUS = [
    "héllo 🙂 wörld, the quick brown fox jumps over the lazy dog.     indented    code",
    "Grüße aus Köln! Ça va très bien. 日本語のテキスト. 한국어 텍스트",
    "aaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbb 0123456789 ================",
]
# Text that shrinks under normalization: decomposed accents and Hangul jamo compose (NFC), mathematical letters and
# full-width forms fold to ASCII (NFKC), double spaces are replaced by one (the Replace below); plus runs a greedy
# tokenizer merges well.
SHRINKING = [
    "e\u0301",
    "\u03b1\u0313\u0301\u0345",
    "\u1100\u1161\u11a8",
    "\U0001d400",
    "\uff21",
    "  ",
    " ",
    "a",
    "=",
    "é",
    "🙂",
    "\u212b",
    "\n",
]
TEXTS = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(SHRINKING), max_size=200).map("".join),
    st.lists(st.sampled_from(CORPUS + SHRINKING), max_size=30).map("".join),
)


def _trained(pre_tokenizer, normalizer=None, *, byte_level: bool) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "<unk>"], initial_alphabet=alphabet)
    tokenizer.train_from_iterator(CORPUS * 3, trainer=trainer)
    return tokenizer


def _with_model(tokenizer: Tokenizer, **model_changes) -> Tokenizer:
    spec = json.loads(tokenizer.to_str())
    spec["model"].update(model_changes)
    if model_changes.get("byte_fallback"):  # SentencePiece-style: a token for every byte, for unknown characters
        base = len(spec["model"]["vocab"])
        spec["model"]["vocab"].update({f"<0x{byte:02X}>": base + byte for byte in range(256)})
    return Tokenizer.from_str(json.dumps(spec))


def byte_level_bpe() -> Tokenizer:  # GPT-2, Llama 3, tiny-llama
    tokenizer = _trained(pre_tokenizers.ByteLevel(add_prefix_space=False), byte_level=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def nfc_split_byte_level_bpe() -> Tokenizer:  # Qwen2: NFC, a splitting regex, then bytes
    split = pre_tokenizers.Split(pattern=r"\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+", behavior="isolated")
    pre = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer = _trained(pre, normalizers.NFC(), byte_level=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def sentencepiece_bpe() -> Tokenizer:  # Llama 2, Mistral: "▁" for spaces, byte fallback, a fused unknown token
    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer = _with_model(
        _trained(None, normalizer, byte_level=False), unk_token="<unk>", fuse_unk=True, byte_fallback=True
    )
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer


def folding_bpe() -> Tokenizer:  # NFKC, lower case, two spaces made one, Metaspace, an unfused unknown token
    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace("  ", " ")])
    tokenizer = _with_model(_trained(pre_tokenizers.Metaspace(), normalizer, byte_level=False), unk_token="<unk>")
    tokenizer.decoder = decoders.Metaspace()
    return tokenizer


class Fast:
    """Stands in for a transformers fast tokenizer: token_floor only reads `backend_tokenizer`."""

    def __init__(self, backend: Tokenizer) -> None:
        self.backend_tokenizer = backend


PIPELINES = {
    "byte-level": byte_level_bpe,
    "nfc-split-byte-level": nfc_split_byte_level_bpe,
    "sentencepiece": sentencepiece_bpe,
    "nfkc-lowercase-replace": folding_bpe,
}


def _longest_tokens_as_text(tokenizer: Tokenizer, count: int = 20) -> list[str]:
    """What the longest tokens stand for: text made of them is where the floor comes closest to the real count."""
    longest = sorted(tokenizer.get_vocab().items(), key=lambda item: -len(item[0]))[:count]
    return [text for _, token_id in longest if (text := tokenizer.decode([token_id], skip_special_tokens=False))]


@pytest.mark.parametrize("make", PIPELINES.values(), ids=PIPELINES.keys())
def test_the_floor_never_exceeds_the_real_token_count(make):
    tokenizer = make()
    floor = token_floor(Fast(tokenizer))
    assert floor is not None
    tight = st.lists(st.sampled_from(_longest_tokens_as_text(tokenizer) + SHRINKING), max_size=60).map("".join)

    @settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(text=st.one_of(TEXTS, tight), add_special_tokens=st.booleans())
    def check(text: str, add_special_tokens: bool) -> None:
        assert floor.tokens_at_least(text) <= len(tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    check()


def test_unicode_composition_is_allowed_for_except_on_ascii_text():
    tokenizer = nfc_split_byte_level_bpe()
    floor = token_floor(Fast(tokenizer))
    longest = max(len(token) for token in tokenizer.get_vocab())
    assert floor.chars_per_token == longest * MAX_COMPOSED_CODE_POINTS and floor.ascii_chars_per_token == longest
    # Hangul jamo: three code points compose into one syllable, which one token may cover.
    jamo = "\u1100\u1161\u11a8" * 50
    assert floor.tokens_at_least(jamo) <= len(tokenizer.encode(jamo).ids)


def test_a_replace_that_shortens_text_widens_the_floor_by_its_ratio():
    floor = token_floor(Fast(folding_bpe()))
    assert floor.chars_per_token == floor.ascii_chars_per_token * MAX_COMPOSED_CODE_POINTS
    tokenizer = folding_bpe()
    longest = max(len(token) for token in tokenizer.get_vocab())
    assert floor.ascii_chars_per_token == 2 * longest  # "  " becomes " "


def test_the_tiny_models_floor_refuses_an_8_mb_prompt(tiny_tokenizer):
    # The prompt: 8 MB of text against tiny-llama's 1,024 input tokens.
    floor = token_floor(tiny_tokenizer)
    assert floor is not None
    for prompt in ("x" * (8 << 20), "日本語 " * (2 << 20)):
        assert floor.tokens_at_least(prompt) > 1024
    short = "The quick brown fox jumps over the lazy dog."
    assert floor.tokens_at_least(short) <= len(tiny_tokenizer.encode(short, add_special_tokens=False))


def _spec(make=byte_level_bpe) -> dict:
    return json.loads(make().to_str())


def _unbounded_specs() -> dict[str, dict]:
    cases: dict[str, dict] = {}

    def case(name: str, spec: dict) -> None:
        cases[name] = spec

    for name, normalizer in [
        ("strip", normalizers.Strip()),
        ("strip-accents", normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()])),
        ("bert", normalizers.BertNormalizer()),
        ("regex-replace", normalizers.Replace(pattern=__import__("tokenizers").Regex(r"\s+"), content=" ")),
        ("deleting-replace", normalizers.Replace("x", "")),
    ]:
        tokenizer = byte_level_bpe()
        tokenizer.normalizer = normalizer
        case(f"normalizer-{name}", json.loads(tokenizer.to_str()))
    for name, pre in [
        ("whitespace", pre_tokenizers.Whitespace()),
        ("whitespace-split", pre_tokenizers.WhitespaceSplit()),
        ("bert", pre_tokenizers.BertPreTokenizer()),
        ("split-removed", pre_tokenizers.Split(" ", behavior="removed")),
        ("punctuation-removed", pre_tokenizers.Punctuation(behavior="removed")),
        ("char-delimiter", pre_tokenizers.CharDelimiterSplit(" ")),
    ]:
        tokenizer = byte_level_bpe()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre, pre_tokenizers.ByteLevel(use_regex=False)])
        case(f"pre-tokenizer-{name}", json.loads(tokenizer.to_str()))
    spec = _spec()
    spec["model"]["type"] = "WordPiece"
    case("wordpiece", spec)
    spec = _spec()
    spec["model"]["type"] = "Unigram"
    case("unigram", spec)
    # Without byte-level pre-tokenizing, BPE skips characters it has no token for, and a fused unknown token may
    # stand for a whole run of them.
    spec = _spec(sentencepiece_bpe)
    spec["model"].update(byte_fallback=False, unk_token=None)
    case("bpe-skipping-unknown-characters", spec)
    spec = _spec(sentencepiece_bpe)
    spec["model"]["byte_fallback"] = False
    case("bpe-fusing-unknown-characters", spec)
    spec = _spec(sentencepiece_bpe)
    del spec["model"]["vocab"]["<0x41>"]
    case("bpe-with-an-incomplete-byte-fallback", spec)
    spec = _spec()
    del spec["model"]["vocab"][pre_tokenizers.ByteLevel.alphabet()[0]]
    case("byte-level-with-an-incomplete-alphabet", spec)
    spec = _spec()
    spec["added_tokens"] = [{"id": 9999, "content": "<mask>", "lstrip": True, "rstrip": False}]
    case("added-token-eating-whitespace", spec)
    return cases


UNBOUNDED = _unbounded_specs()


@pytest.mark.parametrize("spec", UNBOUNDED.values(), ids=UNBOUNDED.keys())
def test_pipelines_that_may_shrink_text_without_limit_get_no_floor(spec):
    with pytest.raises(_Unbounded):
        floor_from_spec(copy.deepcopy(spec))


def test_no_floor_is_no_refusal_and_says_why(caplog):
    tokenizer = byte_level_bpe()
    tokenizer.normalizer = normalizers.Strip()
    with caplog.at_level("INFO", logger="tritonrepo.frontend.token_floor"):
        assert token_floor(Fast(tokenizer)) is None
        assert token_floor(object()) is None  # a slow (Python) tokenizer has no pipeline to read
    assert "Strip normalizer" in caplog.text and "not a fast tokenizer" in caplog.text
