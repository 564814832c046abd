"""The Python SDK: the official ``openai`` client pointed at steer, plus steer's own endpoints.

    client = steer.Client(user="alice")            # base URL http://127.0.0.1:8400/v1
    client.chat.completions.create(model="local/smollm2", messages=[...])
    client.health()

``Client`` wraps ``openai.OpenAI`` and ``AsyncClient`` wraps ``openai.AsyncOpenAI``; both send
the end user as ``X-Steer-User`` on every request. steer's own endpoints are written once, in
``_Endpoints``: each helper returns the wrapped client's call, which is a value for ``Client``
and an awaitable for ``AsyncClient``. Errors are the ``openai`` exceptions.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from urllib.parse import quote

DEFAULT_BASE_URL = "http://127.0.0.1:8400/v1"


def _options(
    base_url: str | None, api_key: str | None, user: str | None, debug: bool, kwargs: dict[str, Any]
) -> dict[str, Any]:
    headers = dict(kwargs.pop("default_headers", None) or {})
    if user:
        headers["X-Steer-User"] = user
    if debug:
        headers["X-Steer-Debug"] = "1"
    return {
        "base_url": base_url or os.environ.get("STEER_BASE_URL", DEFAULT_BASE_URL),
        "api_key": api_key or os.environ.get("STEER_API_KEY") or "no-key",
        "default_headers": headers,
        **kwargs,
    }


class _Endpoints:
    _openai_class: ClassVar[str]

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        user: str | None = None,
        debug: bool = False,
        **openai_kwargs: Any,
    ) -> None:
        import openai

        self.user = user
        self.openai: Any = getattr(openai, self._openai_class)(
            **_options(base_url, api_key, user, debug, openai_kwargs)
        )

    @property
    def chat(self) -> Any:
        return self.openai.chat

    @property
    def models(self) -> Any:
        return self.openai.models

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        call = getattr(self.openai, method)
        kwargs: dict[str, Any] = {"cast_to": object}
        if body is not None:
            kwargs["body"] = body
        return call(path, **kwargs)

    def _user_path(self, user: str | None, suffix: str = "") -> str:
        user = user or self.user
        if not user:
            raise ValueError("no user: pass user=... or create the client with user=...")
        return f"/users/{quote(user, safe='')}{suffix}"

    def memories(self, user: str | None = None, *, history: bool = False) -> Any:
        """The user's memories (``history=True`` adds superseded ones)."""
        return self._request("get", self._user_path(user, "/memories" + ("?history=true" if history else "")))

    def add_memory(self, text: str, *, user: str | None = None, kind: str | None = None) -> Any:
        body = {"text": text, **({"kind": kind} if kind else {})}
        return self._request("post", self._user_path(user, "/memories"), body)

    def get_memory(self, memory_id: int, *, user: str | None = None) -> Any:
        return self._request("get", self._user_path(user, f"/memories/{int(memory_id)}"))

    def update_memory(
        self, memory_id: int, text: str | None = None, *, user: str | None = None, kind: str | None = None
    ) -> Any:
        body = {k: v for k, v in (("text", text), ("kind", kind)) if v is not None}
        return self._request("patch", self._user_path(user, f"/memories/{int(memory_id)}"), body)

    def delete_memory(self, memory_id: int, *, user: str | None = None) -> Any:
        return self._request("delete", self._user_path(user, f"/memories/{int(memory_id)}"))

    def export(self, user: str | None = None) -> Any:
        """Everything steer holds on the user, as JSON."""
        return self._request("get", self._user_path(user, "/export"))

    def forget(self, user: str | None = None) -> Any:
        """Delete everything steer holds on the user: memories (rows and vectors), request log, profiles,
        feedback, and what stages keep per user (the align cache)."""
        return self._request("delete", self._user_path(user))

    def feedback(
        self,
        completion_id: str,
        *,
        rating: float | None = None,
        choice: int | None = None,
        edit: str | None = None,
        index: int | None = None,
    ) -> Any:
        """Feedback on a reranked completion: a ``rating`` in -1..1, the ``choice`` of a returned
        choice, or an ``edit`` of the answer (``index``: which returned choice was rated or edited)."""
        body: dict[str, Any] = {"completion_id": completion_id}
        for key, value in (("rating", rating), ("choice", choice), ("edit", edit), ("index", index)):
            if value is not None:
                body[key] = value
        return self._request("post", "/feedback", body)

    def profile(self, user: str | None = None, *, scorer: str | None = None) -> Any:
        """The user's latent preference profile: weights, direction, mixture, pins, events."""
        return self._request("get", self._user_path(user, "/profile" + (f"?scorer={quote(scorer)}" if scorer else "")))

    def set_profile(
        self,
        user: str | None = None,
        *,
        weights: dict[str, float] | None = None,
        pinned: dict[str, float] | None = None,
        reset: bool = False,
        scorer: str | None = None,
    ) -> Any:
        """Set the user's own seeded ``weights`` and ``pinned`` weights; ``reset`` forgets what was learned."""
        body: dict[str, Any] = {"reset": reset}
        for key, value in (("weights", weights), ("pinned", pinned), ("scorer", scorer)):
            if value is not None:
                body[key] = value
        return self._request("put", self._user_path(user, "/profile"), body)

    def health(self) -> Any:
        """``GET /readyz``: readiness; with an admin key (or no keys configured) also policies and models."""
        return self._request("get", str(self.openai.base_url).rstrip("/").removesuffix("/v1") + "/readyz")


class Client(_Endpoints):
    """``openai.OpenAI`` pointed at steer, with steer's own endpoints."""

    _openai_class = "OpenAI"


class AsyncClient(_Endpoints):
    """``openai.AsyncOpenAI`` pointed at steer; steer's endpoints return awaitables."""

    _openai_class = "AsyncOpenAI"
