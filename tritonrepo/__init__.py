"""tritonrepo: from a Hugging Face LLM checkpoint to a running, tested Triton Inference Server deployment."""

__version__ = "0.1.0"
