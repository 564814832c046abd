"""Feedback on served answers and the user's profile.

    POST /v1/feedback                 {"completion_id", one of: "rating" (-1..1), "choice" (int),
                                       "edit" (text); optional "index" (the rated/edited choice,
                                       default 0), "user" (must be the completion's)}
    GET  /v1/users/{user}/profile     [?scorer=NAME]  weights, direction, mixture, pins, events
    PUT  /v1/users/{user}/profile     {"scorer"?, "weights"? (seeds), "pinned"?, "reset"?}

A completion is the one ``rerank`` served and recorded (id ``chatcmpl-<trace id>``). Feedback
turns into Bradley-Terry pairs on the candidates' normalised attribute scores
(``steer.methods.profiles.pairs``) and refits only that user's parameters. A completion that does
not exist, belongs to another tenant, or to a user the key may not act as, is a 404 alike:
existence is not leaked. An edit needs
the completion's context, kept only under a policy with ``log_prompts: true`` (else 400
``no_context``). Feedback or a profile change begun before the user was forgotten writes nothing
(404, as the completion is gone).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from retrieval.store import OwnerForgotten
from steer.errors import InvalidRequest, NotFound
from steer.identity import Identity
from steer.methods.profiles.pairs import feedback_pairs
from steer.methods.profiles.service import DEFAULT_SCORER
from steer.server.memories import path_user
from steer.server.routes import endpoint, json_response, read_json_object
from steer.server.services import Services

MAX_BODY = 256 * 1024


def _policy_bits(
    services: Services, tenant: str, user: str
) -> tuple[str, dict[str, Any], dict[str, float], dict[str, float]]:
    """(scorer, options, seeds, pins) from the rerank section of the user's policy."""
    cfg = services.policies.resolve(Identity(tenant, user)).stage_config("rerank")
    if cfg is None:
        return DEFAULT_SCORER, {}, {}, {}
    return cfg.scorer, dict(cfg.options), dict(cfg.weights), dict(cfg.pinned)


async def post_feedback(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    began = time.time()
    body = await read_json_object(request, MAX_BODY)
    unknown = set(body) - {"completion_id", "rating", "choice", "edit", "index", "user"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
    completion_id = body.get("completion_id")
    if not isinstance(completion_id, str) or not completion_id or len(completion_id) > 200:
        raise InvalidRequest("completion_id must be a non-empty string", param="completion_id", code="invalid_value")
    kinds = [k for k in ("rating", "choice", "edit") if body.get(k) is not None]
    if len(kinds) != 1:
        raise InvalidRequest("give exactly one of rating, choice or edit", param="rating", code="invalid_feedback")
    served = await asyncio.to_thread(services.profiles.store.served, caller.tenant, completion_id)
    named = body.get("user")
    key = services.user_ids.key(named, "user") if isinstance(named, str) else named
    # key scopes name users as clients give them: a mapped user's own key is checked on the id given
    in_scope = served is not None and (
        caller.may_act_as(served.user) or (key == served.user and caller.may_act_as(str(named)))
    )
    if served is None or not in_scope or (key is not None and key != served.user):
        raise NotFound(f"no completion {completion_id!r} for this key", param="completion_id")
    scorer_name, options, seeds, pins = _policy_bits(services, served.tenant, served.user)
    scorer = services.profiles.scorer(served.scorer, options if scorer_name == served.scorer else {})
    pairs, value = await feedback_pairs(scorer, served, kinds[0], body)
    try:
        profile, ms = await services.profiles.learn(
            served.tenant, served.user, served.scorer, scorer, completion_id, kinds[0], value, pairs, seeds, pins, began
        )
    except OwnerForgotten as exc:  # the user was forgotten while this ran: their completion is gone
        raise NotFound(f"no completion {completion_id!r} for this key", param="completion_id") from exc
    return json_response(
        {
            "object": "feedback",
            "completion_id": completion_id,
            "user": served.user,
            "kind": kinds[0],
            "pairs": len(pairs),
            "update_ms": round(ms, 4),
            "profile": profile.to_dict(served.user),
        }
    )


def _weights_arg(body: dict[str, Any], name: str, attributes: tuple[str, ...]) -> dict[str, float] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{name} must be an object of attribute -> number", param=name, code="invalid_value")
    out: dict[str, float] = {}
    for attr, w in value.items():
        if attr not in attributes:
            raise InvalidRequest(
                f"unknown attribute {attr!r} (this scorer has: {', '.join(attributes)})",
                param=f"{name}.{attr}",
                code="unknown_attribute",
            )
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or abs(w) > 100:
            raise InvalidRequest(
                f"{name}.{attr} must be a number within -100..100", param=f"{name}.{attr}", code="invalid_value"
            )
        out[attr] = float(w)
    return out


async def _profile_answer(services: Services, tenant: str, user: str, scorer_name: str) -> Response:
    return json_response(await user_profile(services, tenant, user, scorer_name))


async def user_profile(services: Services, tenant: str, user: str, scorer_name: str | None = None) -> dict[str, Any]:
    """The user's profile as ``GET /v1/users/{user}/profile`` answers it (and the inspector shows it); the
    scorer: ``scorer_name``, else the one the user's policy reranks with."""
    policy_scorer, options, seeds, pins = _policy_bits(services, tenant, user)
    scorer_name = scorer_name or policy_scorer
    if scorer_name != policy_scorer:
        options = {}
    scorer = services.profiles.scorer(scorer_name, options)
    profile = await services.profiles.profile(tenant, user, scorer_name, scorer, seeds, pins)
    return profile.to_dict(user)


def _scorer_name(services: Services, tenant: str, user: str, given: Any) -> str:
    from steer.scorers import scorers

    if given is None:
        return _policy_bits(services, tenant, user)[0]
    if not isinstance(given, str) or given not in scorers:
        raise InvalidRequest(f"unknown scorer {given!r}", param="scorer", code="invalid_value")
    return given


async def get_profile(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    user = path_user(request, caller)
    name = _scorer_name(services, caller.tenant, user, request.query_params.get("scorer"))
    return await _profile_answer(services, caller.tenant, user, name)


async def put_profile(request: Request, services: Services, caller: Identity, trace_id: str) -> Response:
    began = time.time()
    user = path_user(request, caller)
    body = await read_json_object(request, MAX_BODY)
    unknown = set(body) - {"scorer", "weights", "pinned", "reset"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
    name = _scorer_name(services, caller.tenant, user, body.get("scorer"))
    scorer = services.profiles.scorer(name, {})
    attrs = tuple(scorer.attributes)
    seeds = _weights_arg(body, "weights", attrs)
    pinned = _weights_arg(body, "pinned", attrs)
    reset = body.get("reset", False)
    if not isinstance(reset, bool):
        raise InvalidRequest("reset must be true or false", param="reset", code="invalid_value")
    try:
        await services.profiles.update_user(caller.tenant, user, name, scorer, seeds, pinned, reset, began)
    except OwnerForgotten as exc:
        raise NotFound("this user was forgotten while the profile was being changed; nothing was stored") from exc
    return await _profile_answer(services, caller.tenant, user, name)


def feedback_routes() -> list[Route]:
    return [
        Route("/v1/feedback", endpoint("feedback", post_feedback), methods=["POST"]),
        Route("/v1/users/{user}/profile", endpoint("profile", get_profile), methods=["GET"]),
        Route("/v1/users/{user}/profile", endpoint("profile", put_profile), methods=["PUT"]),
    ]
