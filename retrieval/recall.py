"""Bringing back the memories that matter for a question.

Designs (compared by ``steer eval prefeval --designs``; figures in docs/evaluations.md):

- ``dense``: the question's vector against each memory's text vector (plain MiniLM).
- ``lexicon`` (default): each memory is expanded at write time into the situations it governs
  (``retrieval.lexicon``: a gluten intolerance governs restaurants, bakeries, Italian food...);
  each expansion gets its own vector pointing at the memory, and a memory scores its best vector.
  Enable it by giving the store ``expander=LexiconExpander()``; recall itself is one query
  embedding and one FAISS search.
- ``hybrid``: ``lexicon`` plus lexical evidence: Okapi BM25 (``retrieval.lexical``) over each memory's
  text and the situations its expansions name, max-normalised per question, added with a small weight
  (``LEXICAL_WEIGHT``) to the dense score of the dense candidates. The question's boilerplate
  ("recommend", "some", "me"...) is dropped, so only its content words count. The BM25 index is
  built per (tenant, user) from that user's memories and cached until the user's memories change.
- ``budget``: when all of a user's current memories fit ``budget_tokens``, include them all
  (ranked); otherwise the best-ranked ones until the budget is spent. Most users hold tens of
  preferences, which fit in well under 2k tokens, and then nothing that matters is missed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from retrieval.lexical import BM25, tokenize
from retrieval.lexicon import situations
from retrieval.store import Hit

if TYPE_CHECKING:
    from retrieval.sqlite_store import SqliteFaissStore
    from retrieval.store import Memory


def estimate_tokens(text: str) -> int:
    """A cheap token estimate (about four characters a token for English)."""
    return max(1, (len(text) + 3) // 4)


class LexiconExpander:
    """Write-time expansion from the situation lexicon: one extra text per triggered entry."""

    def __init__(self, limit: int = 6) -> None:
        self.limit = limit

    def expand(self, text: str) -> list[str]:
        return [f"{text}{EXPANSION_LEAD}{s}" for s in situations(text, self.limit)]


EXPANSION_LEAD = " This matters for: "
# weight of the max-normalised BM25 score added to the dense cosine (design ``hybrid``), chosen on the
# six development topics of PrefEval (0.02, 0.05, 0.1, 0.2 tried). Not confirmed on unseen data: the
# other six topics were read by its author, so they were no held-out check (docs/evaluations.md).
LEXICAL_WEIGHT = 0.05


def lexical_document(text: str, expansions: list[str]) -> list[str]:
    """The BM25 tokens of a memory: its text and the situations its expansions add (each once)."""
    added = [e[len(text) :] if e.startswith(text) else e for e in expansions]
    return tokenize(" ".join([text, *(a.removeprefix(EXPANSION_LEAD) for a in added)]))


@dataclass(frozen=True)
class Recalled:
    memories: list[Memory]
    scores: list[float]
    tokens: int
    complete: bool  # every current memory of the user is included


class Recaller:
    """Recall for one question: ``top(...)`` ranks, ``for_prompt(...)`` fills a token budget.

    ``lexical_weight`` > 0 turns on the ``hybrid`` design: the dense search's best ``candidates``
    memories are re-ranked by cosine + ``lexical_weight`` x normalised BM25 (a hit's ``score`` is that
    sum). With 0 (the default) the ranking is the store's dense search alone.
    """

    def __init__(
        self,
        store: SqliteFaissStore,
        *,
        budget_tokens: int = 1500,
        lexical_weight: float = 0.0,
        candidates: int = 100,
        cached_users: int = 1024,
    ) -> None:
        self.store = store
        self.budget_tokens = budget_tokens
        self.lexical_weight = lexical_weight
        self.candidates = candidates
        self.cached_users = cached_users
        self._lexical: OrderedDict[tuple[str, str], tuple[int, dict[int, int], BM25]] = OrderedDict()
        self._lock = threading.Lock()

    def top(self, tenant: str, user: str, question: str, k: int = 5) -> list[Hit]:
        if self.lexical_weight <= 0 or k <= 0:
            return self.store.search(tenant, user, question, k)
        pool = self.store.search(tenant, user, question, max(k, self.candidates))
        if not pool:
            return []
        bonus = self.lexical_scores(tenant, user, question)
        fused = [Hit(h.memory, h.score + self.lexical_weight * bonus.get(h.memory.id, 0.0)) for h in pool]
        fused.sort(key=lambda h: -h.score)  # stable: ties keep the dense order
        return fused[:k]

    def forget(self, tenant: str, user: str) -> None:
        """Drop what this recaller holds of one user (their lexical index), as the user is forgotten."""
        with self._lock:
            self._lexical.pop((tenant, user), None)

    def lexical_scores(self, tenant: str, user: str, question: str) -> dict[int, float]:
        """Memory id -> BM25 score of ``question`` against the user's memories, max-normalised (the
        memories sharing no content word with it are absent)."""
        ids, index = self._lexical_index(tenant, user)
        by_doc = index.normalised(tokenize(question))
        return {ids[d]: s for d, s in by_doc.items()}

    def _lexical_index(self, tenant: str, user: str) -> tuple[dict[int, int], BM25]:
        owner = (tenant, user)
        version = self.store.version(tenant, user)
        with self._lock:
            cached = self._lexical.get(owner)
            if cached is not None and cached[0] == version:
                self._lexical.move_to_end(owner)
                return cached[1], cached[2]
        memories = self.store.list(tenant, user)
        expander = self.store.expander
        docs = [lexical_document(m.text, expander.expand(m.text) if expander else []) for m in memories]
        ids = {d: m.id for d, m in enumerate(memories)}
        index = BM25(docs)
        with self._lock:
            # kept only while still current: a user forgotten (or written) while this was built must not
            # have it cached again (``forget`` pops under this lock after the store deleted the user)
            if self.store.version(tenant, user) != version:
                return ids, index
            self._lexical[owner] = (version, ids, index)
            self._lexical.move_to_end(owner)
            while len(self._lexical) > self.cached_users:
                self._lexical.popitem(last=False)
        return ids, index

    def for_prompt(
        self, tenant: str, user: str, question: str, *, budget_tokens: int | None = None
    ) -> Recalled:
        budget = self.budget_tokens if budget_tokens is None else budget_tokens
        current = self.store.count(tenant, user)
        hits = self.top(tenant, user, question, k=current) if current else []
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
