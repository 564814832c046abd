"""What each inspector page shows, gathered from the services the API uses (no SQL here, no second data
path): plain dicts and lists for the templates."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import math
import time
from typing import Any

from steer.errors import NotFound
from steer.pipeline.policy import EVERY_TENANT
from steer.server.feedback import user_profile
from steer.server.memories import call_memory
from steer.server.services import Services
from steer.server.ui.sessions import Viewer

RECENT = 50  # requests listed on the home page and a user's page
PER_PAGE = 100  # memories per page of a user's page, the latest changed first


async def memory_counts(services: Services, tenant: str) -> dict[str, int]:
    store = await services.memory.store()
    return await asyncio.to_thread(store.user_counts, tenant)


def policy_of(services: Services, tenant: str, user: str | None) -> dict[str, str]:
    policy, why = services.policies.current.explain(tenant, user)
    return {"name": policy.name, "why": why, "source": policy.source}


async def recent_requests(services: Services, viewer: Viewer, user: str | None = None) -> list[dict[str, Any]]:
    """The latest logged requests the viewer may see (the tenant's, or one user's), with whether a trace
    of each is kept."""
    log = services.request_log
    assert log is not None
    await log.flush()
    tenant = viewer.identity.tenant
    if user is None and not viewer.sees_tenant:  # a scoped key: its own users' requests only
        rows = [r for r in await asyncio.to_thread(log.recent, tenant, None, RECENT * 4) if _visible(viewer, r)]
        rows = rows[:RECENT]
    else:
        rows = await asyncio.to_thread(log.recent, tenant, user, RECENT)
    traced: set[str] = set()
    if services.traces is not None:
        await services.traces.flush()
        traced = await asyncio.to_thread(services.traces.has, tenant, [r["trace_id"] for r in rows])
    for r in rows:
        r["traced"] = r["trace_id"] in traced
    return rows


def _visible(viewer: Viewer, row: dict[str, Any]) -> bool:
    user = row.get("user")
    return viewer.sees_tenant if user is None else viewer.may_see(user)


async def users(services: Services, viewer: Viewer, query: str) -> list[dict[str, Any]]:
    """The tenant's users (those holding memories or with logged requests) whose id starts with ``query``."""
    log = services.request_log
    assert log is not None
    await log.flush()
    tenant = viewer.identity.tenant
    requests = await asyncio.to_thread(log.users, tenant, query, 500)
    counts = await memory_counts(services, tenant)
    names = set(requests) | {u for u in counts if u.lower().startswith(query.lower())}
    out: list[dict[str, Any]] = []
    for name in names:
        if not viewer.may_see(name):
            continue
        n, last = requests.get(name, (0, None))
        out.append(
            {"user": name, "memories": counts.get(name, 0), "requests": n, "last": last,
             "policy": policy_of(services, tenant, name)}
        )  # fmt: skip
    out.sort(key=lambda u: (-(u["last"] or 0), u["user"]))
    return out[:500]


async def require_user(services: Services, viewer: Viewer, user: str) -> None:
    """``NotFound`` when steer holds no memory and no logged request of the user and the viewer is not the
    user's own key: an admin's page for a user of another tenant looks like one for a user that never was."""
    if not viewer.sees_tenant:
        return
    tenant = viewer.identity.tenant
    if await call_memory(services, "count", tenant, user):
        return
    log = services.request_log
    assert log is not None
    await log.flush()
    if not await asyncio.to_thread(log.recent, tenant, user, 1):
        raise NotFound(f"no user {user!r} in this tenant")


async def user_page(services: Services, viewer: Viewer, user: str, page: int = 1) -> dict[str, Any]:
    """A user's memories (current ones with the chain each superseded), recent requests and policy.

    Raises ``NotFound`` when steer holds nothing on the user and the viewer is not the user's own key:
    an admin's page for a user of another tenant looks like one for a user that never was."""
    tenant = viewer.identity.tenant
    memories = await call_memory(services, "list", tenant, user, include_history=True)
    requests = await recent_requests(services, viewer, user)
    if not memories and not requests and viewer.sees_tenant:
        raise NotFound(f"no user {user!r} in this tenant")
    replaced: dict[int, list[Any]] = {}
    for m in memories:
        if m.superseded_by is not None:
            replaced.setdefault(m.superseded_by, []).append(m)

    def chain(memory_id: int) -> list[Any]:
        out, todo, seen = [], list(replaced.get(memory_id, [])), {memory_id}
        while todo:
            old = todo.pop(0)
            if old.id in seen:
                continue
            seen.add(old.id)
            out.append(old)
            todo += replaced.get(old.id, [])
        return out

    current = sorted((m for m in memories if m.superseded_by is None), key=lambda m: (-m.updated_at, -m.id))
    pages = max(1, math.ceil(len(current) / PER_PAGE))
    page = min(max(page, 1), pages)
    shown = current[(page - 1) * PER_PAGE : page * PER_PAGE]
    return {
        "user": user,
        "memories": [{"m": m, "chain": chain(m.id)} for m in shown],
        "count": len(current),
        "page": page,
        "pages": pages,
        "history": len(memories) - len(current),
        "requests": requests,
        "policy": policy_of(services, tenant, user),
        "max_chars": services.settings.memory.max_chars,
    }


