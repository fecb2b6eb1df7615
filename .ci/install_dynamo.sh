#!/usr/bin/env bash
# Installs NVIDIA Dynamo 1.6.1 (`tritonrepo[dynamo]`) into a virtualenv without touching what is already there.
#
#     .ci/install_dynamo.sh [PYTHON]        (default: .venv/bin/python)
#
# Why not `pip install "tritonrepo[dynamo]"`: ai-dynamo 1.6.1 requires aisimulate==0.13.0, a placeholder package that
# downloads from a host this CI cannot reach (only Dynamo's planner and the mocker's --ais-perf-model import it), and
# ai-dynamo-runtime 1.6.1 pins pydantic<=2.13.5 while the environment has a newer pydantic that works with it. So both
# Dynamo wheels go in with --no-deps and their other requirements under constraints that keep torch, transformers,
# numpy, tokenizers, huggingface_hub, pydantic and tritonclient exactly as installed. Idempotent: a second run finds
# everything present and changes nothing.
set -euo pipefail
PYTHON="${1:-.venv/bin/python}"
DYNAMO_VERSION=1.6.1
source "$(dirname "$0")/keep_installed.sh"

if installed_already "$PYTHON" "
from importlib import metadata
assert all(metadata.version(d) == '$DYNAMO_VERSION' for d in ('ai-dynamo', 'ai-dynamo-runtime'))
import dynamo.llm, dynamo.runtime  # the compiled runtime loads"; then
    echo "Dynamo $DYNAMO_VERSION already installed for $PYTHON"
    exit 0
fi

# ai-dynamo's requirements (its METADATA) except aisimulate and the two wheels themselves.
install_keeping "$PYTHON" 'torch|transformers|numpy|tokenizers|huggingface[-_]hub|pydantic|pydantic[-_]core|tritonclient' \
    "ai-dynamo-runtime==$DYNAMO_VERSION" "ai-dynamo==$DYNAMO_VERSION" -- \
    "aiohttp>=3.14.3,<4.0" "certifi>=2026.10.19" "kubernetes>=32.0.1,<33.0.0" "msgspec>=0.19.0" \
    "prometheus-client>=0.23.1,<1.0" "pyzmq>=26.0.0" "redis>=6.2.0,<9.0.0" "tqdm>=4.0.0" "transformers>=4.56.0" \
    "typing-extensions>=4.10.0" "zstandard>=0.23.0,<1.0" "uvloop>=0.21.0" \
    "pydantic>=2.10.6"  # ai-dynamo-runtime's; it asks <=2.13.5 too, but runs with the 2.14 installed here
"$PYTHON" -c "import dynamo.llm, dynamo.runtime, dynamo.frontend, dynamo.mocker"
echo "Dynamo $DYNAMO_VERSION installed for $PYTHON"
