# tritonrepo inside NVIDIA's Triton + TensorRT-LLM container: engines are converted, built and served here.
# NGC_TAG picks the container (and with it the TensorRT-LLM and Triton versions): see tritonrepo/trtllm/versions.py.
ARG NGC_TAG=25.01
FROM nvcr.io/nvidia/tritonserver:${NGC_TAG}-trtllm-python-py3

WORKDIR /opt/tritonrepo
COPY pyproject.toml README.md ./
COPY tritonrepo ./tritonrepo
COPY all_models ./all_models
# The container already has torch, transformers and TensorRT-LLM: install only what tritonrepo adds.
# DL3013 (pin versions) does not apply: this installs the local source tree, whose pyproject pins what it needs.
# hadolint ignore=DL3013
RUN python3 -m pip install --no-cache-dir ".[frontend]" \
    && tritonrepo --version

ENV TRITONREPO_CACHE=/var/cache/tritonrepo
ENTRYPOINT ["tritonrepo"]
CMD ["--help"]
