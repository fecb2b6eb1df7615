"""The portable runtime's KV cache: one preallocated row ("slot") per sequence in flight, each written at its own
positions, so sequences of different lengths decode together in one forward pass of an unmodified transformers model.

The cache is handed to the model as its `Cache`; the engine tells it, before each forward pass, which block of slots
the batch rows are and where each row's new keys and values go (`SlotCache.aim`). Attention reads the whole row; an
additive mask hides what a row has not written (or wrote for an earlier sequence). Column `capacity` of every slot
is scratch: padding entries write there, and no mask ever lets a real query read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache


@dataclass(frozen=True)
class LayerShape:
    """One layer's key and value shapes per token: [heads, head_dim] each (they may differ, e.g. MLA's)."""

    key_heads: int
    key_dim: int
    value_heads: int
    value_dim: int


def probe_layer_shapes(model: torch.nn.Module, device: torch.device) -> list[LayerShape]:
    """Each attention layer's per-token key/value shape, read from one token through the model's own cache."""
    try:
        cache = DynamicCache(config=model.config)
    except TypeError:  # versions whose DynamicCache takes no config
        cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device), **{cache_argument(model): cache})
    shapes = []
    for layer in cache.layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or values is None or keys.dim() != 4:
            raise ValueError(f"a layer caches {type(layer).__name__}, not attention keys and values")
        shapes.append(LayerShape(keys.shape[1], keys.shape[3], values.shape[1], values.shape[3]))
    if not shapes:
        raise ValueError("the model cached nothing for a token")
    return shapes


def cache_argument(model: torch.nn.Module) -> str:
    """The forward keyword that takes the cache: `cache` from transformers 5.2x, `past_key_values` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def bytes_per_slot(shapes: list[LayerShape], capacity: int, dtype: torch.dtype) -> int:
    """Bytes one slot of `capacity` tokens takes (the scratch column included)."""
    size = torch.empty((), dtype=dtype).element_size()
    per_token = sum(s.key_heads * s.key_dim + s.value_heads * s.value_dim for s in shapes)
    return per_token * (capacity + 1) * size


class _SlotLayer(CacheLayerMixin):
    is_compileable = True
    is_sliding = False

    def __init__(self, cache: SlotCache, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.cache = cache
        self.slot_keys, self.slot_values = keys, values  # [slots, heads, capacity + 1, head_dim]
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # allocated up front

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Writes the batch's new keys/values ([rows, heads, q, dim]) at their positions; returns the rows' slots."""
        block = self.cache.block
        keys, values = self.slot_keys[block], self.slot_values[block]
        rows, positions = self.cache.rows, self.cache.positions
        keys[rows, :, positions] = key_states.transpose(1, 2)  # indexed [rows, q, heads, dim]
        values[rows, :, positions] = value_states.transpose(1, 2)
        return keys, values

    def get_mask_sizes(self, query_length: int, *args) -> tuple[int, int]:
        return self.slot_keys.shape[2], 0

    def get_seq_length(self, *args) -> int:
        return 0  # positions are the engine's (position_ids are always given)

    def get_max_length(self) -> int:
        return self.slot_keys.shape[2] - 1


class SlotCache(Cache):
    """`slots` rows of `capacity` tokens for every layer, allocated once."""

    def __init__(
        self, shapes: list[LayerShape], slots: int, capacity: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.slots, self.capacity = slots, capacity
        self.block = slice(0, slots)
        self.rows = torch.zeros((slots, 1), dtype=torch.long, device=device)
        self.positions = torch.zeros((slots, 1), dtype=torch.long, device=device)
        layers = []
        for shape in shapes:
            keys = torch.zeros((slots, shape.key_heads, capacity + 1, shape.key_dim), dtype=dtype, device=device)
            values = torch.zeros((slots, shape.value_heads, capacity + 1, shape.value_dim), dtype=dtype, device=device)
            layers.append(_SlotLayer(self, keys, values))
        super().__init__(layers=layers)

    @property
    def nbytes(self) -> int:
        return sum(layer.slot_keys.nbytes + layer.slot_values.nbytes for layer in self.layers)

    def aim(self, block: slice, rows: torch.Tensor, positions: torch.Tensor) -> None:
        """The next forward pass's batch is slots `block`; batch row r writes its q tokens at `positions[r]`
        (`rows` is arange(rows)[:, None], for indexing). Padding entries give position `capacity` (scratch)."""
        self.block, self.rows, self.positions = block, rows, positions

    def move(self, source: int, target: int, length: int) -> None:
        """Slot `source`'s first `length` tokens into slot `target` (keeping the batch blocks contiguous)."""
        for layer in self.layers:
            layer.slot_keys[target, :, :length] = layer.slot_keys[source, :, :length]
            layer.slot_values[target, :, :length] = layer.slot_values[source, :, :length]


def attention_mask(positions: torch.Tensor, capacity: int, dtype: torch.dtype, window: int | None) -> torch.Tensor:
    """Additive mask [rows, 1, q, capacity + 1]: a query at position p sees columns 0..p (the last `window` of them
    for sliding-window attention); a padding query (position `capacity`) sees everything, so no row is all -inf."""
    columns = torch.arange(capacity + 1, device=positions.device)
    visible = columns <= positions[..., None]
    if window is not None:
        visible &= (columns > positions[..., None] - window) | (positions[..., None] == capacity)
    zero = torch.zeros((), dtype=dtype, device=positions.device)
    hidden = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=positions.device)
    return torch.where(visible, zero, hidden)[:, None]


ATTENTION = "tritonrepo_slots"


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention over the slots with grouped-query heads folded into the query length: the query heads that share a
    key/value head attend together, so keys and values are read once, never copied per query head (transformers'
    own SDPA path repeats them when a mask is given: on a GPU that copy cost more than the attention). Returns
    [rows, q, heads, dim], as transformers' attention functions do."""
    rows, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    unusual = kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None or heads % kv_heads
    if attention_mask is None or unusual:  # not the engine's pass (e.g. generate() on the same model): the usual way
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    groups = heads // kv_heads
    query = query.reshape(rows, kv_heads, groups * length, dim)  # head h = kv head h // groups, query g * length + t
    if attention_mask is not None and length > 1 and groups > 1:
        attention_mask = attention_mask.repeat(1, 1, groups, 1)
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=scaling
    )
    # reshape, not view: some SDPA kernels (shape-dependent) return a non-contiguous output
    return output.reshape(rows, heads, length, dim).transpose(1, 2).contiguous(), None


def install_slot_attention(model) -> bool:
    """Makes the model use slot_attention; False when it cannot switch attention functions (it keeps its own)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, slot_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # masks as for SDPA when the model makes its own
    try:
        model.set_attn_implementation(ATTENTION)
    except (AttributeError, ValueError):
        return False
    return getattr(model.config, "_attn_implementation", None) == ATTENTION


def sliding_window(config) -> int | None:
    """The attention window every layer uses, or None for full attention; ValueError when layers differ."""
    layer_types = set(getattr(config, "layer_types", None) or [])
    if len(layer_types) > 1:
        raise ValueError(f"its layers mix attention types ({', '.join(sorted(layer_types))})")
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False or layer_types == {"full_attention"}:
        return None
    return int(window)
