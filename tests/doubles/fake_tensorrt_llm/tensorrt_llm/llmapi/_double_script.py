"""TEST DOUBLE -- NOT TensorRT-LLM. What the LLM API double generates, importable without the package (tests load
this file by path, so `tensorrt_llm` never becomes importable in the test process itself)."""

SCRIPT = ("Triton", " double", " speaking", ":", " café", " 東京", " 🙂", " and", " done", ".")
SCRIPT_TEXT = "".join(SCRIPT)
ENDLESS_MARKER = "[double:endless]"  # a prompt containing it repeats SCRIPT until max_tokens
RECORD_ENV = "FAKE_LLMAPI_RECORD"  # JSON-lines file every process appends its events to
STEP_ENV = "FAKE_LLMAPI_STEP_S"  # seconds per generated piece (default 0.01)
