"""DeepSeek-V3-architecture (MoE) models through TensorRT-LLM's PyTorch backend: no engine build; a trtllm-serve or
Triton llmapi deployment sized for the hardware, with launch files for one node or many."""
