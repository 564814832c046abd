"""``steer chat``: talk to steer in the terminal as a given user, over HTTP or in-process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson

from steer.settings import Settings


async def _ask_server(
    client: Any, messages: list[dict[str, Any]], model: str | None
) -> AsyncIterator[dict[str, Any]]:
    import openai

    # no --model: the server's default model (a request may omit it; steer then uses default_model)
    stream = await client.chat.completions.create(
        model=model or openai.NOT_GIVEN, messages=messages, stream=True
    )
    async for chunk in stream:
        yield chunk.model_dump()


async def run_chat(args: argparse.Namespace, settings: Settings | None) -> int:
    history: list[dict[str, Any]] = []
    pipe = None
    client = None
    if settings is None:
        from steer.client import AsyncClient

        client = AsyncClient(base_url=args.server, api_key=args.api_key, user=args.user, debug=args.debug)
        where = args.server
    else:
        from steer.inprocess import InProcessClient

        pipe = InProcessClient(settings)
        await pipe.__aenter__()
        where = "in-process"
    scripted = list(args.message or [])
    if not scripted:
        print(f"steer chat as {args.user!r} ({where}); empty line or Ctrl-D to quit", file=sys.stderr)
    try:
        while True:
            if scripted:
                text = scripted.pop(0)
            elif args.message:
                break
            else:
                try:
                    text = input("you> ").strip()
                except EOFError:
                    break
                if not text:
                    break
            history.append({"role": "user", "content": text})
            if pipe is not None:
                chunks = pipe.stream(history, user=args.user, model=args.model, debug=args.debug)
            else:
                chunks = _ask_server(client, history, args.model)
            print("assistant> ", end="", flush=True)
            answer = []
            async for chunk in chunks:
                if chunk.get("steer") and args.debug:
                    print("\n[steer] " + orjson.dumps(chunk["steer"]).decode(), file=sys.stderr)
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    answer.append(piece)
                    print(piece, end="", flush=True)
            print()
            history.append({"role": "assistant", "content": "".join(answer)})
    finally:
        if pipe is not None:
            await pipe.__aexit__(None, None, None)
        if client is not None:
            await client.openai.close()
    return 0
