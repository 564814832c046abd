"""steer.InProcessClient: the same pipeline with no server, inside your app (steer.Pipeline: its old name)."""

import asyncio

import steer


async def main() -> None:
    async with steer.InProcessClient() as pipe:  # settings from $STEER_CONFIG or the defaults
        answer = await pipe.chat(
            [{"role": "user", "content": "Say hi."}], user="alice", max_tokens=16, debug=True
        )
        print(answer["choices"][0]["message"]["content"])
        print("stages:", answer["steer"]["stages"])


asyncio.run(main())
