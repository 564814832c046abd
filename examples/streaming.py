"""Streaming through steer, with the trace steer adds when asked (X-Steer-Debug)."""

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8400/v1", api_key="no-key", default_headers={"X-Steer-Debug": "1"})
stream = client.chat.completions.create(
    model="local/smollm2",
    messages=[{"role": "user", "content": "Count to five."}],
    max_tokens=32,
    stream=True,
    stream_options={"include_usage": True},
    user="alice",
)
for chunk in stream:
    for choice in chunk.choices:
        print(choice.delta.content or "", end="", flush=True)
    if chunk.usage:
        print(f"\n[usage] {chunk.usage.completion_tokens} completion tokens")
    steer_trace = (chunk.model_extra or {}).get("steer")
    if steer_trace:
        print(
            f"[steer] policy={steer_trace['policy']} stages={steer_trace['stages']} {steer_trace['total_ms']} ms"
        )
