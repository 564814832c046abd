"""Per-user policies: alice gets short answers, everyone else the default.

Run steer with the example policies next to the default ones:

    mkdir -p /tmp/steer-policies && cp policies/*.yaml policies/examples/concise.yaml /tmp/steer-policies/
    .venv/bin/steer serve --policies /tmp/steer-policies

then run this file. The trace (X-Steer-Debug) shows which policy and stages each user got.
"""

import steer

for user in ("alice", "bob"):
    client = steer.Client(user=user, debug=True)
    raw = client.chat.completions.with_raw_response.create(
        model="local/smollm2", messages=[{"role": "user", "content": "What is a star?"}], max_tokens=48
    )
    body = raw.http_response.json()
    stages = [s["name"] for s in body["steer"]["stages"]]
    print(f"{user}: policy={body['steer']['policy']} stages={stages}")
    print("   ", body["choices"][0]["message"]["content"][:200])
