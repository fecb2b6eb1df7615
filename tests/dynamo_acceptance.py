"""The acceptance builds of Dynamo deployments (`tritonrepo build --serving dynamo ARGS`), shared by the tests of
what they write (test_dynamo_build, test_dynamo_schemas, test_llmapi_fields)."""

ACCEPTANCE = {
    "fp4-gb200": ["--model", "nvidia/DeepSeek-R1-FP4", "--disagg", "--gpu", "GB200 x8"],
    "r1-h200x16": ["--model", "deepseek-ai/DeepSeek-R1", "--disagg", "--gpu", "H200 x16"],
    "distill-8b": ["--model", "DeepSeek-R1-Distill-Llama-8B", "--disagg", "--gpu", "H100-80GB x2"],
    "tiny-llama": ["--model", "tiny-llama", "--workers", "2"],
}
# and two variants: MTP layers, and an aggregated DeepSeek
WITH_VARIANTS = {
    **ACCEPTANCE,
    "fp4-gb200-mtp": [*ACCEPTANCE["fp4-gb200"], "--mtp", "1"],
    "r1-h200x8-agg": ["--model", "deepseek-ai/DeepSeek-R1", "--gpu", "H200 x8"],
}
