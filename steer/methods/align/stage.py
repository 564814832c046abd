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
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from prometheus_client import Counter, Histogram

from steer.methods.align.aligner import AlignConfig, Aligner, Outcome, turn_gate
from steer.methods.align.cache import RewriteCache
from steer.pipeline.ports import Embedders, Metrics, Policies, Router
from steer.pipeline.stage import Context, Phase, StageConfig, stages
from steer.protocol import insert_after_system

if TYPE_CHECKING:
    from retrieval.embeddings import Embedder
    from steer.storage.database import Database


class AlignDeps(Protocol):
    @property
    def router(self) -> Router: ...

    @property
    def profiles(self) -> Embedders: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def policies(self) -> Policies: ...

    @property
    def db(self) -> Database | None: ...

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
    guidance = {"role": "system", "content": config.guidance.replace("{rewrite}", rewrite)}
    return insert_after_system(out, guidance)[0]


@stages.register("align")
class Align:
    name: ClassVar[str] = "align"
    phase: ClassVar[Phase] = "request"
    order: ClassVar[int] = 20
    needs_user: ClassVar[bool] = False
    Config: ClassVar[type[StageConfig]] = AlignConfig

    def __init__(self, deps: AlignDeps) -> None:
        self.deps = deps
        self.cache = RewriteCache(lambda: deps.db)
        self.aligner = Aligner(self._complete, self._embedder, self.cache)
        registry = deps.metrics.registry
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
        return await self.deps.router.complete(model, body)

    async def _embedder(self) -> Embedder:
        """The embedder the scorers use too (``ProfileService.embedder``): one per process."""
        return await self.deps.profiles.embedder()

    async def warmup(self) -> None:
        """Load the embedding model and any embedded aligner model named by a policy."""
        models = {
            cfg.model
            for policy in self.deps.policies.current.policies.values()
            for name, cfg in policy.stage_configs()
            if name == self.name and isinstance(cfg, AlignConfig)
        }
        for model in sorted(models):
            warm = getattr(self.deps.router.upstream(model), "warmup", None)
            if warm is not None:
                await warm()
        await self._embedder()

    def drop_cached(self, tenant: str | None, user: str | None) -> None:
        """Drop the user's rewrites held in memory (None: everyone's): another process changed them."""
        self.cache.drop_cached(tenant, user)

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
                if config.mode == "replace":  # the user's own words, for stages that must not take these
                    ctx.rewritten = (out.rewrite, gate.text)
        if out.aligner_ms is not None:
            self.rewrite_seconds.labels(config.model).observe(out.aligner_ms / 1000)
        self.decisions.labels(out.decision, out.reason).inc()
        return {"aligner": config.model, "mode": config.mode, **out.trace()}
