"""``align``: P-Aligner pre-alignment, the last user instruction rewritten before generation, guarded.

The aligner is any model of the settings' ``models`` (``songff/P-Aligner`` behind vLLM, see
docs/p-aligner.md), called greedily with P-Aligner's own prompt format (plus the principle list
for a model not trained on it: ``trained: false``). The rewrite replaces the instruction
(``mode: replace``) or is added beside it as a system message (``mode: guidance``); a system
message is never rewritten, tool calls, tool results and non-text content are never touched, and
the aligner's own prompt and output never reach the client. Whenever a guard fails (see
:mod:`steer.methods.align.aligner`) the original stays. Every decision is in the trace, with the original, and
counted in ``steer_align_decisions_total{decision,reason}``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from prometheus_client import Counter, Histogram
from pydantic import Field, field_validator, model_validator

from steer.methods.align.aligner import Aligner, Outcome, RewriteCache, text_of, turn_gate
from steer.pipeline.stage import Context, Phase, StageConfig, stages
from steer.server.services import Services

if TYPE_CHECKING:
    from retrieval.embeddings import Embedder

GUIDANCE = (
    "A clearer statement of the user's latest request follows. It is a rewrite of the user's own words "
    "and carries no more authority than they do; answer the user's request, using it where it helps.\n"
    "{rewrite}"
)


class AlignConfig(StageConfig):
    timeout_s: float = Field(default=3.0, gt=0)  # the whole stage, guards included
    model: str = Field(min_length=1)  # the aligner: a name from the settings' `models`
    trained: bool = True  # false: a model not trained as P-Aligner; the prompt adds the principle list
    mode: Literal["replace", "guidance"] = "replace"
    guidance: str = GUIDANCE  # guidance mode: the system message; {rewrite} stands for the rewrite
    rewrite_timeout_s: float = Field(default=2.0, gt=0)  # the aligner call; past it the original stays
    max_tokens: int = Field(default=1024, ge=16, le=4096)  # also capped by max_length_ratio
    min_length_ratio: float = Field(default=0.5, ge=0)  # rewrite chars / original chars
    max_length_ratio: float = Field(default=6.0, gt=0)
    min_similarity: float = Field(default=0.6, ge=-1, le=1)  # embedding cosine to the original; -1: off
    preserve: tuple[Literal["code", "numbers", "names"], ...] = ("code", "numbers", "names")
    min_words: int = Field(default=3, ge=0)  # shorter turns are left alone
    max_chars: int = Field(default=8000, ge=1)  # longer turns are left alone
    skip_follow_ups: bool = True  # leave alone turns that lean on earlier turns
    follow_up_max_words: int = Field(default=6, ge=0)  # after earlier turns, this short is a follow-up
    cache: bool = True
    persist: bool = True  # keep the cache in SQLite too (a hash of the instruction, and the rewrite)
    # rewrites are cached per user only: a cache shared by a tenant's users would tell one user what
    # another asked (a hit shows as cached: true, and in the latency); `tenant` is refused at load
    cache_scope: str = "user"
    cache_size: int = Field(default=4096, ge=1)  # in-memory entries

    @field_validator("cache_scope")
    @classmethod
    def _per_user_only(cls, scope: str) -> str:
        if scope != "user":
            raise ValueError(
                f"cache_scope {scope!r} is not supported: rewrites are cached per user only, since a cache shared "
                "by users tells one user what another asked (a hit shows as cached: true and in the latency); "
                "remove the line or write cache_scope: user"
            )
        return scope

    @model_validator(mode="after")
    def _consistent(self) -> AlignConfig:
        if self.min_length_ratio >= self.max_length_ratio:
            raise ValueError("min_length_ratio must be below max_length_ratio")
        if "{rewrite}" not in self.guidance:
            raise ValueError("guidance must contain {rewrite}")
        return self


def apply(messages: list[dict[str, Any]], index: int, rewrite: str, config: AlignConfig) -> list[dict[str, Any]]:
    """The messages with the rewrite applied: the user message replaced, or a guidance message added."""
    out = list(messages)
    if config.mode == "replace":
        message = out[index]
        if message.get("role") != "user":  # never a system message, nor anything but the user's words
            raise ValueError(f"align rewrites user messages only, not {message.get('role')!r}")
        content = rewrite if isinstance(message.get("content"), str) else [{"type": "text", "text": rewrite}]
        out[index] = {**message, "content": content}
        return out
    at = 0
    while at < len(out) and out[at].get("role") in ("system", "developer"):
        at += 1
    out.insert(at, {"role": "system", "content": config.guidance.replace("{rewrite}", rewrite)})
    return out


def users_own_messages(ctx: Context) -> list[dict[str, Any]]:
    """The request's messages with the user's own words back where ``align`` replaced them (what the user
    said, for stages that must not take the aligner's words for the user's: ``remember``)."""
    messages: list[dict[str, Any]] = ctx.request["messages"]
    for record in ctx.records:
        info = record.info
        if record.name == "align" and record.status == "ok" and info.get("decision") == "applied":
            if info.get("mode") != "replace" or not isinstance(info.get("original"), str):
                break
            at = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
            if at is not None and text_of(messages[at].get("content")) == info.get("rewrite"):
                out = list(messages)
                out[at] = {**messages[at], "content": info["original"]}
                return out
            break
    return messages


@stages.register("align")
class Align:
    name: ClassVar[str] = "align"
    phase: ClassVar[Phase] = "request"
    order: ClassVar[int] = 20
    needs_user: ClassVar[bool] = False
    Config: ClassVar[type[StageConfig]] = AlignConfig

    def __init__(self, services: Services) -> None:
        self.services = services
        self.cache = RewriteCache(lambda: services.db)
        self.aligner = Aligner(self._complete, self._embedder, self.cache)
        registry = services.metrics.registry
        self.decisions = Counter(
            "steer_align_decisions_total", "align stage decisions", ["decision", "reason"], registry=registry
        )
        self.rewrite_seconds = Histogram(
            "steer_align_rewrite_seconds",
            "Aligner call time (cache misses)",
            ["model"],
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
            registry=registry,
        )

    async def _complete(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.services.router.complete(model, body)

    async def _embedder(self) -> Embedder:
        """The embedder the scorers use too (``ProfileService.embedder``): one per process."""
        return await self.services.profiles.embedder()

    async def warmup(self) -> None:
        """Load the embedding model and any embedded aligner model named by a policy."""
        models = {
            cfg.model
            for policy in self.services.policies.current.policies.values()
            for name, cfg in policy.stage_configs()
            if name == self.name and isinstance(cfg, AlignConfig)
        }
        for model in sorted(models):
            warm = getattr(self.services.router.upstream(model), "warmup", None)
            if warm is not None:
                await warm()
        await self._embedder()

    def forget(self, tenant: str, user: str) -> int:
        """Drop the user's cached rewrites (``DELETE /v1/users/{user}``)."""
        return self.cache.forget(tenant, user)

    def export(self, tenant: str, user: str) -> dict[str, Any]:
        """The user's cached rewrites (``GET /v1/users/{user}/export``)."""
        return {"align_cache": self.cache.export(tenant, user)}

    async def run(self, ctx: Context, config: AlignConfig) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.cache.size = config.cache_size
        messages: list[dict[str, Any]] = ctx.request["messages"]
        gate = turn_gate(messages, config)
        if isinstance(gate, str):
            out = Outcome("skipped", gate)
        else:
            budget = config.timeout_s * 0.9 - (time.perf_counter() - t0)
            out = await self.aligner.rewrite(
                gate.text, config, ctx.identity.tenant, ctx.user or "", budget, ctx.began
            )
            if out.decision == "applied" and out.rewrite is not None:
                ctx.request["messages"] = apply(messages, gate.index, out.rewrite, config)
        if out.aligner_ms is not None:
            self.rewrite_seconds.labels(config.model).observe(out.aligner_ms / 1000)
        self.decisions.labels(out.decision, out.reason).inc()
        return {"aligner": config.model, "mode": config.mode, **out.trace()}
