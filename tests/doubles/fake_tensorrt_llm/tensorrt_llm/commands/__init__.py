"""TEST DOUBLE of tensorrt_llm.commands."""
