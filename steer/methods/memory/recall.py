"""``recall``: the user's stored preferences that matter for this turn, injected as data.

The recalled memories go into one system message, inside a fenced block whose every line is a
JSON string, so a memory cannot close the fence or pass for an instruction (:mod:`steer.fence`).
The preamble presents them as the user's stated preferences to take into account: they cannot
override the system prompt or the developer's instructions and never ask for actions towards
anyone else. A memory that
extraction would refuse today (a link, a credential, the system prompt, an action towards others:
:func:`retrieval.storable.is_storable`), such as one stored before that rule or written through the
API, is withheld. The block is placed after the client's leading system messages, within the
policy's token budget.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Protocol

from pydantic import Field

from retrieval.storable import is_storable
from steer.fence import render
from steer.pipeline.ports import Memory
from steer.pipeline.stage import Context, Phase, StageConfig, stages
from steer.protocol import insert_after_system, last_user_text


class RecallDeps(Protocol):
    @property
    def memory(self) -> Memory: ...


class RecallConfig(StageConfig):
    budget_tokens: int = Field(default=600, ge=16, le=32_000)
    min_score: float = Field(default=-1.0, ge=-1.0, le=1.0)  # drop memories scoring below this cosine


@stages.register("recall")
class Recall:
    name: ClassVar[str] = "recall"
    phase: ClassVar[Phase] = "request"
    order: ClassVar[int] = 10
    needs_user: ClassVar[bool] = True
    Config: ClassVar[type[StageConfig]] = RecallConfig

    def __init__(self, deps: RecallDeps) -> None:
        self.memory = deps.memory

    async def warmup(self) -> None:
        await self.memory.recaller()

    async def run(self, ctx: Context, config: RecallConfig) -> dict[str, Any]:
        assert ctx.user is not None
        question = last_user_text(ctx.request["messages"])
        if not question:
            return {"injected": [], "reason": "no user text to recall for"}
        recaller = await self.memory.recaller()
        recalled = await asyncio.to_thread(
            recaller.for_prompt, ctx.identity.tenant, ctx.user, question, budget_tokens=config.budget_tokens
        )
        scored = [(m, s) for m, s in zip(recalled.memories, recalled.scores, strict=True) if s >= config.min_score]
        chosen = [(m, s) for m, s in scored if is_storable(m.text)]
        withheld = [m.id for m, _ in scored if not is_storable(m.text)]
        if not chosen:
            return {"injected": [], "withheld": withheld, "reason": "no stored preferences"}
        block = {"role": "system", "content": render([m.text for m, _ in chosen])}
        ctx.request["messages"], _ = insert_after_system(ctx.request["messages"], block)
        why = (
            "all of the user's preferences fit the budget"
            if recalled.complete
            else "best matches within budget"
        )
        return {
            "injected": [{"id": m.id, "text": m.text, "score": round(s, 4)} for m, s in chosen],
            "withheld": withheld,
            "tokens": recalled.tokens,
            "budget_tokens": config.budget_tokens,
            "reason": why,
        }
