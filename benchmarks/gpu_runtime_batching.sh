#!/usr/bin/env bash
# Issue 13's GPU figures, on a machine with one NVIDIA GPU, torch and transformers 5.17+ (run by hand):
#   bash benchmarks/gpu_runtime_batching.sh engine   # the engine alone vs batched static-cache generate(), 8b shapes
#   bash benchmarks/gpu_runtime_batching.sh serve    # the same model through `tritonrepo serve` (OpenAI streaming)
# `serve` needs tritonrepo's serving packages importable: SITE_BUNDLE=path/to/site.tar.xz unpacks a folder `site/` of
# them (nvidia-pytriton's tritonserver, numpy<2 for its Python backend, tritonclient, fastapi, ...) onto PYTHONPATH.
# The model is random-weight, with Llama-3.1-8B's layer shapes and tiny-llama's tokenizer: made in memory for `engine`,
# saved once to CHECKPOINT (~13 GiB) for `serve`, which builds a repository from it.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-runtime-batching}
CHECKPOINT=${CHECKPOINT:-/tmp/llama-8b-shape}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITONREPO_CACHE=${TRITONREPO_CACHE:-/tmp/tritonrepo-cache}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

case "${1:-engine}" in
engine)
  # 128-token prompts, 128 new tokens, 1 and 32 requests in flight; the reference is measured in the same run
  "$PY" benchmarks/runtime_decode.py --shape 8b --device cuda --dtype bfloat16 --concurrency 1,32 \
    --prompt-len 128 --tokens 128 --reference "${REFERENCE:-static}" --rounds "${ROUNDS:-2}" \
    --json "$OUT/engine.json"
  ;;
serve)
  if [ ! -f "$CHECKPOINT/config.json" ]; then
    "$PY" - "$CHECKPOINT" <<'EOF'
import sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "benchmarks")
import decode_support as support
from tritonrepo.source.tiny_llama import create_tiny_llama
tiny = create_tiny_llama(Path(tempfile.mkdtemp()) / "tiny-llama")
config = support.shape_config(tiny, "8b")
started = time.perf_counter()
model = support.build_model(config, "cuda", "bfloat16")
support.save_checkpoint(model, tiny, Path(sys.argv[1]), {"shape": "8b", "dtype": "bfloat16", "config": config})
print(f"8b checkpoint made and saved in {time.perf_counter() - started:.0f} s")
EOF
  fi
  if [ -n "${SITE_BUNDLE:-}" ]; then  # after the checkpoint: the bundle's numpy 1.x is for serving only
    mkdir -p /tmp/bundle && tar -xJf "$SITE_BUNDLE" -C /tmp/bundle && export PYTHONPATH=/tmp/bundle/site:$PYTHONPATH
    # transformers imports scikit-learn when it is installed, and a scikit-learn/SciPy built for numpy 2 fails to
    # import under numpy 1.x: a stand-in package hides it (transformers uses it only for assisted generation).
    mkdir -p /tmp/bundle/site/sklearn
    echo '"""Stand-in hiding scikit-learn from transformers in a numpy 1.x serving environment."""' \
      > /tmp/bundle/site/sklearn/__init__.py
    cat > /tmp/bundle/site/sklearn/metrics.py <<'EOF'
def roc_curve(*args, **kwargs):
    raise ImportError("scikit-learn is hidden in this serving environment")
EOF
  fi
  "$PY" -c 'import numpy, tritonclient, fastapi; print("numpy", numpy.__version__, "(the bundled tritonserver 2.51 needs numpy<2)")'
  "$PY" -c 'from transformers import AutoModelForCausalLM, AutoTokenizer; print("transformers imports")' || exit 1
  start=$(date +%s)
  "$PY" -m tritonrepo.cli.main build --model "$CHECKPOINT" --output /tmp/repo-8b --runtime hf \
    --max-batch-size 32 --max-input-len 192 --max-seq-len 320 || exit 1
  echo "build took $(( $(date +%s) - start )) s"
  "$PY" benchmarks/frontend_overhead.py --repository /tmp/repo-8b --concurrency "${CONCURRENCY:-1,32}" --max-tokens 128 \
    --prompts 32 --json "$OUT/serve.json" --keep
  grep -h "hf runtime:" /tmp/repo-8b.tritonserver.log /tmp/*/serve.tritonserver.log 2>/dev/null | head -3
  ;;
esac
ls -la "$OUT"
