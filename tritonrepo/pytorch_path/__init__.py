"""DeepSeek-V3-architecture (MoE) models through TensorRT-LLM's PyTorch backend: no engine build; the files of a
trtllm-serve or Triton llmapi deployment (planned by planning/llmapi.py), with launch files for one node or many."""
