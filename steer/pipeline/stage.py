"""The per-request pipeline: one Stage protocol, one registry, one runner.

A stage belongs to a phase:

- ``request``: edits the request before generation (recall, pre-align, system prompt);
- ``generate``: produces the candidates itself (RPS); at most one runs, else the upstream is
  called once with the client's ``n``;
- ``response``: picks or edits the candidates (rerank);
- ``background``: runs after the response is sent (remember), never on the response path.

Each stage runs under its own timeout and is timed. A stage whose policy says
``on_error: skip`` (the default) that raises or times out is logged, counted and skipped: the
request goes on as if the stage were off. ``on_error: fail`` turns its failure into an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from steer.errors import StageFailed, SteerError
from steer.registry import Registry
from steer.server.auth import Identity

if TYPE_CHECKING:
    from steer.pipeline.policy import Policy
    from steer.server.services import Services

log = logging.getLogger("steer.pipeline")

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
    policy: Policy
    model: str
    trace_id: str
    debug: bool = False
    candidates: list[dict[str, Any]] | None = None  # full chat.completion dicts, one per candidate
    response: dict[str, Any] | None = None
    stream_direct: bool = False  # a generate stage asks for the upstream's stream as is (no response stages)
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
    """A stage class: its class attributes, and a constructor taking the running services."""

    name: str
    phase: Phase
    needs_user: bool
    Config: type[StageConfig]

    def __call__(self, services: Services) -> Stage: ...


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

OnStage = Callable[[str, str, float], None]  # (stage, status, seconds): metrics hook


async def run_stage(stage: Stage, config: StageConfig, ctx: Context, on_stage: OnStage) -> bool:
    """Run one stage under its timeout and failure rule; True when it succeeded."""
    saved_messages = list(ctx.request.get("messages", ()))
    t0 = time.perf_counter()
    status: Literal["ok", "failed", "timeout"]
    try:
        info = await asyncio.wait_for(stage.run(ctx, config), config.timeout_s)
        status, detail = "ok", info or {}
    except TimeoutError:
        status, detail = "timeout", {"error": f"timed out after {config.timeout_s}s"}
    except Exception as exc:  # a stage must never take the request down unless its policy says so
        status, detail = "failed", {"error": f"{type(exc).__name__}: {exc}"}
        if not isinstance(exc, SteerError):
            log.warning("stage %s failed (trace %s)", stage.name, ctx.trace_id, exc_info=exc)
    elapsed = time.perf_counter() - t0
    on_stage(stage.name, status, elapsed)
    ctx.records.append(StageRecord(stage.name, status, elapsed * 1000, detail))
    if status != "ok":
        ctx.request["messages"] = saved_messages  # a failed stage leaves no half-made edit behind
        if config.on_error == "fail":
            raise StageFailed(f"stage {stage.name} {status}: {detail['error']}")
        log.info("stage %s %s; request continues without it (trace %s)", stage.name, status, ctx.trace_id)
    return status == "ok"


async def run_phase(
    phase: Phase, plan: list[tuple[Stage, StageConfig]], ctx: Context, on_stage: OnStage
) -> bool:
    """Run the stages of one phase in order; True when any ran successfully."""
    ran = False
    for stage, config in plan:
        if stage.phase == phase:
            ran = await run_stage(stage, config, ctx, on_stage) or ran
    return ran


def spawn_background(
    plan: list[tuple[Stage, StageConfig]],
    ctx: Context,
    on_stage: OnStage,
    tasks: set[asyncio.Task[Any]],
    limit: int | None = None,
) -> None:
    """Schedule background stages off the response path, keeping a reference to each task.

    With ``limit`` runs already pending (a sustained overload), a new run is shed instead of queued:
    the trace lists it as ``"<stage> (shed)"`` and ``on_stage`` counts it with status ``shed``.
    """
    for stage, config in plan:
        if stage.phase == "background":
            if limit is not None and len(tasks) >= limit:
                ctx.background.append(f"{stage.name} (shed)")
                on_stage(stage.name, "shed", 0.0)
                continue
            ctx.background.append(stage.name)
            task = asyncio.create_task(_quiet(run_stage(stage, config, ctx, on_stage)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def _quiet(aw: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):  # already logged and counted by run_stage
        await aw
