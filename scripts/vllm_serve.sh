# Sourced by the scripts/*_gpu.sh drivers (bash, set -euo pipefail): start vLLM's OpenAI-compatible
# server in the background, stop it when the sourcing script exits, and wait until it answers.
#
#   source "$(dirname "$0")/vllm_serve.sh"
#   start_vllm NAME MODEL PORT GPU_UTIL MAX_MODEL_LEN LOG
#
# NAME prefixes the messages; uses $PY (the Python with vllm installed). Exits 2 when vllm is not
# installed, 1 when the server exits or is not ready within 6 minutes (its log's tail on stderr).

start_vllm() {
    local name=$1 model=$2 port=$3 gpu_util=$4 max_len=$5 log=$6
    "$PY" -c "import vllm" 2>/dev/null || { echo "$name: vllm is not installed (pip install vllm)" >&2; exit 2; }

    echo "starting vLLM: $model on :$port (log: $log)"
    "$PY" -m vllm.entrypoints.openai.api_server --model "$model" --port "$port" --host 127.0.0.1 \
        --gpu-memory-utilization "$gpu_util" --max-model-len "$max_len" --enable-prefix-caching \
        --dtype bfloat16 --disable-log-requests >"$log" 2>&1 &
    VLLM_PID=$!
    trap 'kill "$VLLM_PID" 2>/dev/null || true; wait "$VLLM_PID" 2>/dev/null || true' EXIT

    for _ in $(seq 1 180); do   # up to 6 minutes for download + load + CUDA graphs
        if curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null; then break; fi
        if ! kill -0 "$VLLM_PID" 2>/dev/null; then echo "vLLM exited; see $log" >&2; tail -30 "$log" >&2; exit 1; fi
        sleep 2
    done
    curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null || { echo "vLLM not ready; see $log" >&2; exit 1; }
    echo "vLLM ready"
}
