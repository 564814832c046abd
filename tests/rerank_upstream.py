"""A fake upstream whose n choices differ (short, long, listed, informal), so the choice a user's
profile weights make shows; shared by the rerank tests over HTTP and the replica tests."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SHORT = "Pack light: passport, charger, one change of clothes."
LONG = " ".join(
    ["When you prepare for a long journey it is worth considering every item you might need along the way,"] * 12
)
LISTED = "Here is a list:\n- passport\n- charger\n- clothes\n- toothbrush"
CASUAL = "Hey! Yeah, just grab your stuff, it's gonna be awesome!!"
TEXTS = [LONG, SHORT, LISTED, CASUAL]
JUDGE_MARK = "You rate an assistant's answer"


def create_fake_upstream() -> Starlette:
    """n choices, the i-th being TEXTS[i % 4]; a judge prompt gets JSON ratings from the answer's length."""
    calls: list[dict[str, Any]] = []

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        calls.append(body)
        messages = body.get("messages") or []
        if messages and JUDGE_MARK in str(messages[0].get("content", "")):
            answer = str(messages[-1]["content"]).split("Answer to rate:\n", 1)[-1]
            words = len(answer.split())
            ratings = {"helpful": 50, "concise": max(0, 100 - words), "thorough": min(100, words), "formal": 50}
            content = orjson.dumps(ratings).decode()
            choices = [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]
        else:
            n = int(body.get("n") or 1)
            choices = [
                {"index": i, "message": {"role": "assistant", "content": TEXTS[i % 4]}, "finish_reason": "stop"}
                for i in range(n)
            ]
        out = {
            "id": f"chatcmpl-fake{len(calls)}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": choices,
            "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10},
        }
        return Response(orjson.dumps(out), media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    app.state.calls = calls
    return app
