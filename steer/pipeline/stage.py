"""The stage contract: what a stage is, what one request carries through the stages, and the registry.

A stage belongs to a phase:

- ``request``: edits the request before generation (recall, pre-align, system prompt);
- ``generate``: produces the candidates itself (RPS); at most one runs, else the upstream is
  called once with the client's ``n``;
- ``response``: picks or edits the candidates (rerank);
- ``background``: runs after the response is sent (remember), never on the response path.

Each stage runs under its own timeout and is timed. A stage whose policy says
``on_error: skip`` (the default) that raises or times out is logged, counted and skipped: the
request goes on as if the stage were off. ``on_error: fail`` turns its failure into an error
(``steer.pipeline.runner`` runs them).

A leaf of the pipeline: it imports the ports and the base modules only, never the policies, the
runner or a stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from steer.identity import Identity
from steer.pipeline.ports import PolicyView, StageDeps
from steer.protocol import message_text
from steer.registry import Registry

Phase = Literal["request", "generate", "response", "background"]


class StageConfig(BaseModel):
    """Settings every stage has; a stage's own ``Config`` subclasses this."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    timeout_s: float = Field(default=5.0, gt=0)
    on_error: Literal["skip", "fail"] = "skip"


@dataclass(slots=True)
class StageRecord:
    name: str
    status: Literal["ok", "skipped", "failed", "timeout"]
    ms: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Context:
    """What one request carries through the stages."""

    request: dict[str, Any]  # the body sent upstream; request stages may edit it
    identity: Identity
    policy: PolicyView
    model: str
    trace_id: str
    debug: bool = False
    candidates: list[dict[str, Any]] | None = None  # full chat.completion dicts, one per candidate
    response: dict[str, Any] | None = None
    stream_direct: bool = False  # a generate stage asks for the upstream's stream as is (no response stages)
    has_response_stage: bool = False  # the plan holds a response stage (rerank): it will choose among candidates
    # (the text a request stage put in place of the last user turn, the user's own text): see users_own_messages
    rewritten: tuple[str, str] | None = None
    records: list[StageRecord] = field(default_factory=list)
    background: list[str] = field(default_factory=list)  # stages scheduled after the response
    started: float = field(default_factory=time.perf_counter)

    @property
    def user(self) -> str | None:
        return self.identity.user

    @property
    def began(self) -> float:
        """When the request began, as ``time.time()``: what a write of the user's data made for it is checked
        against the user's tombstone (a user forgotten since gets nothing from this request)."""
        return time.time() - (time.perf_counter() - self.started)

    def users_own_messages(self) -> list[dict[str, Any]]:
        """The request's messages with the user's own words back where a request stage replaced them
        (``rewritten``: align's replace mode), for stages that must not take another's words for the
        user's (``remember``). A stage that failed after its edit left no edit behind to undo."""
        messages: list[dict[str, Any]] = self.request["messages"]
        if self.rewritten is None:
            return messages
        rewrite, original = self.rewritten
        at = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
        if at is None or message_text(messages[at].get("content")) != rewrite:
            return messages
        out = list(messages)
        out[at] = {**messages[at], "content": original}
        return out

    def trace(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "policy": self.policy.name,
            "user": self.identity.user,
            "tenant": self.identity.tenant,
            "model": self.model,
            "stages": [
                {"name": r.name, "status": r.status, "ms": round(r.ms, 3), **r.info} for r in self.records
            ],
            "background": list(self.background),
            "total_ms": round((time.perf_counter() - self.started) * 1000, 3),
        }


class Stage(Protocol):
    """One step of the pipeline. ``run`` returns what it did, for the trace (or None)."""

    name: ClassVar[str]
    phase: ClassVar[Phase]
    needs_user: ClassVar[bool]  # never runs for anonymous requests
    Config: ClassVar[type[StageConfig]]

    async def run(self, ctx: Context, config: Any) -> dict[str, Any] | None: ...


class StageFactory(Protocol):
    """A stage class: its class attributes, and a constructor taking the ports (each stage's own
    constructor names only the ports it uses: a narrower protocol that ``StageDeps`` satisfies)."""

    name: str
    phase: Phase
    needs_user: bool
    Config: type[StageConfig]

    def __call__(self, deps: StageDeps) -> Stage: ...


stages: Registry[StageFactory] = Registry(
    "stage",
    [
        "steer.methods.system_prompt",
        "steer.methods.memory.recall",
        "steer.methods.memory.remember",
        "steer.methods.align.stage",
        "steer.methods.rps.stage",
        "steer.methods.profiles.stages",
    ],
)

DEFAULT_ORDER = 50


def stage_order(name: str) -> tuple[int, str]:
    """Within a phase, stages run by their optional ``order`` class attribute (lower first, default
    50), then by name: recall (10) brings the user's preferences, then align (20) rewrites the instruction."""
    return (int(getattr(stages.get(name), "order", DEFAULT_ORDER)), name)
