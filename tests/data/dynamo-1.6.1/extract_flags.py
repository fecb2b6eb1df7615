"""Extract the option strings (and choices) of Dynamo's frontend and dynamo.trtllm argument parsers from an unpacked wheel."""

import argparse
import json
import sys
import types

sys.path.insert(0, sys.argv[1])
trt = types.ModuleType("tensorrt_llm")
llmapi = types.ModuleType("tensorrt_llm.llmapi")


class _Field:
    default = None


class _Fields(dict):
    def __missing__(self, key):
        return _Field()


class BuildConfig:  # stand-in: backend_args reads only model_fields[...].default
    model_fields = _Fields()


llmapi.BuildConfig = BuildConfig
trt.llmapi = llmapi
sys.modules.update({"tensorrt_llm": trt, "tensorrt_llm.llmapi": llmapi})
out = {}


def dump(parser):
    flags = {}
    for action in parser._actions:
        for opt in action.option_strings:
            flags[opt] = sorted(map(str, action.choices)) if action.choices else None
    return flags


from dynamo.common.configuration.groups.runtime_args import DynamoRuntimeArgGroup
from dynamo.trtllm.backend_args import DynamoTrtllmArgGroup

p = argparse.ArgumentParser()
DynamoRuntimeArgGroup().add_arguments(p)
DynamoTrtllmArgGroup().add_arguments(p)
try:
    from dynamo.trtllm.args import register_worker_router_help

    register_worker_router_help(p)
except Exception as e:
    print("router help:", e, file=sys.stderr)
out["dynamo.trtllm"] = dump(p)
from dynamo.frontend.frontend_args import FrontendArgGroup

p = argparse.ArgumentParser()
FrontendArgGroup().add_arguments(p)
out["dynamo.frontend"] = dump(p)
json.dump(out, sys.stdout, indent=1, sort_keys=True)
