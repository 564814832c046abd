"""``sample``: RPS, candidates drawn in parallel from the neighbourhood of the user's preference direction.

The target is the user's profile weights over the active scorer's attributes, normalised
(the ``Profiles`` port's ``direction``). The stage sends one request per neighbour direction
(:mod:`steer.methods.rps.geometry`), all at once, each under ``candidate_timeout_s``, and sets
``ctx.candidates`` to the completions that came back, closest to the target first; the ``rerank`` stage then picks
the one whose attribute scores project highest on the user's ORIGINAL direction. Without rerank
in the policy the most on-target candidate is returned.

The trace lists every candidate in ``ctx.candidates`` order (``candidate``: its index there;
failed or timed-out ones have none) with its direction, its angle from the target, its status,
time and usage. The response's ``usage`` adds up every candidate's tokens.

Streaming: the candidates are generated, one is chosen, and steer replays it as chunks (the
first chunk leaves when the choice is made). With ``stream_first: true`` a streamed request is
not sampled at all: the stage only conditions the request on the target direction and the
upstream's stream is forwarded (see the README for how this meets a response stage).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, ClassVar, Literal, Protocol

from pydantic import Field, field_validator, model_validator

from steer.errors import UpstreamError
from steer.methods.rps import geometry as rps
from steer.pipeline.ports import Profiles, Router
from steer.pipeline.stage import Context, Phase, StageConfig, stages
from steer.scorers import scorers


class SampleDeps(Protocol):
    @property
    def router(self) -> Router: ...

    @property
    def profiles(self) -> Profiles: ...


class SampleConfig(StageConfig):
    timeout_s: float = Field(default=120.0, gt=0)  # the whole stage; each candidate has its own below
    mode: Literal["rps", "best_of_n"] = "rps"
    k: int = Field(default=rps.DEFAULT_K, ge=1, le=32)  # samples per request
    t_max: float = Field(default=rps.DEFAULT_T_MAX, ge=0, le=90)  # degrees around the target
    grid: tuple[float, float, float] = rps.PAPER_GRID  # 2-D neighbour grid: low, high, step (degrees)
    seed: int = 0  # the n-D spread over the cap
    conditioning: Literal["dpa", "natural"] = "natural"  # dpa: for models trained on the DPA system text
    placement: Literal["before_last_user", "system"] = "before_last_user"
    temperature: float | None = Field(default=rps.DEFAULT_TEMPERATURE, ge=0, le=2)  # None: the client's
    top_p: float | None = Field(default=rps.DEFAULT_TOP_P, ge=0, le=1)
    candidate_timeout_s: float = Field(default=60.0, gt=0)
    min_candidates: int = Field(default=1, ge=1)  # fewer answers than this: the stage fails
    # once this share of the requests has answered, the rest get straggler_grace x the time so far
    quorum_share: float | None = Field(default=0.8, gt=0, le=1)  # None: always wait for every request
    straggler_grace: float = Field(default=0.2, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)  # per candidate
    max_total_tokens: int | None = Field(default=None, ge=1)  # over all candidates (an equal share each)
    use_n: bool = True  # one request with n where directions coincide (off for upstreams without n)
    stream_first: bool = False  # streamed requests: no sampling, the target-conditioned stream as it comes
    scorer: str | None = None  # the scorer whose attributes the direction is over (None: the profile's)

    @field_validator("scorer")
    @classmethod
    def _known_scorer(cls, name: str | None) -> str | None:
        if name is not None and name not in scorers:  # a typo fails the policy load, not every request
            raise ValueError(f"unknown scorer {name!r} (known: {', '.join(scorers.names())})")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> SampleConfig:
        if self.candidate_timeout_s >= self.timeout_s:
            raise ValueError("candidate_timeout_s must be below the stage's timeout_s")
        if self.min_candidates > self.k:
            raise ValueError("min_candidates cannot exceed k")
        if self.max_total_tokens is not None and self.max_total_tokens < self.k:
            raise ValueError("max_total_tokens must allow at least one token per candidate (>= k)")
        low, high, step = self.grid
        if step <= 0 or high < low:
            raise ValueError("grid is [low, high, step] with low <= high and step > 0")
        return self


def _skip_reason(request: dict[str, Any]) -> str | None:
    if int(request.get("n") or 1) > 1:
        return "the client asked for n > 1: every choice is generated as asked"
    if request.get("tools"):
        return "tool calls are not sampled and reranked"
    return None


@stages.register("sample")
class Sample:
    name: ClassVar[str] = "sample"
    phase: ClassVar[Phase] = "generate"
    needs_user: ClassVar[bool] = False  # anonymous requests get the policy's seeded weights
    Config: ClassVar[type[StageConfig]] = SampleConfig

    def __init__(self, deps: SampleDeps) -> None:
        self.router = deps.router
        self.profiles = deps.profiles

    async def run(self, ctx: Context, config: SampleConfig) -> dict[str, Any]:
        skip = _skip_reason(ctx.request)
        if skip:
            return {"skipped": skip}
        scorer, direction = await self.profiles.direction(ctx.identity, ctx.policy, config.scorer)
        attributes = tuple(direction.attributes)
        target = rps.normalize(direction.weights)
        info: dict[str, Any] = {
            "mode": config.mode,
            "scorer": config.scorer or type(scorer).__name__,
            "target": dict(zip(attributes, (round(w, 4) for w in target), strict=True)),
        }
        if len(target) == 2:
            info["target_deg"] = round(rps.angle_of(target), 3)
        if ctx.request.get("stream") and config.stream_first:
            ctx.stream_direct = True
            text = rps.TEXTS[config.conditioning](attributes, target)
            ctx.request["messages"] = rps.condition(ctx.request["messages"], text, config.placement)
            return {**info, "stream_first": True, "conditioning": text}

        planned = rps.plan(
            attributes, target, config.mode, config.k, config.t_max, config.conditioning,
            config.grid, config.seed, config.use_n,
        )  # fmt: skip
        client_cap = ctx.request.get("max_completion_tokens") or ctx.request.get("max_tokens")
        cap = rps.per_candidate_cap(
            client_cap if isinstance(client_cap, int) else None, config.max_tokens, config.max_total_tokens, config.k
        )
        bodies = rps.candidate_bodies(ctx.request, planned, config.placement, config.temperature, config.top_p, cap)
        complete = partial(self.router.complete, ctx.model)
        quorum = None if config.quorum_share is None else max(1, math.ceil(config.quorum_share * len(bodies)))
        outcomes = await rps.generate(complete, bodies, config.candidate_timeout_s, quorum, config.straggler_grace)

        usage = rps.total_usage(outcomes)
        candidates: list[dict[str, Any]] = []
        listed: list[dict[str, Any]] = []
        for p, o in zip(planned, outcomes, strict=True):
            entry: dict[str, Any] = {
                "weights": [round(w, 4) for w in p.direction],
                "offset_deg": round(p.offset_deg, 3),
                "request": o.index,
                "status": o.status,
                "ms": round(o.ms, 3),
            }
            if len(target) == 2:
                entry["deg"] = round(rps.angle_of(p.direction), 3)
            if o.status != "ok":
                listed += [{**entry, "candidate": None, "error": o.error}] * p.n
                continue
            for j, c in enumerate(o.completions):
                listed.append({**entry, "candidate": len(candidates), "usage": o.usage, "n": p.n})
                # each request's tokens ride on its first choice, so a sum over candidates is the total
                own = o.usage if j == 0 else dict.fromkeys(o.usage, 0)
                candidates.append({**c, "usage": dict(own)})
        info.update(
            conditioning=config.conditioning,
            requests=len(bodies),
            max_tokens=cap,
            candidates=listed,
            usage=usage,
            failed=sum(o.status == "failed" for o in outcomes),
            timed_out=sum(o.status == "timeout" for o in outcomes),
        )
        if len(candidates) < config.min_candidates:
            errors = "; ".join(sorted({o.error or "" for o in outcomes if o.status != "ok"}))
            raise UpstreamError(
                f"only {len(candidates)} of {config.k} candidates came back (min_candidates "
                f"{config.min_candidates}): {errors}"
            )
        if candidates and not ctx.has_response_stage:  # else rerank chooses, and adds up their usage
            candidates[0]["usage"] = dict(usage)  # served as is: it carries every candidate's tokens
        ctx.candidates = candidates
        return info
