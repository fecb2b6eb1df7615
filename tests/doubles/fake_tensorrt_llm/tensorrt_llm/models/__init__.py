"""TEST DOUBLE of tensorrt_llm.models: the two model classes tritonrepo converts and the MODEL_MAP that finds them."""

from tensorrt_llm.models.modeling_utils import PretrainedModel


class LLaMAForCausalLM(PretrainedModel):
    architecture = "LlamaForCausalLM"


class QWenForCausalLM(PretrainedModel):
    architecture = "Qwen2ForCausalLM"


# The real map has many more entries; these are the keys tritonrepo looks up.
MODEL_MAP = {
    "LlamaForCausalLM": LLaMAForCausalLM,
    "Qwen2ForCausalLM": QWenForCausalLM,
}
