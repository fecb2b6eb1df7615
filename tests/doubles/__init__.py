"""Test doubles for external systems that cannot run on this machine (TensorRT-LLM); each is named as a double."""
