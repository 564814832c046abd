#!/usr/bin/env bash
# Reproduce the RPS paper's comparison (RPS vs best-of-N, same budget, target angles 10..45 degrees)
# on one GPU in about 10 minutes: vLLM serves the generator, the DPA reward model scores on the same GPU.
#
#   scripts/rps_gpu.sh                      # DPA-v1-Mistral-7B, DPA system text, 24 PrefEval questions
#   GEN_MODEL=Qwen/Qwen2.5-7B-Instruct CONDITIONING=natural PLACEMENT=before_last_user scripts/rps_gpu.sh
#
# Needs: an NVIDIA GPU with ~40 GB free (two 7B models in bf16), network access to the model hub (or the
# models in the HF cache), and `pip install vllm` in the environment (steer itself: `pip install -e .`).
# UNTESTED: written on a machine without a GPU. Results go to rps_gpu.json / rps_gpu.png.
set -euo pipefail

cd "$(dirname "$0")/.."
source scripts/vllm_serve.sh
PY=${PY:-python}
GEN_MODEL=${GEN_MODEL:-Haoxiang-Wang/DPA-v1-Mistral-7B}
RM_MODEL=${RM_MODEL:-Haoxiang-Wang/RewardModel-Mistral-7B-for-DPA-v1}
CONDITIONING=${CONDITIONING:-dpa}       # dpa for the DPA model, natural for any other instruct model
PLACEMENT=${PLACEMENT:-system}          # Mistral's template takes a system message only first
LIMIT=${LIMIT:-24}
DATA=${DATA:-../shared/data/prefeval}  # PrefEval's folder: its explicit-preference questions are the prompts
PORT=${PORT:-8011}
GPU_UTIL=${GPU_UTIL:-0.45}              # leaves the rest of the GPU to the reward model
LOG=${LOG:-rps_gpu_vllm.log}

start_vllm rps_gpu.sh "$GEN_MODEL" "$PORT" "$GPU_UTIL" 4096 "$LOG"

HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-0} "$PY" scripts/rps_gpu.py \
    --vllm-url "http://127.0.0.1:$PORT/v1" --model "$GEN_MODEL" --rm "$RM_MODEL" \
    --conditioning "$CONDITIONING" --placement "$PLACEMENT" --limit "$LIMIT" --data "$DATA" \
    --json rps_gpu.json --png rps_gpu.png "$@"
