"""Sane upper limits for what a repository declares; beyond them a number is a mistake or an attack, not a setting.

Triton accepts e.g. an instance count of 1,000,000 (a million Python stubs) or a dimension of 2^63-1 and fails, or
exhausts the machine, only once it acts on them. The limits sit far above any real deployment."""

from __future__ import annotations

from typing import Any

from tritonrepo.repository.config_lines import ConfigLines
from tritonrepo.repository.problem import Problem

MAX_CONFIG_BYTES = 4 << 20  # a config.pbtxt (real ones are a few KB; a 50 MB one took validation gigabytes)
MAX_MODEL_YAML_BYTES = 1 << 20  # an llmapi model.yaml
MAX_INSTANCE_COUNT = 128  # per instance_group entry
MAX_BATCH_SIZE = 65_536
MAX_DIM = 1 << 24  # one fixed dimension of an input, output or reshape (16,777,216)
MAX_QUEUE_SIZE = 1 << 20  # dynamic_batching queue policies
MAX_QUEUE_DELAY_MICROSECONDS = 60_000_000
MAX_SEQUENCE_TOKENS = 1 << 24  # token lengths: max_input_len, max_seq_len, max_num_tokens
MAX_PARALLEL_SIZE = 1024  # tensor/pipeline/expert parallel sizes (GPU ranks)
MAX_REQUESTS_IN_FLIGHT = 4096  # the BLS model's worker threads

# Parameters our Python models read as numbers, and the limit of each.
PARAMETER_LIMITS = {
    "max_num_sequences": MAX_BATCH_SIZE,
    "max_input_len": MAX_SEQUENCE_TOKENS,
    "max_seq_len": MAX_SEQUENCE_TOKENS,
    "max_requests_in_flight": MAX_REQUESTS_IN_FLIGHT,
}
# LLM API arguments (llmapi model.yaml) and their limits.
LLMAPI_LIMITS = {
    "max_batch_size": MAX_BATCH_SIZE,
    "max_num_tokens": MAX_SEQUENCE_TOKENS,
    "max_seq_len": MAX_SEQUENCE_TOKENS,
    "max_input_len": MAX_SEQUENCE_TOKENS,
    "tensor_parallel_size": MAX_PARALLEL_SIZE,
    "pipeline_parallel_size": MAX_PARALLEL_SIZE,
    "context_parallel_size": MAX_PARALLEL_SIZE,
    "moe_expert_parallel_size": MAX_PARALLEL_SIZE,
    "moe_tensor_parallel_size": MAX_PARALLEL_SIZE,
}


def too_large(what: str, value: int, limit: int) -> str:
    return f"{what} {value:,} is above the limit of {limit:,}; a value this large is a mistake, not a setting"


def size_problems(file: str, config: Any, lines: ConfigLines) -> list[Problem]:
    """Every number in a parsed ModelConfig above its limit, on the line that declares it."""
    problems = []

    def check(what: str, value: int, limit: int, line: int | None) -> None:
        if value > limit:
            problems.append(Problem(file, line, too_large(what, value, limit)))

    check("max_batch_size", config.max_batch_size, MAX_BATCH_SIZE, lines.field_line("max_batch_size"))
    group_lines = lines.field_lines("count")
    for index, group in enumerate(config.instance_group):
        line = group_lines[index] if index < len(group_lines) else lines.field_line("instance_group")
        check("instance_group count", group.count, MAX_INSTANCE_COUNT, line)
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for tensor in tensors:
            line = lines.value_line("name", tensor.name)
            shapes = [("dims", tensor.dims)] + (
                [("reshape", tensor.reshape.shape)] if tensor.HasField("reshape") else []
            )
            for field, shape in shapes:
                what = "dimension" if field == "dims" else "reshape dimension"
                check(f'{kind} "{tensor.name}" {what}', max(shape, default=0), MAX_DIM, line)
    if config.HasField("dynamic_batching"):
        batching = config.dynamic_batching
        line = lines.field_line("max_queue_delay_microseconds")
        check("max_queue_delay_microseconds", batching.max_queue_delay_microseconds, MAX_QUEUE_DELAY_MICROSECONDS, line)
        policies = [batching.default_queue_policy, *batching.priority_queue_policy.values()]
        for policy in policies:
            check("max_queue_size", policy.max_queue_size, MAX_QUEUE_SIZE, lines.field_line("max_queue_size"))
        for size in batching.preferred_batch_size:
            check("preferred_batch_size", size, MAX_BATCH_SIZE, lines.field_line("preferred_batch_size"))
    for key, limit in PARAMETER_LIMITS.items():
        parameter = config.parameters.get(key)
        text = parameter.string_value.strip() if parameter is not None else ""
        if not text.isdigit():  # the models read these with int(); anything else fails there, loudly
            continue
        line = lines.value_line("key", key)
        if len(text) > 18:
            problems.append(Problem(file, line, f"parameter {key} is a {len(text)}-digit number, above {limit:,}"))
        else:
            check(f"parameter {key}", int(text), limit, line)
    return problems
