"""The SDK: steer.Client / AsyncClient over HTTP and steer.Pipeline in-process."""

from __future__ import annotations

import steer
from steer.settings import load_settings

MSG = [{"role": "user", "content": "hi"}]


def test_client_sends_the_user_on_every_request(make_steer):
    s = make_steer()
    client = steer.Client(base_url=s.url, user="alice", debug=True)
    raw = client.chat.completions.with_raw_response.create(model="stub", messages=MSG)
    body = raw.http_response.json()
    assert body["steer"]["user"] == "alice"


async def test_async_client_chat_and_health(make_steer):
    s = make_steer()
    client = steer.AsyncClient(base_url=s.url, user="bob")
    completion = await client.chat.completions.create(model="stub", messages=MSG)
    assert completion.choices[0].message.content.startswith("tok0")
    health = await client.health()
    assert health["status"] == "ready"


async def test_pipeline_runs_the_same_stages_in_process(tmp_path, stub):
    pdir = tmp_path / "p"
    pdir.mkdir()
    (pdir / "default.yaml").write_text("name: default\nstages:\n  system_prompt: {text: In-process.}\n")
    settings = load_settings(
        None,
        policies=str(pdir),
        database=str(tmp_path / "p.db"),
        models=[{"name": "stub", "api_base": stub.url + "/v1"}],
    )
    async with steer.Pipeline(settings) as pipe:
        answer = await pipe.chat(MSG, user="carol", debug=True)
        assert answer["steer"]["stages"][0]["name"] == "system_prompt"
        assert stub.app.state.calls[-1]["messages"][0]["content"] == "In-process."
        chunks = [c async for c in pipe.stream(MSG, user="carol")]
        assert "".join(ch["delta"].get("content", "") for c in chunks for ch in c["choices"]).startswith(
            "tok0"
        )
