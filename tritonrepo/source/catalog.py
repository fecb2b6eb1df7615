"""Known models: short names, Hugging Face ids and the architecture facts that planning needs, offline."""

from __future__ import annotations

from dataclasses import asdict, dataclass

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "nvfp4": 0.5}


@dataclass(frozen=True)
class ModelFacts:
    """What sizing needs to know about a checkpoint. Counts are per model, not per GPU."""

    architecture: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    native_dtype: str = "bfloat16"
    tie_word_embeddings: bool = False
    # Mixture of experts and multi-head latent attention (DeepSeek-V3/R1); zero for dense models.
    num_experts: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    stated_params: int = 0  # the published count where the formula below does not apply (MoE)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def num_params(self) -> int:
        """Dense transformer count: embeddings, attention (q, k, v, o), gated MLP, norms, and an untied lm_head."""
        if self.stated_params:
            return self.stated_params
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        attention = self.hidden_size * (q + 2 * kv) + q * self.hidden_size
        mlp = 3 * self.hidden_size * self.intermediate_size
        per_layer = attention + mlp + 2 * self.hidden_size
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embeddings + self.hidden_size

    def kv_cache_bytes_per_token(self, dtype_bytes: float) -> float:
        """K and V for one token across all layers (MLA caches one compressed latent instead)."""
        if self.kv_lora_rank:
            return self.num_layers * (self.kv_lora_rank + self.qk_rope_head_dim) * dtype_bytes
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "num_params": self.num_params}

    @classmethod
    def from_config(cls, config: dict) -> ModelFacts:
        """Facts from a Hugging Face config.json (any local checkpoint or Hub model outside the catalog)."""
        text = config.get("text_config", config)  # multimodal configs nest the language model
        heads = int(text["num_attention_heads"])
        hidden = int(text["hidden_size"])
        return cls(
            architecture=(config.get("architectures") or ["unknown"])[0],
            num_layers=int(text["num_hidden_layers"]),
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            intermediate_size=int(text.get("intermediate_size") or 4 * hidden),
            vocab_size=int(text["vocab_size"]),
            max_position_embeddings=int(text.get("max_position_embeddings") or 4096),
            native_dtype=_checkpoint_dtype(config, text),
            tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
            num_experts=int(text.get("n_routed_experts") or text.get("num_local_experts") or 0),
            kv_lora_rank=int(text.get("kv_lora_rank") or 0),
            qk_rope_head_dim=int(text.get("qk_rope_head_dim") or 0),
        )


def _checkpoint_dtype(config: dict, text: dict) -> str:
    """The weights' precision: a quantization_config (DeepSeek's block FP8, ModelOpt's NVFP4) beats torch_dtype,
    which names only the unquantized tensors' type."""
    quant = config.get("quantization_config") or {}
    algo = str(quant.get("quant_algo") or "").upper()
    if "FP4" in algo:
        return "nvfp4"
    if str(quant.get("quant_method") or "").lower() == "fp8" or algo.startswith("FP8"):
        return "fp8"
    return str(text.get("torch_dtype") or text.get("dtype") or "bfloat16")


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # the short name users type
    hf_id: str
    family: str  # "deepseek-r1-distill" | "llama-3" | "qwen2.5" | "deepseek-v3"
    facts: ModelFacts
    reasoning: bool = False  # emits <think>...</think> (DeepSeek-R1 and its distills)

    @property
    def serving_path(self) -> str:
        """MoE DeepSeek models go through TensorRT-LLM's PyTorch backend; dense ones compile engines."""
        return "pytorch" if self.facts.is_moe else "tensorrtllm"


def _llama(layers, hidden, heads, kv, head_dim, inter, tied=False, max_pos=131072):
    return ModelFacts(
        "LlamaForCausalLM", layers, hidden, heads, kv, head_dim, inter, 128256, max_pos, tie_word_embeddings=tied
    )


def _qwen2(layers, hidden, heads, kv, inter, vocab=152064, tied=False, max_pos=32768, head_dim=128):
    return ModelFacts(
        "Qwen2ForCausalLM", layers, hidden, heads, kv, head_dim, inter, vocab, max_pos, tie_word_embeddings=tied
    )


_DEEPSEEK_V3 = dict(
    architecture="DeepseekV3ForCausalLM",
    num_layers=61,
    hidden_size=7168,
    num_heads=128,
    num_kv_heads=128,
    head_dim=192,
    intermediate_size=18432,
    vocab_size=129280,
    max_position_embeddings=163840,
    num_experts=256,
    kv_lora_rank=512,
    qk_rope_head_dim=64,
    stated_params=671_000_000_000,
)
_V3_FP8 = ModelFacts(**_DEEPSEEK_V3, native_dtype="fp8")
_V3_FP4 = ModelFacts(**_DEEPSEEK_V3, native_dtype="nvfp4")

_LLAMA_8B = _llama(32, 4096, 32, 8, 128, 14336)
_LLAMA_70B = _llama(80, 8192, 64, 8, 128, 28672)

