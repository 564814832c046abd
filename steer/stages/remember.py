"""``remember``: new preferences extracted from the user's latest turn, after the answer is sent.

It reads the newest user message (and the assistant message just before it, so that a choice
among offered options can be understood), extracts preference statements, merges restatements,
lets a newer statement supersede an older contradicting one, and keeps provenance: the
conversation (``metadata.conversation_id`` when the client sends one, else the trace id) and
the turn. It runs in the background phase, never on the response path.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from steer.pipeline import Context, Phase, StageConfig, stages
from steer.services import Services


class RememberConfig(StageConfig):
    timeout_s: float = 30.0


def latest_turns(messages: list[dict[str, Any]]) -> tuple[list[dict[str, str]], int]:
    """The last user turn (with the assistant turn before it) and that user turn's index."""
    user_turns = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not user_turns:
        return [], -1
    last = user_turns[-1]
    window = messages[max(0, last - 1) : last + 1]
    out = []
    for m in window:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if isinstance(content, str) and m.get("role") in ("user", "assistant"):
            out.append({"role": str(m["role"]), "content": content})
    return out, len(user_turns) - 1


@stages.register("remember")
class Remember:
    name: ClassVar[str] = "remember"
    phase: ClassVar[Phase] = "background"
    needs_user: ClassVar[bool] = True
    Config: ClassVar[type[StageConfig]] = RememberConfig

    def __init__(self, services: Services) -> None:
        self.memory = services.memory

    async def warmup(self) -> None:
        await self.memory.parts()

    async def run(self, ctx: Context, config: RememberConfig) -> dict[str, Any]:
        assert ctx.user is not None
        turns, turn_index = latest_turns(ctx.request["messages"])
        if not turns:
            return {"added": 0}
        metadata = ctx.request.get("metadata") or {}
        conversation = str(metadata.get("conversation_id") or ctx.trace_id)
        _, writer, _ = await self.memory.parts()
        result = await asyncio.to_thread(writer.ingest, ctx.identity.tenant, ctx.user, turns, conversation)
        return {
            "added": [m.id for m in result.added],
            "merged": [m.id for m in result.merged],
            "superseded": [m.id for m in result.superseded],
            "turn": turn_index,
        }
