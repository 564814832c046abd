"""``remember``: new preferences extracted from the user's latest turn, after the answer is sent.

It reads the newest user message (and the assistant message just before it, so that a choice
among offered options can be understood), extracts preference statements, merges restatements,
lets a newer statement supersede an older contradicting one, and keeps provenance: the
conversation (``metadata.conversation_id`` when the client sends one, else the trace id) and
the turn. It runs in the background phase, never on the response path.

Policy config (``stages.remember``)::

    extractor: rules        # the offline rules (default), or the name of a model in `models`,
                            # asked for the preferences as JSON (steer.extractors)
    fallback: rules         # when the model fails or answers no JSON: rules | none
    timeout_s: 30
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

from pydantic import Field

from retrieval.extract import Extracted
from steer.errors import SteerError
from steer.extractors import RULES, ExtractionFailed, TurnExtractor, build_extractor
from steer.pipeline import Context, Phase, StageConfig, stages
from steer.protocol import message_text
from steer.services import Services
from steer.stages.align import users_own_messages

log = logging.getLogger("steer.remember")


class RememberConfig(StageConfig):
    timeout_s: float = 30.0
    extractor: str = Field(default=RULES, min_length=1)
    fallback: Literal["rules", "none"] = "rules"


def latest_turns(messages: list[dict[str, Any]]) -> tuple[list[dict[str, str]], int]:
    """The last user turn (with the assistant turn before it) and that user turn's index."""
    user_turns = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not user_turns:
        return [], -1
    last = user_turns[-1]
    window = messages[max(0, last - 1) : last + 1]
    out = []
    for m in window:
        if m.get("role") in ("user", "assistant"):
            out.append({"role": str(m["role"]), "content": message_text(m.get("content"))})
    return out, len(user_turns) - 1


@stages.register("remember")
class Remember:
    name: ClassVar[str] = "remember"
    phase: ClassVar[Phase] = "background"
    needs_user: ClassVar[bool] = True
    Config: ClassVar[type[StageConfig]] = RememberConfig

    def __init__(self, services: Services) -> None:
        self.memory = services.memory
        self.router = services.router
        self._extractors: dict[str, TurnExtractor] = {}

    async def warmup(self) -> None:
        await self.memory.parts()

    def extractor(self, name: str) -> TurnExtractor:
        found = self._extractors.get(name)
        if found is None:
            found = self._extractors[name] = build_extractor(name, self.router)
        return found

    async def _extract(
        self, turns: list[dict[str, str]], config: RememberConfig
    ) -> tuple[list[Extracted], str]:
        """The items found, and which extractor found them (with the reason for a fallback)."""
        extractor = self.extractor(config.extractor)
        try:
            return await extractor.extract(turns), extractor.name
        except (ExtractionFailed, SteerError) as exc:
            if config.fallback == "none" or extractor.name == RULES:
                raise
            log.info("extractor %s failed (%s); falling back to the rules", extractor.name, exc)
            return await self.extractor(RULES).extract(turns), f"{RULES} (fallback: {exc})"[:300]

    async def run(self, ctx: Context, config: RememberConfig) -> dict[str, Any]:
        assert ctx.user is not None
        turns, turn_index = latest_turns(users_own_messages(ctx))  # the user's words, not the aligner's
        if not turns:
            return {"added": [], "reason": "no user turn"}
        metadata = ctx.request.get("metadata") or {}
        conversation = str(metadata.get("conversation_id") or ctx.trace_id)
        items, used = await self._extract(turns, config)
        _, writer, _ = await self.memory.parts()
        result = await self.memory.background(writer.write, ctx.identity.tenant, ctx.user, items, conversation)
        return {
            "extractor": used,
            "found": len(items),
            "added": [m.id for m in result.added],
            "merged": [m.id for m in result.merged],
            "superseded": [m.id for m in result.superseded],
            "turn": turn_index,
        }
