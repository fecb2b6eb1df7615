"""TEST DOUBLE of tensorrt_llm.models.modeling_utils: QuantConfig and a PretrainedModel that records and writes files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tensorrt_llm._double import failing, placeholder, record
from tensorrt_llm.mapping import Mapping
from tensorrt_llm.quantization.mode import QuantAlgo


@dataclasses.dataclass
class QuantConfig:
    quant_algo: QuantAlgo | None = None
    kv_cache_quant_algo: QuantAlgo | None = None
    group_size: int = 128

    def to_dict(self) -> dict:
        return {
            "quant_algo": self.quant_algo.name if self.quant_algo else None,
            "kv_cache_quant_algo": self.kv_cache_quant_algo.name if self.kv_cache_quant_algo else None,
        }


def _check_hf_dir(hf_dir) -> None:
    if not (Path(hf_dir) / "config.json").is_file():
        raise OSError(f"{hf_dir} does not appear to have a file named config.json")


class PretrainedModel:
    architecture = "PretrainedModel"

    def __init__(self, dtype: str, mapping: Mapping, quant_config: QuantConfig) -> None:
        self.dtype, self.mapping, self.quant_config = dtype, mapping, quant_config

    @classmethod
    def from_hugging_face(cls, hf_model_or_dir, dtype="auto", mapping=None, quant_config=None, **kwargs):
        mapping = mapping or Mapping()
        quant_config = quant_config or QuantConfig()
        record(
            "from_hugging_face",
            cls=cls.__name__,
            hf_model_or_dir=str(hf_model_or_dir),
            dtype=dtype,
            mapping=mapping.to_dict(),
            quant_config=quant_config.to_dict(),
            kwargs=kwargs,
        )
        _check_hf_dir(hf_model_or_dir)
        print(f"[TRT-LLM] [I] loading weights for rank {mapping.rank}", flush=True)
        if failing("convert") and mapping.rank == mapping.world_size - 1:
            raise RuntimeError(f"CUDA out of memory while loading weights for rank {mapping.rank} (TEST DOUBLE)")
        return cls(dtype, mapping, quant_config)

    @classmethod
    def quantize(cls, hf_model_dir, output_dir, dtype="auto", mapping=None, quant_config=None, *, device="cuda",
                 calib_dataset="cnn_dailymail", calib_batches=512, **kwargs):  # fmt: skip
        mapping = mapping or Mapping()
        record(
            "quantize",
            cls=cls.__name__,
            hf_model_dir=str(hf_model_dir),
            output_dir=str(output_dir),
            dtype=dtype,
            mapping=mapping.to_dict(),
            quant_config=quant_config.to_dict(),
            device=device,
            calib_dataset=calib_dataset,
            calib_batches=calib_batches,
        )
        _check_hf_dir(hf_model_dir)
        if failing("convert"):
            raise RuntimeError("calibration dataset could not be loaded (TEST DOUBLE)")
        for rank in range(mapping.world_size):  # the real quantize exports every rank at once
            ranked = Mapping(mapping.world_size, rank, tp_size=mapping.tp_size, pp_size=mapping.pp_size)
            cls(dtype, ranked, quant_config)._write(Path(output_dir), save_config=rank == 0)

    def save_checkpoint(self, output_dir, save_config=True) -> None:
        record("save_checkpoint", cls=type(self).__name__, output_dir=str(output_dir), save_config=save_config,
               rank=self.mapping.rank)  # fmt: skip
        self._write(Path(output_dir), save_config)

    def _write(self, output_dir: Path, save_config: bool) -> None:
        placeholder(output_dir / f"rank{self.mapping.rank}.safetensors", f"rank {self.mapping.rank}")
        if save_config:
            mapping = self.mapping.to_dict()
            mapping.pop("rank")  # as PretrainedConfig.to_dict does
            config = {
                "architecture": self.architecture,
                "dtype": self.dtype,
                "mapping": mapping,
                "quantization": self.quant_config.to_dict(),
                "test_double": True,
            }
            (output_dir / "config.json").write_text(json.dumps(config, indent=2))
