"""``system_prompt``: the policy's own instructions, added as a system message.

The simplest per-user personalization: a policy for a user or a tenant states how answers
should be ("answer in three sentences", "reply in French"). The text is inserted after the
client's own leading system messages, so the client's instructions keep their place.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from steer.pipeline.stage import Context, Phase, StageConfig, stages
from steer.protocol import insert_after_system


class SystemPromptConfig(StageConfig):
    text: str = Field(min_length=1)
    role: Literal["system", "developer"] = "system"


@stages.register("system_prompt")
class SystemPrompt:
    name: ClassVar[str] = "system_prompt"
    phase: ClassVar[Phase] = "request"
    order: ClassVar[int] = 30
    needs_user: ClassVar[bool] = False
    Config: ClassVar[type[StageConfig]] = SystemPromptConfig

    def __init__(self, deps: object) -> None:
        pass

    async def run(self, ctx: Context, config: SystemPromptConfig) -> dict[str, Any]:
        message = {"role": config.role, "content": config.text}
        ctx.request["messages"], at = insert_after_system(ctx.request["messages"], message)
        return {"inserted_at": at, "chars": len(config.text)}
