"""TEST DOUBLE of tensorrt_llm.mapping: Mapping keeps the sizes and checks them as the real one does."""

from __future__ import annotations


class Mapping:
    def __init__(self, world_size=1, rank=0, gpus_per_node=8, *, cp_size=1, tp_size=1, pp_size=1, **kwargs):
        if tp_size * pp_size * cp_size != world_size:
            # The real Mapping raises the same kind of error for the same mistake.
            raise ValueError(f"world_size must equal to tp_size * pp_size * cp_size, but got {world_size}")
        self.world_size, self.rank, self.gpus_per_node = world_size, rank, gpus_per_node
        self.tp_size, self.pp_size, self.cp_size = tp_size, pp_size, cp_size
        self.extra = kwargs

    def to_dict(self) -> dict:
        return {
            "world_size": self.world_size,
            "rank": self.rank,
            "gpus_per_node": self.gpus_per_node,
            "tp_size": self.tp_size,
            "pp_size": self.pp_size,
            "cp_size": self.cp_size,
        }
