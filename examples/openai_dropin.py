"""Drop-in: the official openai client, pointed at steer. Start steer first: `make serve`."""

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8400/v1", api_key="no-key-needed-on-loopback")
answer = client.chat.completions.create(
    model="local/smollm2",
    messages=[{"role": "user", "content": "Name one planet."}],
    max_tokens=32,
    user="alice",  # the end user: steer applies alice's policy
)
print(answer.choices[0].message.content)