async def memory_page(services: Services, viewer: Viewer, user: str, memory_id: int) -> dict[str, Any]:
    memory = await call_memory(services, "get", viewer.identity.tenant, user, memory_id)
    return {"user": user, "m": memory, "max_chars": services.settings.memory.max_chars}


async def profile_page(services: Services, viewer: Viewer, user: str) -> dict[str, Any]:
    await require_user(services, viewer, user)
    profile = await user_profile(services, viewer.identity.tenant, user)
    weights = profile["weights"]
    mixture = profile["mixture"]
    return {
        "user": user,
        "profile": profile,
        "weights_chart": bars([(a, w) for a, w in weights.items()]),
        "direction_chart": bars(list(profile["direction"].items())),
        "mixture_chart": bars([(f"prototype {i + 1}", p) for i, p in enumerate(mixture)]),
        "policy": policy_of(services, viewer.identity.tenant, user),
    }


def bars(items: list[tuple[str, float]], width: int = 360) -> dict[str, Any]:
    """An SVG bar chart's geometry (drawn by the template): one row per item, bars from a zero line, to
    scale with the largest magnitude."""
    peak = max((abs(v) for _, v in items if math.isfinite(v)), default=0.0) or 1.0
    negative = any(v < 0 for _, v in items)
    zero = width / 2 if negative else 0.0
    span = width / 2 if negative else width
    rows = []
    for i, (label, value) in enumerate(items):
        length = abs(value) / peak * span if math.isfinite(value) else 0.0
        x = zero - length if value < 0 else zero
        rows.append({"label": label, "value": value, "x": round(x, 1), "y": i * 22, "w": round(length, 1)})
    return {"rows": rows, "width": width, "height": max(22 * len(rows), 22), "zero": zero}


