"""``rerank``: score the candidates on a scorer's attributes, weight them by the user's profile,
serve the best; and ``candidates``: ask the upstream for several when the client asked for one.

``rerank`` (phase ``response``) takes ``ctx.candidates`` (the client's ``n > 1``, the ``candidates``
stage's extra samples, or the RPS stage's candidates; every choice of every completion is one
candidate), scores them with the policy's scorer, and totals each as w . x, w the user's weights
(``steer.methods.profiles.service``), x the scores scaled to 0-1. It serves the best (the client's ``n`` best, in
order), ties going to the earlier candidate. The served completion gets the id
``chatcmpl-<trace id>`` and is recorded (scores, what was returned) so that ``POST /v1/feedback``
can refer to it. A scorer that fails serves the first candidate(s) and says so in the trace.

``candidates`` (phase ``request``) sets the request's ``n`` to its ``n`` when the client asked
for fewer, so the default generation draws several answers in one upstream call; ``rerank``
then returns as many as the client asked for. Without it (or RPS, or a client ``n > 1``) there
is one candidate and nothing to choose between.

    stages:
      candidates: {n: 4}
      rerank: {scorer: features, weights: {concise: 1.5}, pinned: {formal: 0.0}}
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, ClassVar, Protocol

from pydantic import Field, field_validator

from retrieval.store import OwnerForgotten
from steer.methods.profiles.service import DEFAULT_SCORER
from steer.pipeline.ports import Policies, Profiles
from steer.pipeline.stage import Context, Phase, StageConfig, stages
from steer.protocol import message_text
from steer.scorers import scorers
from steer.storage.profiles import Served

CANDIDATES = "candidates"


class CandidatesConfig(StageConfig):
    n: int = Field(default=4, ge=2, le=64)


@stages.register(CANDIDATES)
class Candidates:
    name: ClassVar[str] = CANDIDATES
    phase: ClassVar[Phase] = "request"
    needs_user: ClassVar[bool] = False
    Config: ClassVar[type[StageConfig]] = CandidatesConfig

    def __init__(self, deps: object) -> None:
        pass

    async def run(self, ctx: Context, config: CandidatesConfig) -> dict[str, Any]:
        client_n = int(ctx.request.get("n") or 1)
        if client_n < config.n:
            ctx.request["n"] = config.n
        return {"client_n": client_n, "requested": int(ctx.request.get("n") or 1)}


def _finite_weights(value: dict[str, float]) -> dict[str, float]:
    for name, w in value.items():
        if not math.isfinite(w) or abs(w) > 100:
            raise ValueError(f"weight of {name!r} must be a finite number within -100..100")
    return value


class RerankConfig(StageConfig):
    scorer: str = DEFAULT_SCORER
    options: dict[str, Any] = Field(default_factory=dict)  # the scorer's options
    weights: dict[str, float] = Field(default_factory=dict)  # seeds: start users here on these attributes
    pinned: dict[str, float] = Field(default_factory=dict)  # fixed: feedback never moves these
    record: bool = True  # record served completions, so feedback can refer to them
    # keep the last user turn and system messages, to score edited answers: only under a policy with
    # log_prompts: true (they hold the user's prompt and the recalled memories)
    keep_context: bool = True

    @field_validator("scorer")
    @classmethod
    def _known_scorer(cls, name: str) -> str:
        if name not in scorers:
            raise ValueError(f"unknown scorer {name!r} (known: {', '.join(scorers.names())})")
        return name

    _check_weights = field_validator("weights", "pinned")(_finite_weights)


def _text(choice: dict[str, Any]) -> str:
    return message_text((choice.get("message") or {}).get("content"))


def _has_tool_calls(choice: dict[str, Any]) -> bool:
    message = choice.get("message")
    return isinstance(message, dict) and bool(message.get("tool_calls"))


def client_n(ctx: Context) -> int:
    """How many choices the client asked for (before ``candidates`` raised ``n``)."""
    for record in ctx.records:
        if record.name == CANDIDATES and record.status == "ok":
            return int(record.info.get("client_n", 1))
    return int(ctx.request.get("n") or 1)


def context_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What is kept to score an edited answer later: system messages and the last user turn."""
    kept = [m for m in messages if m.get("role") in ("system", "developer")]
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    return kept + ([last_user] if last_user is not None else [])


