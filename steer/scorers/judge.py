"""``judge``: any chat model, through steer's router, rates each candidate 0-100 per attribute.

One request per candidate, all at once; the model is asked for a JSON object with one integer
per attribute (``response_format: json_object``, temperature 0). A missing or unparsable rating
is an error (the rerank stage then serves the first candidate and says why).

Options: ``model`` (a model name from the config; default: the default model), ``attributes``
(a mapping name -> what it means; default below), ``max_chars`` (candidate text shown, default
6000), ``extra_body`` (sent with each request, e.g. a vLLM ``top_k``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from steer.protocol import message_text
from steer.scorers import Conversation, scorers

if TYPE_CHECKING:
    from steer.pipeline.ports import ScorerDeps

DEFAULT_ATTRIBUTES = {
    "helpful": "how well the answer serves the user's request",
    "concise": "how short and to the point it is (100: no word wasted)",
    "thorough": "how complete and detailed it is",
    "formal": "how formal its register is",
    "structured": "how much it uses lists, headings or steps",
    "adherent": "how well it follows the preferences the user stated earlier, if any",
}
JSON_OBJECT = re.compile(r"\{.*\}", re.S)


def _transcript(conversation: Conversation, limit: int = 4000) -> str:
    lines = []
    for m in conversation:
        content = message_text(m.get("content"))
        if content:
            lines.append(f"{m.get('role', 'user').upper()}: {content}")
    text = "\n".join(lines)
    return text[-limit:]


def parse_ratings(content: str, attributes: Sequence[str]) -> list[float]:
    """The 0-100 ratings of ``attributes`` in a model's reply (a JSON object, maybe in prose)."""
    match = JSON_OBJECT.search(content or "")
    if match is None:
        raise ValueError(f"judge reply holds no JSON object: {content[:120]!r}")
    data = orjson.loads(match.group(0))
    if not isinstance(data, dict):
        raise ValueError("judge reply is not a JSON object")
    if isinstance(data.get("ratings"), dict):
        data = data["ratings"]
    out = []
    for name in attributes:
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"judge reply has no numeric rating for {name!r}")
        out.append(min(100.0, max(0.0, float(value))))
    return out


class JudgeScorer:
    def __init__(self, deps: ScorerDeps, options: dict[str, Any]) -> None:
        unknown = set(options) - {"model", "attributes", "max_chars", "extra_body"}
        if unknown:
            raise ValueError(f"judge scorer: unknown option(s) {', '.join(sorted(unknown))}")
        described = options.get("attributes") or DEFAULT_ATTRIBUTES
        if isinstance(described, list):
            described = {name: name for name in described}
        self.descriptions: dict[str, str] = {str(k): str(v) for k, v in described.items()}
        self.attributes: tuple[str, ...] = tuple(self.descriptions)
        self.ranges: dict[str, tuple[float, float]] = {a: (0.0, 100.0) for a in self.attributes}
        self.default_weights = {"helpful": 1.0, "adherent": 1.0}
        self.model: str | None = options.get("model")
        self.max_chars = int(options.get("max_chars", 6000))
        self.extra_body: dict[str, Any] = dict(options.get("extra_body") or {})
        self.router = deps.router

    def prompt(self, conversation: Conversation, candidate: str) -> list[dict[str, Any]]:
        rubric = "\n".join(f"- {name}: {text}" for name, text in self.descriptions.items())
        keys = ", ".join(f'"{a}": <0-100>' for a in self.attributes)
        return [
            {
                "role": "system",
                "content": "You rate an assistant's answer to a conversation. Reply with one JSON object "
                f"and nothing else: {{{keys}}}.\nAttributes:\n{rubric}",
            },
            {
                "role": "user",
                "content": f"Conversation:\n{_transcript(conversation)}\n\nAnswer to rate:\n"
                f"{candidate[: self.max_chars]}",
            },
        ]

    async def _rate(self, conversation: Conversation, candidate: str) -> list[float]:
        body = {
            "messages": self.prompt(conversation, candidate),
            "temperature": 0,
            "response_format": {"type": "json_object"},
            **self.extra_body,
        }
        cfg = self.router.config(self.model)
        reply = await self.router.complete(cfg.name, {**body, "model": cfg.name})
        content = ((reply.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        return parse_ratings(str(content), self.attributes)

    async def score(self, conversation: Conversation, candidates: Sequence[str]) -> list[list[float]]:
        return list(await asyncio.gather(*(self._rate(conversation, c) for c in candidates)))


@scorers.register("judge")
def judge(deps: ScorerDeps, options: dict[str, Any]) -> JudgeScorer:
    return JudgeScorer(deps, options)
