#!/usr/bin/env bash
# On a GPU machine: plan with real NVML detection, build the tiny model, serve it with the portable runtime on the GPU,
# smoke-test it and time a 64-token chat completion. Run by hand:  PYTHON=/path/to/venv/bin/python bash THIS
set -uo pipefail
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} TRITONREPO_CACHE=${TRITONREPO_CACHE:-/tmp/tritonrepo-cache}
tr() { "$PY" -m tritonrepo.cli.main "$@"; }
echo "== tritonrepo plan (real NVML detection)"; tr plan --model DeepSeek-R1-Distill-Llama-8B
echo "== tritonrepo plan --json hardware"; tr plan --model tiny-llama --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["hardware"])'
echo "== build"; /usr/bin/time -f "build %es" "$PY" -m tritonrepo.cli.main build --model tiny-llama --output /tmp/gpu-repo
"$PY" -m tritonrepo.cli.main serve /tmp/gpu-repo --openai-port 9000 > /tmp/serve.log 2>&1 & pid=$!  # not via tr(): $! must be serve
start=$(date +%s.%N)
for _ in $(seq 1 300); do curl -sf http://127.0.0.1:9000/health >/dev/null && break; kill -0 $pid 2>/dev/null || break; sleep 0.5; done
echo "serve ready after $(python3 -c "import time; print(round(time.time() - $start, 1))") s"; cat /tmp/serve.log
grep -h "hf runtime:" /tmp/gpu-repo.tritonserver.log | head -2
echo "== smoke"; tr smoke; echo "smoke exit $?"
body='{"model":"tiny-llama","messages":[{"role":"user","content":"Hello"}],"max_tokens":64}'
for i in 1 2 3; do curl -s -o /dev/null -w "64-token chat completion: %{time_total}s\n" -H 'content-type: application/json' -d "$body" http://127.0.0.1:9000/v1/chat/completions; done
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
kill -TERM $pid; wait $pid; echo "serve exit $?"
