"""Bringing back the memories that matter for a question.

Designs (measured by ``retrieval.prefeval``):

- ``dense``: the question's vector against each memory's text vector (plain MiniLM).
- ``lexicon`` (default): each memory is expanded at write time into the situations it governs
  (``retrieval.lexicon``: a gluten intolerance governs restaurants, bakeries, Italian food...);
  each expansion gets its own vector pointing at the memory, and a memory scores its best vector.
  Enable it by giving the store ``expander=LexiconExpander()``; recall itself is one query
  embedding and one FAISS search (a few ms).
- ``budget``: when all of a user's current memories fit ``budget_tokens``, include them all
  (ranked); otherwise the best-ranked ones until the budget is spent. Most users hold tens of
  preferences, which fit in well under 2k tokens, and then nothing that matters is missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from retrieval.lexicon import situations

if TYPE_CHECKING:
    from retrieval.sqlite_store import SqliteFaissStore
    from retrieval.store import Hit, Memory


def estimate_tokens(text: str) -> int:
    """A cheap token estimate (about four characters a token for English)."""
    return max(1, (len(text) + 3) // 4)


class LexiconExpander:
    """Write-time expansion from the situation lexicon: one extra text per triggered entry."""

    def __init__(self, limit: int = 6) -> None:
        self.limit = limit

    def expand(self, text: str) -> list[str]:
        return [f"{text} This matters for: {s}" for s in situations(text, self.limit)]


@dataclass(frozen=True)
class Recalled:
    memories: list[Memory]
    scores: list[float]
    tokens: int
    complete: bool  # every current memory of the user is included


class Recaller:
    """Recall for one question: ``top(...)`` ranks, ``for_prompt(...)`` fills a token budget."""

    def __init__(self, store: SqliteFaissStore, *, budget_tokens: int = 1500) -> None:
        self.store = store
        self.budget_tokens = budget_tokens

    def top(self, tenant: str, user: str, question: str, k: int = 5) -> list[Hit]:
        return self.store.search(tenant, user, question, k)

    def for_prompt(
        self, tenant: str, user: str, question: str, *, budget_tokens: int | None = None
    ) -> Recalled:
        budget = self.budget_tokens if budget_tokens is None else budget_tokens
        current = self.store.count(tenant, user)
        hits = self.store.search(tenant, user, question, k=current) if current else []
        chosen: list[Memory] = []
        scores: list[float] = []
        used = 0
        for hit in hits:
            cost = estimate_tokens(hit.memory.text)
            if used + cost > budget:
                break
            chosen.append(hit.memory)
            scores.append(hit.score)
            used += cost
        return Recalled(chosen, scores, used, complete=len(chosen) == current)
