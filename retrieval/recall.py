"""Bringing back the memories that matter for a question, packed for a token budget.

Designs (compared by ``steer eval prefeval --designs``; figures in docs/evaluations.md):

- ``dense``: plain MiniLM. The question's vector against each memory's vector; memories injected in
  that order, full text, until the budget is spent (one that does not fit is skipped).
- ``packed`` (default): three changes to the same search, each a general retrieval technique:

  1. pseudo-relevance feedback (Rocchio, 1971): the question's vector moves towards the mean of the
     vectors of its ``FEEDBACK_K`` best memories (weight ``FEEDBACK_WEIGHT``) and the candidates are
     scored again against it, which favours memories of the question's domain over a stray match;
  2. each memory rendered compactly (:func:`retrieval.packing.compact`: polarity and object kept),
     and restatements of a line already chosen folded into it instead of spending tokens
     (:func:`retrieval.packing.pack`), so the block covers more of the user's distinct preferences;
  3. a length-aware fill: a line's value is its score less ``LENGTH_COST`` x ln(its tokens), so of
     two nearly equal memories the shorter goes first (the greedy rule for a knapsack, by value per
     cost, softened) and the budget carries more of them.

  Maximal marginal relevance (``diversity`` > 0) is available; it is off by default, as it pushes
  out related but distinct preferences (docs/evaluations.md).

Token counts are real tokens (:mod:`retrieval.tokens`). No design uses a lexicon or a word list
written for any benchmark. The constants below were set on PrefEval's development topics (the
split in ``shared/``), once, at round values; figures on topics never read are measured at review.
The ranking can be refined by the configured chat model when one is available (the recall stage's
``assist`` option, in steer): a ranking given by the caller is kept as given.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from retrieval.packing import Candidate, Line, compact, pack
from retrieval.reconcile import restates
from retrieval.tokens import count_tokens

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from retrieval.sqlite_store import SqliteFaissStore
    from retrieval.store import Hit, Memory

Design = Literal["dense", "packed"]
DESIGNS: tuple[Design, ...] = ("dense", "packed")
DEFAULT_DESIGN: Design = "packed"
# MMR's weight of redundancy against relevance (``packed``); 0 = off (see the module docstring)
DIVERSITY = 0.0
# pseudo-relevance feedback: how many of the best memories, and their mean's weight against the question
FEEDBACK_K = 10
FEEDBACK_WEIGHT = 0.3
# a line's value: score - LENGTH_COST * ln(tokens)
LENGTH_COST = 0.05
# memory lines (rendering, tokens, vector) kept per process, of the users recalled most recently
_LINES_KEPT = 32_768

__all__ = ["DEFAULT_DESIGN", "DESIGNS", "DIVERSITY", "Design", "Recalled", "Recaller"]


@dataclass(frozen=True, slots=True)
class _Line:
    """A memory as the block carries it: its compact rendering, the rendering's tokens, its text's vector."""

    text: str
    tokens: int
    vector: npt.NDArray[np.float32] | None


@dataclass(frozen=True)
class Recalled:
    memories: list[Memory]
    scores: list[float]  # each memory's cosine with the question
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
        # per user: (memory id, text, subject) -> its line; keyed by the text, so an edit is rendered again,
        # and per user, so no user's timing depends on another's memories; least recently used users go first
        self._lines_of: OrderedDict[tuple[str, str], dict[tuple[int, str, str], _Line]] = OrderedDict()
        self._kept = 0
        self._lock = threading.Lock()

    def vector(self, question: str | npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The question's vector (embedded once per question, then passed to ``top`` and ``rank``)."""
        if isinstance(question, str):
            vector: npt.NDArray[np.float32] = self.store.embedder.encode([question])[0]
            return vector
        return question

    def top(self, tenant: str, user: str, question: str | npt.NDArray[np.float32], k: int = 5) -> list[Hit]:
        """The ``k`` memories most similar to ``question`` (text or vector), best first (the search)."""
        return self.store.search(tenant, user, question, k) if k > 0 else []

    def forget(self, tenant: str | None = None, user: str | None = None) -> None:
        """Drop what this recaller holds of one user (None: of everyone): the renderings of their memories."""
        with self._lock:
            if tenant is None or user is None:
                self._lines_of.clear()
                self._kept = 0
            else:
                self._kept -= len(self._lines_of.pop((tenant, user), {}))

    def rank(
        self,
        tenant: str,
        user: str,
        question: str | npt.NDArray[np.float32],
        hits: Sequence[Hit] | None = None,
        *,
        ordered: bool = False,
    ) -> list[Candidate]:
        """The candidates for packing: each memory's rendering, value and vector. ``hits``: the search's
        result when the caller has it; ``ordered``: they come in an order made elsewhere (e.g. by a model),
        kept as given."""
        import numpy as np

        if hits is None:
            question = self.vector(question)  # embedded once: the feedback below reuses it
            hits = self.top(tenant, user, question, self.candidates)
        if not hits:
            return []
        kept = [-float(n) for n in range(len(hits))] if ordered else None  # a given order, as values
        if self.design != "packed":
            values = kept or [h.score for h in hits]
            return [Candidate(n, h.memory.text, v) for n, (h, v) in enumerate(zip(hits, values, strict=True))]
        lines = self._lines(tenant, user, hits)
        vectors = [line.vector for line in lines]
        if kept is not None:
            values = kept
        else:
            scores = np.array([h.score for h in hits], dtype=np.float32)
            if all(v is not None for v in vectors):
                matrix = np.stack(vectors).astype(np.float32)  # type: ignore[arg-type]
                query = self.vector(question) + FEEDBACK_WEIGHT * matrix[:FEEDBACK_K].mean(axis=0)
                scores = matrix @ (query / max(float(np.linalg.norm(query)), 1e-9))
            values = [float(sc) - LENGTH_COST * math.log(line.tokens) for sc, line in zip(scores, lines, strict=True)]
        return [
            Candidate(n, line.text, value, line.vector, str(h.memory.meta.get("subject") or h.memory.text), line.tokens)
            for n, (h, line, value) in enumerate(zip(hits, lines, values, strict=True))
        ]

    def _lines(self, tenant: str, user: str, hits: Sequence[Hit]) -> list[_Line]:
        """Each hit's compact rendering, its tokens and its text's vector: made once per memory text and
        kept for the user (the vectors of new ones read from the store in one query)."""
        owner = (tenant, user)
        with self._lock:
            known = self._lines_of.get(owner, {})  # read by key only, so no copy is needed
            if known:
                self._lines_of.move_to_end(owner)
        keys = [(h.memory.id, h.memory.text, str(h.memory.meta.get("subject") or "")) for h in hits]
        missing = [k for k in keys if k not in known]
        made: dict[tuple[int, str, str], _Line] = {}
        if missing:
            vectors = self.store.text_vectors(tenant, user, [k[0] for k in missing])
            for key in missing:
                text = compact(key[1], key[2])
                made[key] = _Line(text, count_tokens(text), vectors.get(key[0]))
            whole = {k: line for k, line in made.items() if line.vector is not None}  # kept only when whole
            with self._lock:
                mine = self._lines_of.pop(owner, {})
                self._kept += len(whole.keys() - mine.keys())
                mine.update(whole)
                self._lines_of[owner] = mine  # the most recently used, last
                while self._kept > _LINES_KEPT and len(self._lines_of) > 1:
                    self._kept -= len(self._lines_of.popitem(last=False)[1])
        return [made[k] if k in made else known[k] for k in keys]

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
        question: str | npt.NDArray[np.float32],
        *,
        budget_tokens: int | None = None,
        hits: Sequence[Hit] | None = None,
    ) -> Recalled:
        """The block for one question. ``hits``: a ranking made elsewhere (e.g. by a model), kept as given."""
        budget = self.budget_tokens if budget_tokens is None else budget_tokens
        ordered = hits is not None  # a given order needs no query vector: the question is not embedded
        if hits is None:
            question = self.vector(question)
            hits = self.top(tenant, user, question, self.candidates)
        ranked = self.rank(tenant, user, question, hits, ordered=ordered)
        chosen = self.fill(ranked, budget)
        # a search asked for more than the user holds returns every current memory: no need to count them
        current = len(hits) if not ordered and len(hits) < self.candidates else self.store.count(tenant, user)
        return Recalled(
            [hits[ln.candidate.key].memory for ln in chosen],
            [hits[ln.candidate.key].score for ln in chosen],
            sum(ln.candidate.tokens for ln in chosen),
            complete=sum(len(ln.keys) for ln in chosen) == current,
            texts=[ln.candidate.text for ln in chosen],
            folded=[[hits[c.key].memory for c in ln.folded] for ln in chosen],
        )
