#!/usr/bin/env bash
# Serve songff/P-Aligner with vLLM's OpenAI-compatible server on one GPU, rewrite 20 instructions of
# about 100 tokens through steer's align code, and report the parse rate and the rewrite latency
# (target: median <= 300 ms on one H100). Where the weights cannot be had (no hub access, nothing in
# the cache, no $P_ALIGNER_MODEL folder) it says so and runs with SmolLM2-135M-Instruct instead.
#
#   scripts/p_aligner_gpu.sh                       # figures in ./p_aligner_out/p_aligner.json
#   OUT=/tmp/pa SPEC=ngram scripts/p_aligner_gpu.sh  # with n-gram speculative decoding
#
# Environment: PYTHON (python3), PORT (8011), OUT (./p_aligner_out), P_ALIGNER_MODEL (a local folder
# or a hub id), GPU_UTIL (0.85), MAX_MODEL_LEN (4096), START_TIMEOUT (900 s), SPEC (ngram: speculate
# from the prompt, which a rewrite mostly copies), N (20).
#
# Written without a GPU and untested on one: see docs/p-aligner.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
PORT=${PORT:-8011}
OUT=${OUT:-./p_aligner_out}
N=${N:-20}
mkdir -p "$OUT/work"

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
else
    echo "p_aligner_gpu: no nvidia-smi on PATH; vLLM needs a GPU" >&2
fi
if ! "$PY" -c "import vllm" 2>/dev/null; then
    echo "p_aligner_gpu: vLLM is not installed for $PY (pip install 'vllm>=0.6' or pip install -e '.[gpu]')" >&2
    exit 2
fi
if ! "$PY" -c "import steer" 2>/dev/null; then
    "$PY" -m pip install -q --no-deps -e . || true
fi
for mod in steer aiohttp orjson pydantic yaml prometheus_client starlette; do
    "$PY" -c "import $mod" 2>/dev/null || { echo "p_aligner_gpu: $PY cannot import $mod (pip install -e .)" >&2; exit 2; }
done

# Which weights: P-Aligner when they can be had, else the embedded SmolLM2 exported for vLLM.
eval "$("$PY" scripts/p_aligner_gpu.py resolve --workdir "$OUT/work" --shell)"
echo "p_aligner_gpu: $NOTE"

ARGS=(--served-model-name p-aligner --host 127.0.0.1 --port "$PORT" --dtype bfloat16
      --max-model-len "${MAX_MODEL_LEN:-4096}" --gpu-memory-utilization "${GPU_UTIL:-0.85}")
if [ -n "$CHAT_TEMPLATE" ]; then
    ARGS+=(--chat-template "$CHAT_TEMPLATE")
fi
if [ "${SPEC:-}" = "ngram" ]; then
    ARGS+=(--speculative-config '{"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 4}')
fi
if command -v vllm >/dev/null 2>&1; then
    SERVE=(vllm serve "$MODEL_PATH")
else
    SERVE=("$PY" -m vllm.entrypoints.openai.api_server --model "$MODEL_PATH")
fi

echo "p_aligner_gpu: ${SERVE[*]} ${ARGS[*]}"
"${SERVE[@]}" "${ARGS[@]}" >"$OUT/vllm.log" 2>&1 &
VLLM_PID=$!
trap 'kill "$VLLM_PID" 2>/dev/null || true; wait "$VLLM_PID" 2>/dev/null || true' EXIT

BASE="http://127.0.0.1:$PORT/v1"
if ! "$PY" scripts/p_aligner_gpu.py wait --base-url "$BASE" --timeout "${START_TIMEOUT:-900}" --pid "$VLLM_PID"; then
    tail -n 40 "$OUT/vllm.log" >&2
    exit 1
fi

MEASURE=(--base-url "$BASE" --model p-aligner --n "$N" --json "$OUT/p_aligner.json" --note "$NOTE")
if [ "$TRAINED" != "1" ]; then
    MEASURE+=(--untrained)
fi
HF_HUB_OFFLINE=1 "$PY" scripts/p_aligner_gpu.py measure "${MEASURE[@]}"
echo "p_aligner_gpu: figures in $OUT/p_aligner.json, server log in $OUT/vllm.log"
