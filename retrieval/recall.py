"""Bringing back the memories that matter for a question, packed for a token budget.

Designs (compared by ``steer eval prefeval --designs``; figures in docs/evaluations.md):

- ``dense``: plain MiniLM. The question's vector against each memory's vector; memories injected in
  that order, full text, until the budget is spent (one that does not fit is skipped).
- ``packed`` (default): the same ranking, each memory rendered compactly
  (:func:`retrieval.packing.compact`: polarity and object kept), and restatements of a line already
  chosen folded into it instead of spending tokens (:func:`retrieval.packing.pack`), so the block
  covers more of the user's distinct preferences rather than near-duplicates of one. Maximal
  marginal relevance (``diversity`` > 0) is available; it is off by default, as it pushes out
  related but distinct preferences (docs/evaluations.md).

No design uses a lexicon or a word list written for any benchmark. The ranking can be refined by
the configured chat model when one is available (the recall stage's ``assist`` option, in steer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from retrieval.packing import Candidate, Line, compact, estimate_tokens, pack
from retrieval.reconcile import restates

if TYPE_CHECKING:
    from retrieval.sqlite_store import SqliteFaissStore
    from retrieval.store import Hit, Memory

Design = Literal["dense", "packed"]
DESIGNS: tuple[Design, ...] = ("dense", "packed")
DEFAULT_DESIGN: Design = "packed"
# MMR's weight of redundancy against relevance (``packed``); 0 = off (see the module docstring)
DIVERSITY = 0.0

__all__ = ["DEFAULT_DESIGN", "DESIGNS", "DIVERSITY", "Design", "Recalled", "Recaller", "estimate_tokens"]


@dataclass(frozen=True)
class Recalled:
    memories: list[Memory]
    scores: list[float]
    tokens: int
    complete: bool  # every current memory of the user is included
    texts: list[str] = field(default_factory=list)  # what is injected for each memory (its rendering)
    folded: list[list[Memory]] = field(default_factory=list)  # per memory: its restatements, not injected

    @property
    def covered(self) -> list[Memory]:
        """Every memory the block carries: the injected ones and the restatements folded into them."""
        return [*self.memories, *(m for group in self.folded for m in group)]


class Recaller:
    """Recall for one question: ``top(...)`` ranks, ``for_prompt(...)`` fills a token budget.

    ``candidates`` bounds how many of the best-ranked memories the packer considers (all of them when
    the user holds fewer)."""

    def __init__(
        self,
        store: SqliteFaissStore,
        *,
        budget_tokens: int = 600,
        design: Design = DEFAULT_DESIGN,
        candidates: int = 200,
        diversity: float = DIVERSITY,
    ) -> None:
        if design not in DESIGNS:
            raise ValueError(f"unknown recall design {design!r} (known: {', '.join(DESIGNS)})")
        self.store = store
        self.budget_tokens = budget_tokens
        self.design = design
        self.candidates = candidates
        self.diversity = diversity

    def top(self, tenant: str, user: str, question: str, k: int = 5) -> list[Hit]:
        """The ``k`` memories most similar to ``question``, best first (the ranking)."""
        return self.store.search(tenant, user, question, k) if k > 0 else []

    def forget(self, tenant: str, user: str) -> None:
        """Drop what this recaller holds of one user (it caches nothing per user)."""

    def rank(self, tenant: str, user: str, question: str, hits: Sequence[Hit] | None = None) -> list[Candidate]:
        """The candidates for packing, best first: each memory's rendering, score and vector.
        ``hits``: a ranking made elsewhere (e.g. reordered by a model) instead of the store's."""
        if hits is None:
            hits = self.top(tenant, user, question, self.candidates)
        if not hits:
            return []
        packed = self.design == "packed"
        vectors = self.store.text_vectors(tenant, user, [h.memory.id for h in hits]) if packed else {}
        return [
            Candidate(
                n,
                compact(h.memory.text, str(h.memory.meta.get("subject") or "")) if packed else h.memory.text,
                h.score,
                vectors.get(h.memory.id),
                str(h.memory.meta.get("subject") or h.memory.text),
            )
            for n, h in enumerate(hits)
        ]

    def fill(self, ranked: Sequence[Candidate], budget_tokens: int) -> list[Line]:
        """The lines injected within ``budget_tokens``, in the order chosen (``dense``: no folding)."""
        if self.design == "packed":
            embedder = self.store.embedder
            return pack(
                ranked,
                budget_tokens,
                diversity=self.diversity,
                restates=lambda a, b: restates(embedder, a.subject, b.subject),
            )
        return pack(ranked, budget_tokens, fold_at=None)

    def for_prompt(
        self,
        tenant: str,
        user: str,
        question: str,
        *,
        budget_tokens: int | None = None,
        hits: Sequence[Hit] | None = None,
    ) -> Recalled:
        budget = self.budget_tokens if budget_tokens is None else budget_tokens
        if hits is None:
            hits = self.top(tenant, user, question, self.candidates)
        ranked = self.rank(tenant, user, question, hits)
        chosen = self.fill(ranked, budget)
        current = self.store.count(tenant, user)
        return Recalled(
            [hits[ln.candidate.key].memory for ln in chosen],
            [ln.candidate.score for ln in chosen],
            sum(ln.candidate.tokens for ln in chosen),
            complete=sum(len(ln.keys) for ln in chosen) == current,
            texts=[ln.candidate.text for ln in chosen],
            folded=[[hits[c.key].memory for c in ln.folded] for ln in chosen],
        )
