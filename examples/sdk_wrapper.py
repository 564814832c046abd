"""The steer SDK: the openai client with the user set once, plus steer's own endpoints."""

import steer

client = steer.Client(user="bob")  # http://127.0.0.1:8400/v1, or $STEER_BASE_URL
print(client.health())
answer = client.chat.completions.create(
    model="local/smollm2", messages=[{"role": "user", "content": "Say hi."}], max_tokens=16
)
print(answer.choices[0].message.content)
