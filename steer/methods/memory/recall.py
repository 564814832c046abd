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

With ``assist`` (``expand`` or ``rerank``) the configured chat model refines the offline ranking,
bounded by ``assist_timeout_s`` and falling back to it on any failure
(:mod:`steer.methods.memory.assist`); the trace says what the model did.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal, Protocol

from pydantic import Field

from retrieval.storable import is_storable
from steer.fence import render
from steer.methods.memory import assist
from steer.pipeline.ports import Memory, Router
from steer.pipeline.stage import Context, Phase, StageConfig, stages
from steer.protocol import insert_after_system, last_user_text


class RecallDeps(Protocol):
    @property
    def memory(self) -> Memory: ...

    @property
    def router(self) -> Router: ...


class RecallConfig(StageConfig):
    budget_tokens: int = Field(default=600, ge=16, le=32_000)
    min_score: float = Field(default=-1.0, ge=-1.0, le=1.0)  # drop memories scoring below this cosine
    # model-assisted recall: the chat model expands the query or reranks the best memories (off: offline only)
    assist: Literal["off", "expand", "rerank"] = "off"
    assist_model: str | None = None  # a model of the settings; default: the request's model
    assist_timeout_s: float = Field(default=2.0, gt=0, le=30)  # then the offline ranking is used
    assist_candidates: int = Field(default=20, ge=2, le=100)  # memories shown to the model (rerank)


@stages.register("recall")
class Recall:
    name: ClassVar[str] = "recall"
    phase: ClassVar[Phase] = "request"
    order: ClassVar[int] = 10
    needs_user: ClassVar[bool] = True
    Config: ClassVar[type[StageConfig]] = RecallConfig

    def __init__(self, deps: RecallDeps) -> None:
        self.memory = deps.memory
        self.router = deps.router

    async def warmup(self) -> None:
        await self.memory.recaller()

    async def run(self, ctx: Context, config: RecallConfig) -> dict[str, Any]:
        assert ctx.user is not None
        question = last_user_text(ctx.request["messages"])
        if not question:
            return {"injected": [], "reason": "no user text to recall for"}
        recaller = await self.memory.recaller()
        tenant, user = ctx.identity.tenant, ctx.user
        query, hits, assisted = question, None, None
        if config.assist != "off":
            model = config.assist_model or ctx.model
            if config.assist == "expand":
                query, outcome = await assist.expand(self.router, model, question, config.assist_timeout_s)
            else:
                top = await asyncio.to_thread(recaller.top, tenant, user, question, recaller.candidates)
                head = [h for h in top[: config.assist_candidates] if is_storable(h.memory.text)]
                order, outcome = await assist.rerank(
                    self.router, model, question, [h.memory.text for h in head], config.assist_timeout_s
                )
                shown = {h.memory.id for h in head}
                hits = [head[i] for i in order] + [h for h in top if h.memory.id not in shown]
            assisted = {"mode": config.assist, "model": model, "outcome": outcome}
        recalled = await asyncio.to_thread(
            recaller.for_prompt, tenant, user, query, budget_tokens=config.budget_tokens, hits=hits
        )
        scored = [
            (m, s, t)
            for m, s, t in zip(recalled.memories, recalled.scores, recalled.texts, strict=True)
            if s >= config.min_score
        ]
        chosen = [(m, s, t) for m, s, t in scored if is_storable(m.text)]
        withheld = [m.id for m, _, _ in scored if not is_storable(m.text)]
        if not chosen:
            out: dict[str, Any] = {"injected": [], "withheld": withheld, "reason": "no stored preferences"}
            return out if assisted is None else {**out, "assist": assisted}
        block = {"role": "system", "content": render([t for _, _, t in chosen])}
        ctx.request["messages"], _ = insert_after_system(ctx.request["messages"], block)
        why = (
            "all of the user's preferences fit the budget"
            if recalled.complete
            else "best matches within budget"
        )
        trace: dict[str, Any] = {
            # text: the memory as stored; line: what the block carries for it (its compact rendering)
            "injected": [{"id": m.id, "text": m.text, "line": t, "score": round(s, 4)} for m, s, t in chosen],
            "withheld": withheld,
            "tokens": recalled.tokens,
            "budget_tokens": config.budget_tokens,
            "reason": why,
        }
        folded = [f.id for group in recalled.folded for f in group]
        if folded:
            trace["folded"] = folded  # restatements of an injected line, carried by it
        if assisted is not None:
            trace["assist"] = assisted
        return trace
