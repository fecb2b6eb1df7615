#!/usr/bin/env bash
# Issue 13's and 15's GPU figures, on a machine with one NVIDIA GPU, torch and transformers 5.17+ (run by hand):
#   bash benchmarks/gpu_runtime_batching.sh engine   # the engine alone vs batched static-cache generate(), 8b shapes
#   bash benchmarks/gpu_runtime_batching.sh serve    # the same model through `tritonrepo serve` (OpenAI streaming)
#   bash benchmarks/gpu_runtime_batching.sh bench    # `tritonrepo bench` (aiperf) against `tritonrepo serve` there
# `serve` and `bench` need tritonrepo's serving packages: SITE_BUNDLE=path/to/site.tar.xz unpacks a folder `site/` of
# them (nvidia-pytriton's tritonserver, numpy<2 for its Python backend, tritonclient, fastapi, ...). They go into a
# virtualenv made over the machine's Python (SERVE_VENV), ahead of its own packages: the Python backend stub imports
# from the site-packages of python3 on its PATH and ignores PYTHONPATH, so a bundle on PYTHONPATH would not reach it.
# `bench` also needs aiperf: AIPERF_WHEELS=folder of the wheels the machine lacks (installed with --target).
# The model is random-weight, with Llama-3.1-8B's layer shapes and tiny-llama's tokenizer: made in memory for `engine`,
# saved once to CHECKPOINT (~13 GiB) for `serve` and `bench`, which build a repository from it.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-runtime-batching}
CHECKPOINT=${CHECKPOINT:-/tmp/llama-8b-shape}
REPOSITORY=${REPOSITORY:-/tmp/repo-8b}
SERVE_VENV=${SERVE_VENV:-/tmp/serve-venv}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITONREPO_CACHE=${TRITONREPO_CACHE:-/tmp/tritonrepo-cache}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'

make_checkpoint() {
  [ -f "$CHECKPOINT/config.json" ] && return 0
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
}

make_serving_venv() {  # sets SERVE_PY
  SERVE_PY=$SERVE_VENV/bin/python
  [ -x "$SERVE_PY" ] && return 0
  [ -n "${SITE_BUNDLE:-}" ] || { echo "SITE_BUNDLE is not set: serving needs numpy<2, tritonclient, ..."; return 1; }
  mkdir -p /tmp/bundle && tar -xJf "$SITE_BUNDLE" -C /tmp/bundle || return 1
  # transformers imports scikit-learn and SciPy when they are installed (it takes them as present when it finds the
  # package), and the machine's, built for numpy 2, fail under numpy 1.x. Stand-ins with the names it imports hide
  # them (it uses them only in assisted generation and object-detection losses, never here).
  mkdir -p /tmp/bundle/site/sklearn /tmp/bundle/site/scipy
  echo '"""Stand-in: scikit-learn is hidden in this numpy 1.x serving environment."""' \
    | tee /tmp/bundle/site/sklearn/__init__.py > /tmp/bundle/site/scipy/__init__.py
  for name in sklearn/metrics:roc_curve scipy/optimize:linear_sum_assignment; do
    printf 'def %s(*args, **kwargs):\n    raise ImportError("hidden in this serving environment")\n' "${name#*:}" \
      > "/tmp/bundle/site/${name%%:*}.py"
  done
  "$PY" -m venv --without-pip "$SERVE_VENV" || return 1
  local own base
  own=$("$SERVE_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  base=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo /tmp/bundle/site > "$own/00-serving-bundle.pth"  # first: numpy 1.26, tritonclient, fastapi, ...
  echo "import site; site.addsitedir('$base')" > "$own/01-machine-packages.pth"  # then torch, transformers, ...
  "$SERVE_PY" -I -c 'import numpy, torch, tritonclient, fastapi; from transformers import LlamaForCausalLM
print("serving venv: numpy", numpy.__version__, "torch", torch.__version__)' \
    || { rm -rf "$SERVE_VENV"; return 1; }
}

build_repository() {
  [ -f "$REPOSITORY/tritonrepo.json" ] && return 0
  local start
  start=$(date +%s)
  "$SERVE_PY" -m tritonrepo.cli.main build --model "$CHECKPOINT" --output "$REPOSITORY" --runtime hf \
    --max-batch-size 32 --max-input-len 192 --max-seq-len 320 || return 1
  echo "build took $(( $(date +%s) - start )) s"
}

case "${1:-engine}" in
engine)
  # 128-token prompts, 128 new tokens, 1 and 32 requests in flight; the reference is measured in the same run
  "$PY" benchmarks/runtime_decode.py --shape 8b --device cuda --dtype bfloat16 --concurrency "${ENGINE_CONCURRENCY:-1,32}" \
    --prompt-len "${PROMPT_LEN:-128}" --tokens 128 --reference "${REFERENCE:-static}" --rounds "${ROUNDS:-2}" \
    --json "$OUT/engine.json"
  ;;
serve)
  make_checkpoint && make_serving_venv && build_repository || exit 1
  "$SERVE_PY" benchmarks/frontend_overhead.py --repository "$REPOSITORY" --concurrency "${CONCURRENCY:-1,32}" \
    --max-tokens 128 --prompts 32 --json "$OUT/serve.json" --keep
  ;;
bench)
  make_checkpoint && make_serving_venv && build_repository || exit 1
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/aiperf-site \
    "${AIPERF_WHEELS:?folder of aiperf wheels}"/*.whl || exit 1
  port=${OPENAI_PORT:-9000}
  "$SERVE_PY" -m tritonrepo.cli.main serve "$REPOSITORY" --openai-port "$port" > "$OUT/bench-serve.log" 2>&1 &
  serve_pid=$!
  trap 'kill -INT $serve_pid 2>/dev/null; wait $serve_pid' EXIT
  for _ in $(seq 150); do
    "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/v1/models', timeout=2)" 2>/dev/null && break
    kill -0 $serve_pid 2>/dev/null || { tail -20 "$OUT/bench-serve.log"; exit 1; }
    sleep 2
  done
  for stub in $(pgrep -f triton_python_backend_stub); do  # which numpy the stubs really loaded
    grep -m1 -o '/[^ ]*numpy/core/_multiarray_umath[^ ]*' "/proc/$stub/maps" || grep -m1 -o '/[^ ]*numpy/_core/[^ ]*' "/proc/$stub/maps"
  done | sort | uniq -c
  PATH=/tmp/aiperf-site/bin:$PATH PYTHONPATH=$PWD:/tmp/aiperf-site "$PY" -m tritonrepo.cli.main bench "$REPOSITORY" \
    --openai-url "http://127.0.0.1:$port" --concurrency "${CONCURRENCY:-1,4,16,32}" --duration "${DURATION:-20}" \
    --input-len 128 --output-len 128 --out /tmp/bench-results
  run=$(ls -d /tmp/bench-results/*/ | tail -1)
  tar -czf "$OUT/bench-run.tar.gz" -C "$run" .  # one file: what comes back from the machine is counted in files
  ;;
esac
ls -la "$OUT"
