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
source scripts/vllm_serve.sh
PY=${PY:-python}
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
DATA=${DATA:-../shared/data/prefeval}
LIMIT=${LIMIT:-}
PORT=${PORT:-8012}
GPU_UTIL=${GPU_UTIL:-0.85}
LOG=${LOG:-recall_assist_vllm.log}

start_vllm recall_assist_gpu.sh "$MODEL" "$PORT" "$GPU_UTIL" 8192 "$LOG"

HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-0} "$PY" scripts/recall_assist_gpu.py \
    --vllm-url "http://127.0.0.1:$PORT/v1" --model "$MODEL" --data "$DATA" \
    ${LIMIT:+--limit "$LIMIT"} --json recall_assist_gpu.json "$@"