def build_response(
    ctx: Context, flat: list[tuple[int, dict[str, Any]]], order: list[int], completion_id: str
) -> dict[str, Any]:
    """One chat.completion with the chosen candidates as its choices, in order."""
    assert ctx.candidates is not None
    first = ctx.candidates[flat[order[0]][0]]
    choices = [{**flat[i][1], "index": rank} for rank, i in enumerate(order)]
    response = {**first, "id": completion_id, "choices": choices}
    usages: list[dict[str, Any]] = [c["usage"] for c in ctx.candidates if isinstance(c.get("usage"), dict)]
    if len(usages) > 1:
        keys = ("prompt_tokens", "completion_tokens", "total_tokens")
        response["usage"] = {k: sum(int(u.get(k) or 0) for u in usages) for k in keys}
    return response


class RerankDeps(Protocol):
    @property
    def profiles(self) -> Profiles: ...

    @property
    def policies(self) -> Policies: ...


@stages.register("rerank")
class Rerank:
    name: ClassVar[str] = "rerank"
    phase: ClassVar[Phase] = "response"
    needs_user: ClassVar[bool] = False
    Config: ClassVar[type[StageConfig]] = RerankConfig

    def __init__(self, deps: RerankDeps) -> None:
        self.profiles = deps.profiles
        self.policies = deps.policies

    async def warmup(self) -> None:
        """Load the models of the scorers the policies' ``rerank`` sections name, with their options."""
        for policy in self.policies.current.policies.values():
            for name, cfg in policy.stage_configs():
                if name == self.name and isinstance(cfg, RerankConfig):
                    warm = getattr(self.profiles.scorer(cfg.scorer, cfg.options), "warmup", None)
                    if warm is not None:
                        await warm()

    async def run(self, ctx: Context, config: RerankConfig) -> dict[str, Any]:
        from steer.methods.profiles.math import normalise

        assert ctx.candidates is not None
        flat = [(ci, choice) for ci, comp in enumerate(ctx.candidates) for choice in comp.get("choices") or []]
        want = max(1, min(client_n(ctx), len(flat)))
        completion_id = f"chatcmpl-{ctx.trace_id}"
        info: dict[str, Any] = {"scorer": config.scorer, "candidates": len(flat), "returned_n": want}
        if not flat:
            return {**info, "reason": "no candidates"}
        if any(_has_tool_calls(c) for _, c in flat):
            ctx.response = build_response(ctx, flat, list(range(want)), completion_id)
            return {**info, "chosen": 0, "reason": "tool calls are not reranked; served in upstream order"}
        profiles = self.profiles
        texts = [_text(c) for _, c in flat]
        try:
            scorer = profiles.scorer(config.scorer, config.options)
            rows = await scorer.score(ctx.request["messages"], texts)
            if len(rows) != len(texts) or any(len(r) != len(scorer.attributes) for r in rows):
                raise ValueError(f"scorer returned {len(rows)} rows for {len(texts)} candidates")
            profile = await profiles.profile(
                ctx.identity.tenant, ctx.user, config.scorer, scorer, config.weights, config.pinned
            )
        except Exception as exc:  # a failing scorer never fails the request: serve the first
            ctx.response = build_response(ctx, flat, list(range(want)), completion_id)
            why = f"scorer failed ({type(exc).__name__}: {exc}); first candidate served"
            return {**info, "chosen": 0, "fallback": why}
        attrs = tuple(scorer.attributes)
        x = normalise(rows, attrs, scorer.ranges)
        totals = [float(v) for v in x @ profile.weights_array()]
        order = sorted(range(len(flat)), key=lambda i: (-round(totals[i], 12), i))[:want]
        ctx.response = build_response(ctx, flat, order, completion_id)
        recorded = False
        if config.record and ctx.user is not None:
            served = Served(
                ctx.identity.tenant,
                completion_id,
                ctx.user,
                config.scorer,
                attrs,
                [[float(v) for v in r] for r in rows],
                order,
                order[0],
                context_of(ctx.request["messages"]) if config.keep_context and ctx.policy.log_prompts else None,
            )
            try:
                await asyncio.to_thread(profiles.record_served, served, ctx.began)
                recorded = True
            except OwnerForgotten:  # the user was forgotten while this request ran
                pass
        return {
            **info,
            "completion_id": completion_id,
            "recorded": recorded,
            "weights": dict(zip(attrs, (round(w, 4) for w in profile.weights), strict=True)),
            "scores": [
                {
                    "index": i,
                    "attributes": dict(zip(attrs, (round(float(v), 4) for v in rows[i]), strict=True)),
                    "total": round(totals[i], 4),
                }
                for i in range(len(flat))
            ],
            "chosen": order[0],
            "returned": order,
        }
