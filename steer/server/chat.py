"""Serving ``/v1/chat/completions``: identity, policy, stages, upstream, response.

With no stage to run (the ``passthrough`` policy, or an anonymous request whose policy only
has per-user stages) a request takes the fast path: straight to the upstream and back, the
stream forwarded event by event. Otherwise the pipeline runs its phases around generation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from steer.errors import InvalidRequest, PermissionDenied, SteerError, UpstreamError
from steer.identity import Identity
from steer.pipeline.runner import run_phase, spawn_background
from steer.pipeline.stage import Context
from steer.protocol import (
    SSE_DONE,
    ChatCompletionRequest,
    completion_chunks,
    last_user_text,
    sse,
    validate_chat,
)
from steer.server.auth import compiled_sources, resolve_user
from steer.server.services import Services
from steer.upstreams.router import OpenStream

log = logging.getLogger("steer.http")
_STREAM_FIELDS = ("stream", "stream_options")  # not sent when steer asks for a whole completion


def log_error(exc: SteerError, trace_id: str) -> None:
    """An upstream error's detail (which may name the upstream's address) goes to the log only,
    with the trace id the client was given."""
    if isinstance(exc, UpstreamError) and exc.detail:
        log.warning("trace %s: %s (%s)", trace_id, exc.message, exc.detail)


def strip_identity_fields(body: dict[str, Any], sources: tuple[str, ...]) -> dict[str, Any]:
    """``body`` without the nested fields steer reads the user from (``metadata.user_id``,
    ``litellm_metadata.user``), an object left empty dropped: OpenAI refuses ``metadata`` unless
    ``store`` is on, and knows no ``litellm_metadata``. Top-level fields (``user``) stay. A copy;
    ``body`` itself is left as it was."""
    out = body
    for _, header, path in compiled_sources(sources):
        head = path[0]
        if header is not None or len(path) < 2 or not isinstance(out.get(head), dict):
            continue
        out = {**out, head: _without(out[head], list(path[1:]))}
        if not out[head]:
            del out[head]
    return out


def _without(obj: dict[str, Any], path: list[str]) -> dict[str, Any]:
    first, rest = path[0], path[1:]
    if first not in obj:
        return obj
    if not rest:
        return {k: v for k, v in obj.items() if k != first}
    inner = obj[first]
    if not isinstance(inner, dict):
        return obj
    inner = _without(inner, rest)
    return {**obj, first: inner} if inner else {k: v for k, v in obj.items() if k != first}


@dataclass(slots=True)
class ChatResult:
    body: dict[str, Any] | None = None
    stream: AsyncGenerator[bytes, None] | None = None


async def chat_completion(
    services: Services,
    body: Any,
    caller: Identity,
    headers: Mapping[str, str],
    trace_id: str,
    debug: bool = False,
    req: ChatCompletionRequest | None = None,
) -> ChatResult:
    """Serve one chat body; ``req`` is its validation when the caller already did it (off the loop)."""
    req = req or validate_chat(body)
    if (req.n or 1) > services.settings.max_n:
        raise InvalidRequest(f"n must be at most {services.settings.max_n}", param="n", code="invalid_value")
    identity = resolve_user(caller, headers, body, services.user_ids, services.settings.identity.sources)
    named = identity.given_user
    if debug and not (identity.admin or (named is not None and identity.owns(named))):
        raise PermissionDenied("X-Steer-Debug needs an admin key or the user's own key")
    cfg = services.router.config(req.model)
    if cfg.backend == "openai" and body.get("store") is not True:
        body = strip_identity_fields(body, services.settings.identity.sources)
    policy = services.policies.resolve(identity)
    plan = services.plan(policy, identity)
    responds = any(stage.phase == "response" for stage, _ in plan)
    ctx = Context(
        request=body,
        identity=identity,
        policy=policy,
        model=cfg.name,
        trace_id=trace_id,
        debug=debug,
        has_response_stage=responds,
    )
    stream = bool(req.stream)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    on_stage = services.metrics.on_stage
    prompt = last_user_text(body["messages"]) if policy.log_prompts else None

    if plan:
        await run_phase("request", plan, ctx, on_stage)
        await run_phase("generate", plan, ctx, on_stage)
    reshape = responds and not ctx.stream_direct
    if ctx.candidates is None and stream and not reshape:
        opened = await services.router.open_stream(cfg.name, ctx.request)  # errors until then: a real HTTP status
        services.metrics.first_chunk(cfg.name).observe(time.perf_counter() - ctx.started)
        return ChatResult(stream=_forward_stream(services, ctx, prompt, plan, opened))
    if ctx.candidates is None:  # a stream that response stages reshape is generated whole, replayed below
        body = {k: v for k, v in ctx.request.items() if k not in _STREAM_FIELDS} if stream else ctx.request
        ctx.candidates = [await services.router.complete(cfg.name, body)]
    if plan:
        await run_phase("response", plan, ctx, on_stage)
    response = ctx.response or ctx.candidates[0]
    ctx.response = response
    spawn_background(plan, ctx, on_stage, services.background, services.settings.max_background)
    trace = ctx.trace()
    services.log_request(trace, 200, stream, response.get("usage"), prompt, policy.log_prompts)
    if debug:
        response = {**response, "steer": trace}
    if not stream:
        return ChatResult(body=response)
    return ChatResult(stream=_replay(response, include_usage, services, cfg.name, ctx.started))


async def _forward_stream(
    services: Services, ctx: Context, prompt: str | None, plan: list[Any], opened: OpenStream
) -> AsyncGenerator[bytes, None]:
    """Forward the upstream's events as they come; trace and background work at the end.

    Each read of the upstream goes out as one chunk; the last one (up to and with ``data: [DONE]``) is
    held until the request's log row and background work are done, then goes out with the end of the
    response (:class:`steer.server.sse.EventStreamResponse`). With the debug trace asked for, the last
    event is held back until the stream ends and the trace goes into it as its ``steer`` field (the
    chunk keeps its id, created, model and usage, so the SDKs' stream helpers give the same final
    completion with and without the trace)."""
    status = 200
    usage: Any = None
    completed = False
    held = b""  # debug only: the last event seen, not yet sent
    tail = b""  # the events of the read that ended with [DONE], without it
    rest = opened.rest
    try:
        # the first read, then the rest straight from the backend's generator (no generator in between:
        # each one a read passes through costs a resumption per read)
        event = opened.first
        while event is not None:
            last = event.endswith(SSE_DONE)
            if last:
                event = event[: -len(SSE_DONE)]
            if b'"usage"' in event:
                usage = _usage_of(event)
            if ctx.debug:
                event, held = _hold_last(held + event)
            if last:
                tail = event
                break
            if event:
                yield event
            event = await anext(rest, None)
        completed = True
    except SteerError as exc:  # after the first event: the client gets an error event and no [DONE]
        status = exc.status
        services.router.failed(opened.model, exc)
        services.metrics.errors.labels(exc.type, str(exc.code)).inc()
        log_error(exc, ctx.trace_id)
        if held:
            yield held
            held = b""
        yield sse(exc.body())
    finally:
        await rest.aclose()  # on client disconnect too: closes the upstream connection
        if completed:
            spawn_background(
                plan, ctx, services.metrics.on_stage, services.background, services.settings.max_background
            )
        trace = ctx.trace()
        status = status if completed or status != 200 else 499
        services.log_request(trace, status, True, usage, prompt, ctx.policy.log_prompts)
    if completed:
        yield tail + _with_trace(held, trace) + SSE_DONE if held else tail + SSE_DONE


def _hold_last(batch: bytes) -> tuple[bytes, bytes]:
    """A batch of whole SSE events split into (all but the last, the last)."""
    cut = batch.rfind(b"\n\ndata:", 0, len(batch) - 2)
    if cut < 0:
        return b"", batch
    return batch[: cut + 2], batch[cut + 2 :]


def _with_trace(event: bytes, trace: dict[str, Any]) -> bytes:
    """One SSE event with the debug trace added as its ``steer`` field (as is when it is not JSON)."""
    try:
        chunk = orjson.loads(event[event.index(b":") + 1 :])
    except (orjson.JSONDecodeError, ValueError):
        return event
    if not isinstance(chunk, dict):
        return event
    return sse({**chunk, "steer": trace})


async def _replay(
    response: dict[str, Any], include_usage: bool, services: Services, model: str, started: float
) -> AsyncGenerator[bytes, None]:
    """Stream a finished (reranked) completion in chunks; a debug trace goes into the last one."""
    chunks = completion_chunks({k: v for k, v in response.items() if k != "steer"}, include_usage)
    if "steer" in response and chunks:
        chunks[-1] = {**chunks[-1], "steer": response["steer"]}
    services.metrics.first_chunk(model).observe(time.perf_counter() - started)
    for chunk in chunks:
        yield sse(chunk)
    yield SSE_DONE


def _usage_of(events: bytes) -> Any:
    """The usage object of the last event carrying one, in a batch of SSE events."""
    for event in reversed(events.split(b"\n\n")):
        if b'"usage"' in event:
            try:
                return orjson.loads(event[6:]).get("usage")
            except (orjson.JSONDecodeError, AttributeError):
                return None
    return None
