#!/usr/bin/env bash
# Model-assisted recall on one GPU: offline (MiniLM) vs the configured model expanding the query or
# reranking the best memories, on PrefEval's heavy-user memory (every explicit preference, 5 fillers),
# measured as the share of questions whose preference is inside the 100/200/300/600-token block.
#
#   scripts/recall_assist_gpu.sh                                  # Qwen2.5-7B-Instruct, every topic
#   MODEL=meta-llama/Llama-3.1-8B-Instruct LIMIT=10 scripts/recall_assist_gpu.sh
#   DATA=/path/to/unseen/prefeval scripts/recall_assist_gpu.sh    # the figure that counts: unseen topics
#
# Needs: an NVIDIA GPU with ~24 GB free, the model in the HF cache (or network access to the hub), and
# `pip install vllm` in the environment (steer itself: `pip install -e .[memory]`).
# UNTESTED: written on a machine without a GPU. Results go to recall_assist_gpu.json.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PY:-python}
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
DATA=${DATA:-../shared/data/prefeval}
LIMIT=${LIMIT:-}
PORT=${PORT:-8012}
GPU_UTIL=${GPU_UTIL:-0.85}
LOG=${LOG:-recall_assist_vllm.log}

"$PY" -c "import vllm" 2>/dev/null || { echo "recall_assist_gpu.sh: vllm is not installed (pip install vllm)" >&2; exit 2; }

echo "starting vLLM: $MODEL on :$PORT (log: $LOG)"
"$PY" -m vllm.entrypoints.openai.api_server --model "$MODEL" --port "$PORT" --host 127.0.0.1 \
    --gpu-memory-utilization "$GPU_UTIL" --max-model-len 8192 --enable-prefix-caching \
    --dtype bfloat16 --disable-log-requests >"$LOG" 2>&1 &
VLLM_PID=$!
trap 'kill "$VLLM_PID" 2>/dev/null || true; wait "$VLLM_PID" 2>/dev/null || true' EXIT

for _ in $(seq 1 180); do   # up to 6 minutes for download + load + CUDA graphs
    if curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null; then break; fi
    if ! kill -0 "$VLLM_PID" 2>/dev/null; then echo "vLLM exited; see $LOG" >&2; tail -30 "$LOG" >&2; exit 1; fi
    sleep 2
done
curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null || { echo "vLLM not ready; see $LOG" >&2; exit 1; }
echo "vLLM ready"

HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-0} "$PY" scripts/recall_assist_gpu.py \
    --vllm-url "http://127.0.0.1:$PORT/v1" --model "$MODEL" --data "$DATA" \
    ${LIMIT:+--limit "$LIMIT"} --json recall_assist_gpu.json "$@"
