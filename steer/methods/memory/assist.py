"""Model-assisted recall: the configured chat model expands the query or reranks the best memories.

Offline recall ranks memories by MiniLM similarity to the question, which misses what needs world
knowledge (a trip to a city and a food allergy share no words). When a policy names a model for
it (the recall stage's ``assist``), that model is asked once per turn, bounded by
``assist_timeout_s``:

- ``expand``: which of the user's preferences, constraints or dislikes could bear on the request;
  its answer (one line, at most ``EXPAND_CHARS`` characters) is appended to the question before the
  embedding search.
- ``rerank``: the ``assist_candidates`` best memories, numbered, and which of them bear on the
  request, most relevant first; those go first, the others keep their offline order after them.

Any failure (timeout, upstream error, an answer naming no memory) falls back to the offline
ranking, and the trace says why. The memories are sent to the model the policy names, the same
upstream the conversation goes to when no other model is named: no user data goes anywhere else.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any, Literal, Protocol

Assist = Literal["off", "expand", "rerank"]
EXPAND_CHARS = 300

EXPAND_PROMPT = (
    "A user asks an assistant the request below. List, in one short line, the kinds of personal "
    "preferences, constraints or dislikes of this user that could change the best answer (for example "
    "diet, health, budget, accessibility, values, tastes). Answer with the list only.\n\nRequest: {question}"
)
RERANK_PROMPT = (
    "A user asks an assistant the request below. Here are numbered statements the user made earlier "
    "about themself. Which of them should the assistant take into account to answer this request well? "
    "Answer with their numbers only, most relevant first, separated by commas, or 'none'.\n\n"
    "Request: {question}\n\nStatements:\n{listed}"
)


class Completer(Protocol):
    async def complete(self, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


def answer_text(answer: dict[str, Any]) -> str:
    """The text of a chat completion's first choice ('' when there is none)."""
    choices = answer.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    message = choices[0].get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def parse_numbers(text: str, count: int) -> list[int]:
    """The 1-based numbers in ``text`` that name one of ``count`` items, as 0-based indexes, each once, in
    order of appearance."""
    out: list[int] = []
    for token in re.findall(r"\d+", text):
        i = int(token) - 1
        if 0 <= i < count and i not in out:
            out.append(i)
    return out


async def _ask(router: Completer, model: str, prompt: str, max_tokens: int, timeout_s: float) -> str:
    body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": max_tokens}
    answer = await asyncio.wait_for(router.complete(model, body), timeout_s)
    return answer_text(answer)


async def expand(router: Completer, model: str, question: str, timeout_s: float) -> tuple[str, str]:
    """The query to search with and the outcome (``used`` or why the question alone is used)."""
    try:
        text = await _ask(router, model, EXPAND_PROMPT.format(question=question), 96, timeout_s)
    except TimeoutError:
        return question, "timeout"
    except Exception as exc:  # any upstream failure: the offline query
        return question, f"error: {type(exc).__name__}"
    line = " ".join(text.split())[:EXPAND_CHARS]
    if not line:
        return question, "empty answer"
    return f"{question}\n{line}", "used"


async def rerank(
    router: Completer, model: str, question: str, texts: Sequence[str], timeout_s: float
) -> tuple[list[int], str]:
    """The order of ``texts`` to use (indexes) and the outcome (``used``, or why the offline order is kept)."""
    offline = list(range(len(texts)))
    if not texts:
        return offline, "nothing to rerank"
    listed = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))
    try:
        text = await _ask(router, model, RERANK_PROMPT.format(question=question, listed=listed), 64, timeout_s)
    except TimeoutError:
        return offline, "timeout"
    except Exception as exc:
        return offline, f"error: {type(exc).__name__}"
    picked = parse_numbers(text, len(texts))
    if not picked:
        return offline, "none" if "none" in text.lower() else "unparsed answer"
    return picked + [i for i in offline if i not in picked], "used"
