"""Which files of a checkpoint a build takes, by glob: what resolving places and what downloads fetch."""

from __future__ import annotations

CHECKPOINT_FILES = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "*.tiktoken",
)
# Downloads fetch exactly these (never *.bin/*.pth duplicates of the safetensors).
HUB_PATTERNS = CHECKPOINT_FILES + TOKENIZER_FILES
