"""Inside the TensorRT-LLM container: convert a Hugging Face checkpoint to a TensorRT-LLM checkpoint, rank by rank.

Run as `python -m tritonrepo.trtllm.convert_worker REQUEST.json` (the request comes from commands.convert_request).
"""

from __future__ import annotations

import gc
import json
import sys
import traceback
from pathlib import Path

from tritonrepo.trtllm.commands import REQUEST_FORMAT


class ConvertError(Exception):
    """A failure whose message is already the one line to print."""


def _say(message: str) -> None:
    print(message, flush=True)


def _import_tensorrt_llm():
    """The four names the conversion needs; the same modules from 0.14 to 1.2 (paths cited per import)."""
    try:
        import tensorrt_llm
    except ImportError as error:
        raise ConvertError(
            f"tensorrt_llm cannot be imported by {sys.executable} ({error}); run inside the NGC container "
            "nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3"
        ) from error
    from tensorrt_llm.mapping import (
        Mapping,  # tensorrt_llm/mapping.py: Mapping(world_size, rank, ..., tp_size, pp_size)
    )
    from tensorrt_llm.models import MODEL_MAP  # tensorrt_llm/models/__init__.py: HF architecture -> model class
    from tensorrt_llm.models.modeling_utils import QuantConfig  # dataclass(quant_algo, kv_cache_quant_algo, ...)
    from tensorrt_llm.quantization.mode import QuantAlgo  # QuantAlgo.FP8

    return tensorrt_llm, Mapping, MODEL_MAP, QuantConfig, QuantAlgo


def convert(request: dict) -> None:
    if request.get("format") != REQUEST_FORMAT:
        raise ConvertError(
            f"request format {request.get('format')!r} is not {REQUEST_FORMAT}; tritonrepo versions differ"
        )
    tensorrt_llm, Mapping, MODEL_MAP, QuantConfig, QuantAlgo = _import_tensorrt_llm()
    architecture = request["architecture"]
    # 'LlamaForCausalLM' -> LLaMAForCausalLM, 'Qwen2ForCausalLM' -> QWenForCausalLM (tensorrt_llm/models/__init__.py).
    model_cls = MODEL_MAP.get(architecture)
    if model_cls is None:
        raise ConvertError(f"TensorRT-LLM {tensorrt_llm.__version__} has no model class for {architecture}")

    def algo(name: str | None):
        return None if name is None else QuantAlgo[name]

    quant_config = QuantConfig(
        quant_algo=algo(request["quant_algo"]), kv_cache_quant_algo=algo(request["kv_cache_quant_algo"])
    )
    hf_dir, out_dir = str(request["hf_dir"]), Path(request["checkpoint_dir"])
    tp_size, pp_size = int(request["tp_size"]), int(request["pp_size"])
    world_size = tp_size * pp_size
    dtype = request["dtype"]
    out_dir.mkdir(parents=True, exist_ok=True)
    _say(
        f"tensorrt_llm {tensorrt_llm.__version__}: {architecture} -> {model_cls.__name__}, {dtype}, "
        f"tp {tp_size} x pp {pp_size}, quantization {quant_config.quant_algo}/{quant_config.kv_cache_quant_algo}"
    )

    if quant_config.quant_algo is not None or quant_config.kv_cache_quant_algo is not None:
        # FP8 scales come from calibration, which from_hugging_face cannot do: PretrainedModel.quantize runs
        # ModelOpt once and exports every rank itself (tensorrt_llm/models/modeling_utils.py, quantize ->
        # quantize_and_export(tp_size=mapping.tp_size, pp_size=mapping.pp_size); the same route
        # examples/llama/convert_checkpoint.py takes for calibrated formats).
        _say(f"calibrating on {request['calib_dataset']} ({request['calib_size']} samples), all {world_size} ranks")
        mapping = Mapping(world_size=world_size, tp_size=tp_size, pp_size=pp_size)
        model_cls.quantize(
            hf_dir,
            str(out_dir),
            dtype=dtype,
            mapping=mapping,
            quant_config=quant_config,
            calib_dataset=request["calib_dataset"],
            calib_batches=int(request["calib_size"]),
        )
        for rank in range(world_size):
            if not (out_dir / f"rank{rank}.safetensors").is_file():
                raise ConvertError(f"quantization wrote no rank{rank}.safetensors in {out_dir}")
            _say(f"converted rank {rank + 1}/{world_size}")
        return

    for rank in range(world_size):
        # One rank at a time, as examples/llama/convert_checkpoint.py does with --workers 1: from_hugging_face
        # reads only this rank's slices from safetensors, and config.json is written once (save_config on rank 0).
        mapping = Mapping(world_size=world_size, rank=rank, tp_size=tp_size, pp_size=pp_size)
        model = model_cls.from_hugging_face(hf_dir, dtype=dtype, mapping=mapping, quant_config=quant_config)
        model.save_checkpoint(str(out_dir), save_config=(rank == 0))
        del model
        gc.collect()
        _say(f"converted rank {rank + 1}/{world_size}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tritonrepo.trtllm.convert_worker REQUEST.json", file=sys.stderr)
        return 2
    try:
        convert(json.loads(Path(args[0]).read_text()))
    except ConvertError as error:
        print(f"convert failed: {error}", file=sys.stderr, flush=True)
        return 1
    except Exception as error:  # noqa: BLE001 - the traceback goes to the log, the last line is the summary
        traceback.print_exc()
        print(f"convert failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
