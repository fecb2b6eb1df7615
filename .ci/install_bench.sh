#!/usr/bin/env bash
# Installs the load generator of `tritonrepo bench` (`tritonrepo[bench]`: aiperf 0.13.0, matplotlib) into a virtualenv
# without touching what is already there.
#
#     .ci/install_bench.sh [PYTHON]        (default: .venv/bin/python)
#
# Why not `pip install "tritonrepo[bench]"`: aiperf 0.13.0 pins huggingface-hub<2.0 (the environment has 2.x, which the
# rest of tritonrepo is tested with) and narrow versions of prometheus-client, psutil, pyzmq and rich that would
# downgrade what the front end and Dynamo run with. aiperf's benchmark path works with the newer ones (the bench tests
# run it), so aiperf goes in with --no-deps and its other requirements under constraints that keep the installed
# versions. Idempotent: a second run finds everything present and changes nothing.
set -euo pipefail
PYTHON="${1:-.venv/bin/python}"
AIPERF_VERSION=0.13.0

source "$(dirname "$0")/keep_installed.sh"

if installed_already "$PYTHON" "
from importlib import metadata
assert metadata.version('aiperf') == '$AIPERF_VERSION'
import aiperf, matplotlib"; then
    echo "aiperf $AIPERF_VERSION already installed for $PYTHON"
    exit 0
fi

# aiperf 0.13.0's requirements (its METADATA) less huggingface-hub, with the four narrow pins above left open.
install_keeping "$PYTHON" \
    'torch|transformers|numpy|tokenizers|huggingface[-_]hub|pydantic|pydantic[-_]core|tritonclient|openai|httpx|fastapi|uvicorn|starlette|prometheus[-_]client|psutil|pyzmq|rich' \
    "aiperf==$AIPERF_VERSION" -- \
    "aiofiles~=24.1.0" "aiohttp>=3.14.3,<4" "aiosqlite>=0.19.0" "crick~=0.0.8" "cyclopts>=4,<5" \
    "dash-bootstrap-components~=2.0.0" "dash~=3.1.0" "datasets>=3.0" "fastapi>=0.115,<1" "ffmpeg-python~=0.2.0" \
    "filelock>=3.13" "jinja2~=3.1.5" "jmespath~=1.0.1" "kaleido~=1.2.0" "kopf>=1.42.0" \
    "kubernetes-asyncio>=32.0,<33.0" "matplotlib>=3.10.0" "msgspec>=0.19.0,<1.0.0" "numpy>=1.26.4,<3" "nvidia-ml-py" \
    "optuna>=3.6" "orjson~=3.11.7" "pandas~=2.3.3" "pillow~=12.3.0" "plotly~=6.4.0" "prometheus-client" "protobuf>=4" \
    "psutil" "pyarrow>=18.0.0" "pydantic-settings>=2.10.0,<3.0.0" "pydantic>=2.10.0,<3.0.0" "python-multipart>=0.0.22" \
    "pyzmq" "rich" "ruamel-yaml~=0.18.12" "scipy>=1.13.0" "seaborn~=0.13.2" "sentencepiece>=0.2.0" \
    "setproctitle~=1.3.6" "soundfile~=0.13.1" "starlette-compress>=1.0.1" "textual~=5.3.0" "tiktoken>=0.7.0,<1" \
    "tqdm>=4.67.1" "transformers>=4.56.0" "uvicorn[standard]>=0.34,<1" "uvloop>=0.22.1" "zstandard>=0.25.0"
"$PYTHON" -c "import aiperf, matplotlib"
"$(dirname "$PYTHON")/aiperf" --version >/dev/null
echo "aiperf $AIPERF_VERSION installed for $PYTHON"
