"""Lexical evidence for recall: Okapi BM25 over one user's memories (text plus write-time expansions).

Used by :class:`retrieval.recall.Recaller` as a small additive bonus on the dense score (design
``hybrid``): a question that names a word a memory (or the situations it governs) also names gets
that memory lifted among the dense candidates. Pure Python, no new dependency; an index is built
per (tenant, user) from that user's memories only and scored through postings (a question touches
only the memories sharing one of its words), well under a millisecond for hundreds of memories.

BM25 (Robertson and Zaragoza, 2009) with the non-negative idf of Lucene:
``idf(w) = ln(1 + (N - df + 0.5) / (df + 0.5))`` and
``score(d, q) = sum_w idf(w) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * |d| / avgdl))``.
Tokens are lower-cased words with a light plural stemmer; function words and request boilerplate
("recommend", "suggest", "some", "me"...) are dropped so that only a question's content words count.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_STOPWORDS_TEXT = """a an the and or but if of to in on at for from by with about as into over after before than then so
i i'm im me my mine myself we our us you your yours it its this that these those there here is are was were
be been being am do does did doing have has had having will would shall should can could may might must not
no nor what which who whom whose when where why how any some all each every more most other such only own
same very just also too really quite please thanks thank hi hello up down out off again further once
recommend recommendations recommendation suggest suggestions suggestion ideas idea tips advice options
option help find looking look want wanting need needs like love good great best nice new next soon get
getting know tell give share make trying try planning plan plans thinking think going go let something
things thing anything someone one ones way ways kind kinds sort type types them they their he she his her
him"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def stem(word: str) -> str:
    """A light plural stemmer: ``restaurants`` -> ``restaurant``, ``stories`` -> ``story``, ``boxes`` -> ``box``."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """Content-word tokens of ``text``: lower-cased, stemmed, stopwords and one-letter words dropped."""
    return [stem(w) for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOPWORDS]


class BM25:
    """An Okapi BM25 index over a fixed list of documents (each a list of tokens)."""

    def __init__(self, docs: Sequence[Sequence[str]], *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self.size = len(docs)
        lengths = [len(d) for d in docs]
        avgdl = sum(lengths) / len(docs) if docs else 0.0
        self._postings: dict[str, list[tuple[int, float]]] = {}
        for i, doc in enumerate(docs):
            norm = k1 * (1 - b + b * lengths[i] / avgdl) if avgdl else k1
            for word, tf in Counter(doc).items():
                self._postings.setdefault(word, []).append((i, tf * (k1 + 1) / (tf + norm)))
        n = len(docs)
        self._idf = {w: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for w, p in self._postings.items()}

    def scores(self, query: Sequence[str]) -> dict[int, float]:
        """BM25 score of each document sharing a word with ``query`` (the others score 0)."""
        out: dict[int, float] = {}
        for word in set(query):
            postings = self._postings.get(word)
            if postings is None:
                continue
            idf = self._idf[word]
            for doc, weight in postings:
                out[doc] = out.get(doc, 0.0) + idf * weight
        return out

    def normalised(self, query: Sequence[str]) -> dict[int, float]:
        """``scores`` divided by the best one: in [0, 1], the best-matching document at 1."""
        raw = self.scores(query)
        top = max(raw.values(), default=0.0)
        return {d: s / top for d, s in raw.items()} if top > 0 else {}
