"""The portable runtime's slot cache: masks that hide what a row has not written, and slots moved intact."""

from __future__ import annotations

import pytest
import torch
from conftest import model_code_path

model_code_path("tensorrt_llm")
from kv_slots import LayerShape, SlotCache, attention_mask, bytes_per_slot, sliding_window  # noqa: E402

CAPACITY = 6


def _visible(mask: torch.Tensor) -> list[list[int]]:
    return [[column for column, value in enumerate(row) if value == 0] for row in mask[:, 0, -1].tolist()]


def test_a_query_sees_its_own_position_and_before_and_never_the_scratch_column():
    positions = torch.tensor([[0], [3], [5]])
    assert _visible(attention_mask(positions, CAPACITY, torch.float32, None)) == [[0], [0, 1, 2, 3], list(range(6))]


def test_a_sliding_window_hides_what_is_older_than_the_window():
    mask = attention_mask(torch.tensor([[5]]), CAPACITY, torch.float32, window=2)
    assert _visible(mask) == [[4, 5]]


def test_padding_queries_see_everything_so_no_row_is_all_masked():
    mask = attention_mask(torch.tensor([[CAPACITY, 0, 1]]), CAPACITY, torch.float32, window=1)
    assert mask.shape == (1, 1, 3, CAPACITY + 1)
    assert (mask[0, 0, 0] == 0).all()  # the padding query
    assert torch.isfinite(mask).all()  # masked columns are the dtype's minimum, not -inf: no NaN after softmax


def test_writes_land_at_each_rows_own_position_and_moves_copy_what_was_written():
    shapes = [LayerShape(key_heads=2, key_dim=3, value_heads=2, value_dim=4)]
    cache = SlotCache(shapes, slots=3, capacity=CAPACITY, dtype=torch.float32, device=torch.device("cpu"))
    assert cache.nbytes == bytes_per_slot(shapes, CAPACITY, torch.float32) * 3
    layer = cache.layers[0]
    cache.aim(slice(1, 3), torch.arange(2)[:, None], torch.tensor([[2], [CAPACITY]]))  # row 1 pads
    keys = torch.ones((2, 2, 1, 3))
    returned, _ = layer.update(keys, torch.ones((2, 2, 1, 4)))
    assert returned.shape == (2, 2, CAPACITY + 1, 3)
    written = layer.slot_keys.sum(dim=(1, 3))  # [slots, columns]
    assert written[1].tolist() == [0, 0, 6, 0, 0, 0, 0]  # slot 1 at position 2
    assert written[2].tolist() == [0, 0, 0, 0, 0, 0, 6]  # slot 2's padding went to the scratch column
    cache.move(1, 0, length=3)
    assert written[1].tolist() == layer.slot_keys.sum(dim=(1, 3))[0].tolist()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, None),
        ({"sliding_window": 4096}, 4096),
        ({"sliding_window": 4096, "use_sliding_window": False}, None),  # Qwen2's switch
        ({"sliding_window": 4096, "layer_types": ["full_attention", "full_attention"]}, None),
        ({"sliding_window": 4096, "layer_types": ["sliding_attention"] * 2}, 4096),
    ],
)
def test_the_attention_window_comes_from_the_config(config, expected):
    class Config:
        pass

    holder = Config()
    holder.__dict__.update(config)
    assert sliding_window(holder) == expected


def test_models_that_mix_attention_types_are_refused():
    class Config:
        layer_types = ["sliding_attention", "full_attention"]
        sliding_window = 512

    with pytest.raises(ValueError, match="mix attention types"):
        sliding_window(Config())


@pytest.mark.parametrize("length", [1, 5])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_slot_attention_equals_attention_over_repeated_key_value_heads(length, layout, monkeypatch):
    # grouped-query heads folded into the query length must give what repeating the key/value heads gives
    from kv_slots import slot_attention

    torch.manual_seed(0)
    rows, heads, kv_heads, dim, columns = 3, 8, 2, 16, CAPACITY + 1
    query = torch.randn(rows, heads, length, dim)
    key, value = torch.randn(rows, kv_heads, columns, dim), torch.randn(rows, kv_heads, columns, dim)
    positions = torch.tensor([[0, 1, 2, 3, 4][:length], [1, 2, 3, 4, 5][:length], [CAPACITY] * length])
    mask = attention_mask(positions, CAPACITY, torch.float32, None)

    class Module:
        num_key_value_groups = heads // kv_heads

    if layout == "strided":  # some CUDA SDPA kernels return their output non-contiguous (seen on an H200)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        monkeypatch.setattr(
            torch.nn.functional,
            "scaled_dot_product_attention",
            lambda *a, **kw: sdpa(*a, **kw).transpose(1, 2).contiguous().transpose(1, 2),
        )
    found, _ = slot_attention(Module(), query, key, value, mask, scaling=dim**-0.5)
    monkeypatch.undo()
    repeated = (key.repeat_interleave(heads // kv_heads, 1), value.repeat_interleave(heads // kv_heads, 1))
    expected = torch.nn.functional.scaled_dot_product_attention(query, *repeated, attn_mask=mask, scale=dim**-0.5)
    assert found.shape == (rows, length, heads, dim)
    assert torch.allclose(found, expected.transpose(1, 2), atol=1e-5)


def test_the_engine_model_uses_slot_attention_and_generate_on_it_stays_right(tiny_model_dir, tiny_tokenizer):
    from hf_engine import Engine
    from transformers import AutoModelForCausalLM

    engine = Engine(tiny_model_dir, device="cpu", max_num_sequences=2, max_seq_len=64)
    try:
        assert engine.slot_attention and engine.model.config._attn_implementation == "tritonrepo_slots"
        ids = torch.tensor([tiny_tokenizer("The café in 東京").input_ids])
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
        with torch.inference_mode():
            ours = engine.model.generate(ids, max_new_tokens=12, do_sample=False, cache_implementation="static")
            theirs = plain.generate(ids, max_new_tokens=12, do_sample=False, cache_implementation="static")
        assert ours.tolist() == theirs.tolist()
    finally:
        engine.stop()
