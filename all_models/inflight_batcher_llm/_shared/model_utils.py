"""Helpers shared by our Triton Python models; copied next to each model.py when a repository is rendered."""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils


def parameters(args):
    """The model's config.pbtxt parameters as a plain {key: string} dict."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def flag(value):
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def resolve(args, value):
    """Relative paths in our configs are relative to the repository root (the parent of the model folder).

    A repository loaded from cloud storage (s3://) is copied one model at a time into temporary folders, so the
    root is gone and only this model's own files are there: "<this model>/<rest>" then means "<model folder>/<rest>".
    """
    path = Path(value)
    if path.is_absolute():
        return path
    model_dir = Path(args["model_repository"])
    from_root = model_dir.parent / path
    if not from_root.exists() and path.parts and path.parts[0] == args["model_name"]:
        return model_dir.joinpath(*path.parts[1:])
    return from_root


def input_array(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def input_scalar(request, name, default, cast=int):
    """The first element of an optional per-request scalar input, or `default` when absent."""
    array = input_array(request, name)
    return default if array is None or array.size == 0 else cast(array.reshape(-1)[0])


def error_response(message):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