def word_diff(original: str, rewrite: str) -> list[tuple[str, str]]:
    """(``same`` | ``del`` | ``ins``, text) pieces turning ``original`` into ``rewrite``, word by word."""
    a, b = original.split(" "), rewrite.split(" ")
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(("same", " ".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(("del", " ".join(a[i1:i2])))
        if j2 > j1:
            out.append(("ins", " ".join(b[j1:j2])))
    return out


SHOWN = {
    "recall": ("injected", "withheld", "tokens", "budget_tokens", "reason"),
    "align": ("decision", "reason", "original", "rewrite", "similarity", "length_ratio", "missing", "cached",
              "aligner_ms", "error", "aligner", "mode"),
    "sample": ("candidates", "target", "mode", "scorer"),
    "rerank": ("scores", "chosen", "returned", "weights"),
}  # fmt: skip


async def trace_page(services: Services, viewer: Viewer, trace_id: str) -> dict[str, Any]:
    """One request's kept trace, shaped for the page; ``NotFound`` unless the viewer may see its user."""
    traces = services.traces
    tenant = viewer.identity.tenant
    trace = None
    if traces is not None:
        await traces.flush()
        trace = await asyncio.to_thread(traces.get, tenant, trace_id)
    if trace is None or not _visible(viewer, trace):
        kept = "" if traces is not None else " (traces are not kept: set traces.keep)"
        raise NotFound(f"no trace {trace_id!r} in this tenant{kept}")
    user = trace.get("user")
    ids = [m["id"] for s in trace["stages"] for m in s.get("injected") or () if isinstance(m, dict)]
    texts = await memory_texts(services, tenant, user, ids) if user is not None and ids else {}
    stages = []
    recall = align = sample = rerank = None
    for stage in trace["stages"]:
        name = stage["name"]
        rest = {
            k: v for k, v in stage.items() if k not in ("name", "status", "ms") and k not in SHOWN.get(name, ())
        }
        stages.append({"name": name, "status": stage["status"], "ms": stage["ms"], "rest": rest})
        if name == "recall":
            recall = {
                **stage,
                "injected": [{**m, "text": texts.get(m["id"])} for m in stage.get("injected", [])],
            }
        elif name == "align":
            align = dict(stage)
            if isinstance(stage.get("original"), str) and isinstance(stage.get("rewrite"), str):
                align["diff"] = word_diff(stage["original"], stage["rewrite"])
        elif name == "sample":
            sample = stage
        elif name == "rerank":
            rerank = stage
    return {
        "trace": trace,
        "stages": stages,
        "recall": recall,
        "align": align,
        "candidates": candidate_rows(sample, rerank),
        "sample": sample,
        "rerank": rerank,
        "usage": trace.get("usage") or {},
        "upstream": trace.get("upstream") or {},
    }


async def memory_texts(services: Services, tenant: str, user: str, ids: list[int]) -> dict[int, str]:
    """The texts of those of the user's memories still held, by id (the kept trace holds ids only)."""
    from retrieval import MemoryNotFound

    store = await services.memory.store()

    def read() -> dict[int, str]:
        out = {}
        for memory_id in dict.fromkeys(ids):
            with contextlib.suppress(MemoryNotFound):
                out[memory_id] = store.get(tenant, user, memory_id).text
        return out

    return await asyncio.to_thread(read)


def candidate_rows(sample: dict[str, Any] | None, rerank: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per candidate: the direction RPS drew it from (when it sampled), rerank's scores, the winner."""
    scores = {s["index"]: s for s in (rerank or {}).get("scores", [])}
    chosen = (rerank or {}).get("chosen")
    rows: list[dict[str, Any]] = []
    drawn = (sample or {}).get("candidates") or []
    if drawn:
        for entry in drawn:
            index = entry.get("candidate")
            score = scores.get(index) if index is not None else None
            rows.append(
                {"index": index, "weights": entry.get("weights"), "deg": entry.get("deg"),
                 "status": entry.get("status"), "ms": entry.get("ms"),
                 "attributes": (score or {}).get("attributes"), "total": (score or {}).get("total"),
                 "winner": index is not None and index == chosen}
            )  # fmt: skip
    else:
        for index, score in sorted(scores.items()):
            rows.append(
                {"index": index, "weights": None, "deg": None, "status": "ok", "ms": None,
                 "attributes": score.get("attributes"), "total": score.get("total"), "winner": index == chosen}
            )  # fmt: skip
    return rows


def policies_page(services: Services, viewer: Viewer) -> dict[str, Any]:
    """The loaded policies that apply in the viewer's tenant, and the last reload error."""
    store = services.policies
    tenant = viewer.identity.tenant
    shown = []
    for name, policy in sorted(store.current.policies.items()):
        tenants = policy.match.tenants
        if tenants and tenant not in tenants and EVERY_TENANT not in tenants:
            continue
        shown.append(
            {"name": name, "source": policy.source, "description": policy.description,
             "users": list(policy.match.users), "tenants": list(tenants), "log_prompts": policy.log_prompts,
             "stages": [(n, cfg.model_dump(mode="json")) for n, cfg in policy.stage_configs()]}
        )  # fmt: skip
    return {
        "policies": shown,
        "directory": str(store.directory),
        "reloads": store.reloads,
        "reload_errors": store.reload_errors,
        "last_error": store.last_error,
    }


WINDOWS = ((60.0, "1 min"), (300.0, "5 min"), (900.0, "15 min"))


def health_page(services: Services) -> dict[str, Any]:
    """Readiness as ``/readyz`` tells an admin, and the main counters over the last minutes."""
    windows = []
    for seconds, label in WINDOWS:
        covered, delta = services.history.since(seconds)
        routes = sorted({r for (kind, r) in delta if kind == "requests"})
        stage_names = sorted({s for (kind, s) in delta if kind == "stage_count"})
        windows.append(
            {
                "label": label,
                "covered": covered,
                "routes": [
                    {"route": r, "requests": int(delta.get(("requests", r), 0)),
                     "errors": int(delta.get(("errors", r), 0)),
                     "mean_ms": _mean_ms(delta.get(("seconds", r), 0.0), delta.get(("requests", r), 0.0))}
                    for r in routes
                ],
                "stages": [
                    {"stage": s, "runs": int(delta.get(("stage_count", s), 0)),
                     "failures": int(delta.get(("stage_failures", s), 0)),
                     "mean_ms": _mean_ms(delta.get(("stage_seconds", s), 0.0), delta.get(("stage_count", s), 0.0))}
                    for s in stage_names
                ],
            }
        )  # fmt: skip
    return {
        "ready": services.ready,
        "warm": services.warm,
        "policies": sorted(services.policies.current.policies),
        "policy_error": services.policies.last_error,
        "models": [m.name for m in services.settings.models],
        "uptime_s": time.time() - services.started_at,
        "windows": windows,
        "traces": services.settings.traces,
    }


def _mean_ms(seconds: float, count: float) -> float | None:
    return round(seconds / count * 1000, 2) if count > 0 else None