CATALOG: tuple[CatalogEntry, ...] = (
    # DeepSeek-R1 distills (reasoning models; the Qwen ones keep Qwen2.5-Math's 131072 context)
    CatalogEntry("DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-r1-distill",
                 _qwen2(28, 1536, 12, 2, 8960, vocab=151936, max_pos=131072), reasoning=True),
    CatalogEntry("DeepSeek-R1-Distill-Qwen-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek-r1-distill",
                 _qwen2(28, 3584, 28, 4, 18944, max_pos=131072), reasoning=True),
    CatalogEntry("DeepSeek-R1-Distill-Llama-8B", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", "deepseek-r1-distill",
                 _LLAMA_8B, reasoning=True),
    CatalogEntry("DeepSeek-R1-Distill-Qwen-14B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "deepseek-r1-distill",
                 _qwen2(48, 5120, 40, 8, 13824, max_pos=131072), reasoning=True),
    CatalogEntry("DeepSeek-R1-Distill-Qwen-32B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "deepseek-r1-distill",
                 _qwen2(64, 5120, 40, 8, 27648, max_pos=131072), reasoning=True),
    CatalogEntry("DeepSeek-R1-Distill-Llama-70B", "deepseek-ai/DeepSeek-R1-Distill-Llama-70B", "deepseek-r1-distill",
                 _LLAMA_70B, reasoning=True),
    # Llama 3.x
    CatalogEntry("Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct", "llama-3", _LLAMA_8B),
    CatalogEntry("Llama-3.1-70B-Instruct", "meta-llama/Llama-3.1-70B-Instruct", "llama-3", _LLAMA_70B),
    CatalogEntry("Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-1B-Instruct", "llama-3", _llama(16, 2048, 32, 8, 64, 8192, tied=True)),
    CatalogEntry("Llama-3.2-3B-Instruct", "meta-llama/Llama-3.2-3B-Instruct", "llama-3", _llama(28, 3072, 24, 8, 128, 8192, tied=True)),
    CatalogEntry("Llama-3.3-70B-Instruct", "meta-llama/Llama-3.3-70B-Instruct", "llama-3", _LLAMA_70B),
    # Qwen2.5
    CatalogEntry("Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5",
                 _qwen2(24, 896, 14, 2, 4864, vocab=151936, tied=True, head_dim=64)),
    CatalogEntry("Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "qwen2.5", _qwen2(28, 1536, 12, 2, 8960, vocab=151936, tied=True)),
    CatalogEntry("Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-3B-Instruct", "qwen2.5", _qwen2(36, 2048, 16, 2, 11008, vocab=151936, tied=True)),
    CatalogEntry("Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", "qwen2.5", _qwen2(28, 3584, 28, 4, 18944)),
    CatalogEntry("Qwen2.5-14B-Instruct", "Qwen/Qwen2.5-14B-Instruct", "qwen2.5", _qwen2(48, 5120, 40, 8, 13824)),
    CatalogEntry("Qwen2.5-32B-Instruct", "Qwen/Qwen2.5-32B-Instruct", "qwen2.5", _qwen2(64, 5120, 40, 8, 27648)),
    CatalogEntry("Qwen2.5-72B-Instruct", "Qwen/Qwen2.5-72B-Instruct", "qwen2.5", _qwen2(80, 8192, 64, 8, 29568)),
    # DeepSeek-V3 architecture (671B MoE): the TensorRT-LLM PyTorch backend path
    CatalogEntry("DeepSeek-R1", "deepseek-ai/DeepSeek-R1", "deepseek-v3", _V3_FP8, reasoning=True),
    CatalogEntry("DeepSeek-R1-0528", "deepseek-ai/DeepSeek-R1-0528", "deepseek-v3", _V3_FP8, reasoning=True),
    CatalogEntry("DeepSeek-V3", "deepseek-ai/DeepSeek-V3", "deepseek-v3", _V3_FP8),
    CatalogEntry("DeepSeek-V3-0324", "deepseek-ai/DeepSeek-V3-0324", "deepseek-v3", _V3_FP8),
    CatalogEntry("DeepSeek-R1-FP4", "nvidia/DeepSeek-R1-FP4", "deepseek-v3", _V3_FP4, reasoning=True),
    CatalogEntry("DeepSeek-R1-0528-FP4", "nvidia/DeepSeek-R1-0528-FP4", "deepseek-v3", _V3_FP4, reasoning=True),
)  # fmt: skip


@dataclass(frozen=True)
class EmbeddedModel:
    """A tiny checkpoint tritonrepo makes itself, offline and on first use: no download, no GPU needed."""

    name: str
    description: str


EMBEDDED: tuple[EmbeddedModel, ...] = (
    EmbeddedModel("tiny-llama", "a tiny Llama with random weights: proves the pipeline end to end on any machine; "
                  "its answers are gibberish by design"),
    EmbeddedModel("scripted-llama", "a tiny Llama whose greedy answer is fixed by construction: it thinks, then "
                  "answers 'Hello! Cats are lovely ✨' (what `make demo` serves)"),
)  # fmt: skip


def lookup(name: str) -> CatalogEntry | None:
    """A catalog entry by short name or Hugging Face id, case-insensitively."""
    wanted = name.strip().lower()
    for entry in CATALOG:
        if wanted in (entry.name.lower(), entry.hf_id.lower()):
            return entry
    return None


def names() -> list[str]:
    return [entry.name for entry in CATALOG]


def reasoning_parser(name: str, model_id: str | None = None) -> str | None:
    """The reasoning parser the front end turns on for a model: DeepSeek-R1 and its distills think in <think> tags."""
    for key in (name, model_id):
        entry = lookup(key) if key else None
        if entry is not None:
            return "deepseek-r1" if entry.reasoning else None
    if name == "scripted-llama":  # the embedded test model scripted to think, then answer
        return "deepseek-r1"
    # A checkpoint the catalog does not know (a fine-tune, a local copy): its name is the best evidence we have.
    return "deepseek-r1" if any(k and "deepseek-r1" in k.lower() for k in (name, model_id)) else None
