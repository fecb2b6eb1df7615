"""torch.compile for the parts of a decoder layer that run as many small GPU kernels: its normalizations and its MLP.

A decode step of a small batch reads every weight once; on a GPU what it spends beyond that goes to the hundreds of
tiny kernels between the matrix products (an RMSNorm alone is seven). Compiled, each norm is one fused kernel and the
MLP's activation fuses with its product. Every layer's module has the same code and shapes and its weights are inputs
of the compiled graph, so one compilation serves all layers: seconds at start-up, not the minutes a whole-model
compile takes. The engine captures the compiled kernels in its CUDA graphs of the decode step; prefill passes run the
modules eagerly.
"""

from __future__ import annotations

import torch

PART_SUFFIXES = ("RMSNorm", "MLP")  # class names: LlamaRMSNorm, LlamaMLP, Qwen2MLP, MistralRMSNorm, ...
RECOMPILES = 32  # shapes: the decode buckets, prefill widths (dynamic after the first change), per part class


def compile_parts(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Compiles (lazily: on first call) every normalization and MLP module; returns them, for `uncompile`."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), RECOMPILES))
    parts = [module for module in model.modules() if type(module).__name__.endswith(PART_SUFFIXES)]
    for module in parts:
        module.compile(dynamic=True, fullgraph=True)
    return parts


def keep_for_graphs(parts: list[torch.nn.Module]) -> list:
    """Sets the modules back to their eager calls once CUDA graphs have captured the compiled kernels: outside the
    graphs (prefill passes) a compiled module's call costs more host time than its fusion saves. Returns the compiled
    calls, which the caller keeps so nothing the graphs replay is ever freed."""
    calls = [module._compiled_call_impl for module in parts]
    for module in parts:
        module._compiled_call_impl = None
    return calls


def uncompile(parts: list[torch.nn.Module]) -> None:
    """Back to eager (a compilation that failed, e.g. no working compiler on this machine)."""
    import torch._dynamo

    for module in parts:
        module._compiled_call_impl = None
    torch._dynamo.reset()
