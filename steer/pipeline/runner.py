"""Running a plan: each stage under its timeout and failure rule, phase by phase, and the background ones
off the response path; and the plan itself (which stages a policy runs, built once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from steer.errors import StageFailed, SteerError
from steer.identity import Identity
from steer.pipeline.policy import Policy
from steer.pipeline.stage import Context, Phase, Stage, StageConfig, StageRecord, stages

log = logging.getLogger("steer.pipeline")

Plan = list[tuple[Stage, StageConfig]]


class Planner:
    """The stages to run for each policy, in order. Each stage is built once (``build``), on first use;
    each plan is cached for its very policy object."""

    def __init__(self, build: Callable[[str], Stage]) -> None:
        self._build = build
        self._stages: dict[str, Stage] = {}
        self._plans: dict[tuple[str, bool], tuple[Policy, Plan]] = {}

    def stage(self, name: str) -> Stage:
        inst = self._stages.get(name)
        if inst is None:
            inst = self._stages[name] = self._build(name)
        return inst

    def built(self) -> list[Stage]:
        """The stages built so far."""
        return list(self._stages.values())

    def plan(self, policy: Policy, identity: Identity) -> Plan:
        """The cache is checked against the policy itself, not the current policy set: a reload (in a
        worker thread) may land between resolving a request's policy and planning it."""
        key = (policy.name, identity.user is None)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is policy:
            return cached[1]
        plan = [
            (self.stage(name), cfg)
            for name, cfg in policy.stage_configs()
            if not (identity.user is None and stages.get(name).needs_user)
        ]
        self._plans[key] = (policy, plan)
        return plan


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


async def run_phase(phase: Phase, plan: Plan, ctx: Context, on_stage: OnStage) -> bool:
    """Run the stages of one phase in order; True when any ran successfully."""
    ran = False
    for stage, config in plan:
        if stage.phase == phase:
            ran = await run_stage(stage, config, ctx, on_stage) or ran
    return ran


def spawn_background(
    plan: Plan,
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
