"""The plan as people read it: one labelled line per decision, memory in GiB."""

from __future__ import annotations

import shlex

from tritonrepo.planning.memory import gib
from tritonrepo.planning.plan import DeploymentPlan
from tritonrepo.pytorch_path.launch_files import server_argv


def _count(params: int) -> str:
    return f"{params / 1e9:.2f}B" if params >= 1e9 else f"{params / 1e6:.1f}M"


def format_plan(plan: DeploymentPlan, build_command: str | None = None) -> str:
    limits = plan.limits
    rows = [
        ("model", f"{plan.model} ({plan.facts.architecture}, {_count(plan.facts.num_params)} parameters)"),
        ("hardware", f"{plan.hardware.describe()} [{plan.hardware.source}]"),
        ("runtime", f"{plan.runtime}: {plan.reason}"),
        ("limits", f"max_batch_size {limits.max_batch_size}, max_input_len {limits.max_input_len}, "
                   f"max_seq_len {limits.max_seq_len}" + (f", max_num_tokens {plan.max_num_tokens}" if plan.max_num_tokens else "")),
    ]  # fmt: skip
    if plan.runtime in ("tensorrtllm", "pytorch"):
        rows += [
            ("dtype", f"{plan.weight_dtype} weights, {plan.kv_cache_dtype} KV cache (compute {plan.dtype})"),
            ("parallelism", f"tensor {plan.tp_size} x pipeline {plan.pp_size} = {plan.world_size} GPU(s)"),
        ]
    if plan.runtime == "tensorrtllm":
        rows += [
            ("build", f"gemm_plugin {plan.gemm_plugin}, gpt_attention_plugin {plan.gpt_attention_plugin}, "
                      f"paged context FMHA {'on' if plan.use_paged_context_fmha else 'off'}, "
                      f"chunked context {'on' if plan.enable_chunked_context else 'off'}"),
            ("serving", f"kv_cache_free_gpu_mem_fraction {plan.kv_cache_free_gpu_mem_fraction}, triton_max_batch_size "
                        f"{plan.triton_max_batch_size}, {plan.instance_count} pre/post/BLS instance(s), "
                        f"{'decoupled (streaming)' if plan.decoupled else 'not decoupled'}"),
        ]  # fmt: skip
    if plan.llmapi is not None:
        rows += _pytorch_path_rows(plan.llmapi)
    memory = plan.memory
    if memory is not None:
        spare = memory.gpu_total - memory.weights - memory.activations - memory.runtime_overhead - memory.kv_cache
        rows += [
            ("memory / GPU", f"{gib(memory.gpu_total)} = weights {gib(memory.weights)} + activations "
                             f"{gib(memory.activations)} + runtime {gib(memory.runtime_overhead)} + KV cache "
                             f"{gib(memory.kv_cache)} + spare {gib(spare)}"),
            ("KV cache", f"{memory.kv_cache_per_token / 1024:.1f} KiB per token per GPU -> {memory.kv_cache_tokens:,} "
                         f"tokens = {memory.max_sequences} sequences of {limits.max_seq_len} tokens at once"),
        ]  # fmt: skip
    if build_command:
        rows.append(("trtllm-build", build_command))
    rows += [("note", note) for note in plan.notes]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _pytorch_path_rows(llmapi) -> list[tuple[str, str]]:
    sizing = llmapi.sizing
    return [
        ("layout", f"{sizing.gpus}x {sizing.gpu} over {sizing.nodes} node(s) of {sizing.gpus_per_node}; tensor "
                   f"{sizing.tp_size}, expert {sizing.ep_size}, pipeline {sizing.pp_size}"
                   + (f"; MoE backend {sizing.moe_backend}" if llmapi.moe else "")),
        ("serving", f"{llmapi.serving} on TensorRT-LLM {llmapi.trtllm_version} ({llmapi.schema} options), image "
                    f"{llmapi.image}"),
        ("profile", f"{llmapi.profile}: attention data parallel {'on' if llmapi.attention_dp else 'off'}, CUDA graphs "
                    f"up to batch {llmapi.cuda_graph_max_batch_size}, MTP {llmapi.mtp_layers or 'off'}, stream "
                    f"interval {llmapi.stream_interval}, kv_cache_free_gpu_memory_fraction "
                    f"{llmapi.kv_cache_free_gpu_memory_fraction}"),
        ("launch", shlex.join(server_argv(llmapi, "<deployment>"))),
        *(("env", f"{name}={value}") for name, value in llmapi.env),
        *(("known issue", comment) for comment in llmapi.comments),
    ]  # fmt: skip
