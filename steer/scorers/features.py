"""``features``: the offline default scorer, real signals computed on the CPU.

Attributes (higher = more of it; a user's weight may be negative):

    concise     1/(1 + words/100): short answers high
    structured  share of lines that are list items, headings or table rows
    code        share of characters in code
    simple      Flesch reading ease / 100
    formal      lexical formality (connectives, long words vs contractions, slang, "!")
    positive    lexicon sentiment, -1..1
    relevant    cosine between the request and the answer (sentence embeddings)
    adherent    best cosine between the answer and the user's recalled preferences (0 when none)

The embeddings come from the shared MiniLM embedder (``retrieval.embeddings``), loaded once, on
first use, in a worker thread. Only the first ``embed_words`` words of each answer are embedded:
the opening says what an answer is about, and the cost grows with the length (``steer bench
rerank`` times the scorer as the rerank stage runs it; the runs are in docs/benchmarks.md). The
recalled preferences are read from the system message the ``recall``
stage inserts (:func:`steer.fence.recalled_preferences`).

Options: ``embed_words`` (default 32; 0 = whole text), ``embeddings`` (default true; false
leaves ``relevant`` and ``adherent`` at 0 and needs no model), ``scale_words`` (default 100).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from retrieval.embeddings import usable_cores
from steer.fence import recalled_preferences
from steer.protocol import last_user_text
from steer.scorers import Conversation, scorers
from steer.scorers import text as tf

if TYPE_CHECKING:
    from retrieval.embeddings import Embedder
    from steer.pipeline.ports import Embedders, ScorerDeps

ATTRIBUTES = ("concise", "structured", "code", "simple", "formal", "positive", "relevant", "adherent")
RANGES: dict[str, tuple[float, float]] = {
    "concise": (0.0, 1.0),
    "structured": (0.0, 1.0),
    "code": (0.0, 1.0),
    "simple": (0.0, 1.0),
    "formal": (0.0, 1.0),
    "positive": (-1.0, 1.0),
    "relevant": (-1.0, 1.0),
    "adherent": (-1.0, 1.0),
}


DEFAULT_EMBED_WORDS = 32


def request_text(conversation: Conversation) -> str:
    """The last user turn: what the answers should be relevant to."""
    return last_user_text(list(conversation))


class FeatureScorer:
    attributes: tuple[str, ...] = ATTRIBUTES
    ranges: dict[str, tuple[float, float]] = RANGES
    default_weights: dict[str, float] = {"relevant": 1.0, "adherent": 1.0}

    def __init__(self, deps: Embedders | None, options: dict[str, Any], embedder: Embedder | None = None) -> None:
        unknown = set(options) - {"embed_words", "embeddings", "scale_words"}
        if unknown:
            raise ValueError(f"features scorer: unknown option(s) {', '.join(sorted(unknown))}")
        self.embed_words = int(options.get("embed_words", DEFAULT_EMBED_WORDS))
        self.use_embeddings = bool(options.get("embeddings", True))
        self.scale_words = float(options.get("scale_words", 100.0))
        self.deps = deps
        self._embedder = embedder

    async def embedder(self) -> Embedder:
        if self._embedder is None:
            if self.deps is None:
                raise RuntimeError("features scorer: no embedder and no ports to load one from")
            self._embedder = await self.deps.embedder()
        return self._embedder

    async def warmup(self) -> None:
        if self.use_embeddings:
            await self.embedder()

    def text_rows(self, candidates: Sequence[str]) -> list[list[float]]:
        """The six text signals of each candidate (no model)."""
        return [tf.signals(c, self.scale_words) for c in candidates]

    async def embedding_rows(self, conversation: Conversation, candidates: Sequence[str]) -> list[list[float]]:
        """(relevant, adherent) of each candidate, from one batched embedding call."""
        if not self.use_embeddings or not candidates:
            return [[0.0, 0.0] for _ in candidates]
        question = request_text(conversation)
        prefs = recalled_preferences(conversation)
        embedder = await self.embedder()
        texts = [question, *prefs, *(tf.head(c, self.embed_words) for c in candidates)]
        matrix = await asyncio.to_thread(embedder.encode, texts)
        q = matrix[0]
        p = matrix[1 : 1 + len(prefs)]
        c = matrix[1 + len(prefs) :]
        relevant = (c @ q).tolist() if question else [0.0] * len(candidates)
        adherent = (c @ p.T).max(axis=1).tolist() if prefs else [0.0] * len(candidates)
        return [[float(r), float(a)] for r, a in zip(relevant, adherent, strict=True)]

    async def score(self, conversation: Conversation, candidates: Sequence[str]) -> list[list[float]]:
        # The text signals are CPU work (long answers take milliseconds), done on a worker thread. Beside
        # the embedding only when a core is left over: the embedder's workers take one core each, and
        # more CPU-bound threads than cores run slower together than one part after the other.
        embedder = await self.embedder() if self.use_embeddings else None
        if embedder is not None and usable_cores() > getattr(embedder, "threads", 1):
            text, emb = await asyncio.gather(
                asyncio.to_thread(self.text_rows, candidates), self.embedding_rows(conversation, candidates)
            )
        else:
            text = await asyncio.to_thread(self.text_rows, candidates)
            emb = await self.embedding_rows(conversation, candidates)
        return [t + e for t, e in zip(text, emb, strict=True)]


@scorers.register("features")
def features(deps: ScorerDeps, options: dict[str, Any]) -> FeatureScorer:
    return FeatureScorer(deps, options)
