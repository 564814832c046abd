"""Upstream backends: where completions come from.

Every backend speaks the OpenAI chat-completions wire format in both directions: ``complete``
takes a request body and returns a ``chat.completion`` dict; ``stream`` yields the SSE events of
a streamed answer, already framed as ``b"data: {...}\\n\\n"``, one or more complete events per
item (a backend may batch the events of one network read). A backend may end its last item with
``data: [DONE]\n\n`` (the ``openai`` one forwards its upstream's, so that the end goes out in the same
write as the last deltas); steer sends it after the last item of a backend that does not. Errors are
raised as :mod:`steer.errors` types.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from steer.registry import Registry
from steer.settings import ModelConfig, Settings


class Upstream(Protocol):
    config: ModelConfig

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, body: dict[str, Any]) -> AsyncGenerator[bytes, None]: ...

    async def aclose(self) -> None: ...


class Forwarder(Protocol):
    """An upstream that also takes other OpenAI endpoints' bodies as they are (``/embeddings``,
    ``/completions``, ``/responses``): ``post`` returns the JSON answer, ``post_stream`` the event stream's
    bytes as they come (``data: [DONE]`` included when the upstream sends it). A backend without these
    methods (``local``) serves chat completions only; ``supports(path)`` says which paths it takes."""

    def supports(self, path: str) -> bool: ...

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...

    def post_stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[bytes, None]: ...


class UpstreamFactory(Protocol):
    def __call__(self, config: ModelConfig, settings: Settings) -> Upstream: ...


backends: Registry[UpstreamFactory] = Registry(
    "upstream backend",
    [
        "steer.upstreams.openai_compat",
        "steer.upstreams.litellm",
        "steer.upstreams.local",
        "steer.testing.fake",  # deterministic in-process answers, for tests
    ],
)
