"""Packing recalled memories into a token budget: a compact rendering of each, diversity across them.

Recall injects memories by tokens, not by count, so what a block carries per token is what a user
gets. Two rules, both written from general English and general retrieval practice, neither from any
evaluation set:

- :func:`compact` renders a memory shorter without changing what it says: intensity adverbs
  between "I" and the verb go ("really", "strongly", "absolutely": intensifiers and emphasisers in
  the grammarians' sense, which grade a stance but change neither its direction nor its object;
  hedges such as "usually" or "mostly" stay, they change what is claimed), "I would prefer"
  becomes "I prefer", "I do not" becomes "I don't", a stance put as a noun becomes its verb ("I
  have a strong aversion to X" -> "I dislike X", "I'm not a fan of X" -> "I dislike X":
  nominalisation undone, the grading adjectives before the noun going as the adverbs do; "I have a
  preference for X" reads as neutral to :func:`~retrieval.extract.polarity`, so its rewrite to "I
  prefer X" is kept only where the sentence's polarity comes out the same), "any form/kind/type/sort
  of X" becomes "X", and a trailing reason clause ("because ...",
  "since ...", "due to ...", ", as ...", ", so ...") goes when what remains still names the
  memory's object. A rendering is kept only when its polarity (:func:`retrieval.extract.polarity`)
  equals the original's and every content word of the memory's subject survives; otherwise the
  original text is used. Frequency and restriction adverbs ("always", "never", "only",
  "exclusively", "no longer") are meaning, never dropped. A choice among offered options
  (:func:`retrieval.extract.choice_text`, stored with every option whole) is rendered by
  :func:`compact_choice`: the chosen option whole, the ones turned down by their number.
- :func:`pack` fills a budget by maximal marginal relevance (Carbonell and Goldstein, 1998): each
  next memory maximises ``score - diversity * max cosine to the memories already chosen``, so a
  block covers several facets of the question rather than one facet restated; a memory that does
  not fit the tokens left is skipped (smaller ones after it may still fit), never truncated.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from retrieval.extract import polarity, read_choice
from retrieval.tokens import count_tokens

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


# intensifiers, emphasisers and downtoners (grading words: general English grammar, not a data set)
_GRADING = (
    "really|strongly|strictly|absolutely|totally|truly|definitely|personally|actually|simply|deeply|"
    "very\\s+much|quite|particularly|especially|genuinely|certainly|honestly|firmly|adamantly|"
    "completely|entirely|fully|much"
)
# graded only where they grade the speaker's stance: between "I" (or its auxiliary) and the verb
_GRADING_RE = re.compile(
    rf"(\bI(?:'m|\s+am|\s+would|\s+do|\s+don't|\s+do\s+not|\s+have|\s+will)?\s+)(?:(?:{_GRADING})\s+)+",
    re.IGNORECASE,
)
# the same grading words as adjectives, before a stance noun ("a strong aversion", "a deep dislike")
_GRADING_ADJ = (
    r"(?:(?:strong|deep|deep-seated|severe|intense|extreme|great|huge|big|real|profound|serious|natural|"
    r"absolute|total|complete|genuine|definite|distinct|clear|marked|particular|personal|firm|keen|"
    r"lifelong|long-standing|longstanding)\s+)*"
)
# "any form of X" says "X" (a quantifier over kinds adds no condition)
_KIND_OF = re.compile(r"\b(?:any|all)\s+(?:forms?|kinds?|types?|sorts?)\s+of\s+", re.IGNORECASE)
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bI\s+would\s+(prefer|like|love|enjoy)\b", re.IGNORECASE), r"I \1"),
    (re.compile(r"\bI\s+do\s+not\b", re.IGNORECASE), "I don't"),
    (re.compile(r"\bI\s+am\b"), "I'm"),
    (re.compile(r"\bI\s+have\s+(?=been\b)"), "I've "),
    (re.compile(r"\bcannot\b", re.IGNORECASE), "can't"),
    (re.compile(r"\bwhenever\s+possible\b|\bif\s+possible\b|\bat\s+all\s+costs\b", re.IGNORECASE), ""),
    # quantifiers that add no condition ("I avoid any foods with X" says "I avoid foods with X"); time and
    # degree phrases ("any day", "all week", "any more") are not quantifiers over the object
    (
        re.compile(
            r"(?<!\bat\s)\b(?:any|all)\s+(?=[a-z])(?!of\b|the\b|kinds?\b|types?\b|forms?\b|"
            r"(?:day|night|week|year|time|moment|more|longer|way|case|rate|cost)s?\b)",
            re.IGNORECASE,
        ),
        "",
    ),
    # a stance put as a noun, said with its verb (the grading adjectives before the noun go, as adverbs do)
    (
        re.compile(
            rf"\bI\s+(?:have|feel)\s+an?\s+{_GRADING_ADJ}(?:aversion|dislike|distaste|antipathy|disdain)\s+"
            r"(?:to|for|of|towards?)\b",
            re.IGNORECASE,
        ),
        "I dislike",
    ),
    (re.compile(rf"\bI\s+have\s+an?\s+{_GRADING_ADJ}preference\s+for\b", re.IGNORECASE), "I prefer"),
    (re.compile(rf"\bI\s+have\s+an?\s+{_GRADING_ADJ}(?:love|passion)\s+(?:for|of)\b", re.IGNORECASE), "I love"),
    (re.compile(rf"\bI\s+have\s+an?\s+{_GRADING_ADJ}(?:fondness|liking)\s+(?:for|of)\b", re.IGNORECASE), "I like"),
    (re.compile(r"\bI(?:'m|\s+am)\s+not\s+(?:a\s+)?(?:big\s+|huge\s+|great\s+)?fan\s+of\b", re.I), "I dislike"),
    (_KIND_OF, ""),
    # a leading reason: "Due to X, I ..." / "Because of X, I ..."
    (re.compile(r"^(?:due\s+to|because\s+of|given|as|since)\b[^,]{1,80},\s*(?=I\b)", re.IGNORECASE), ""),
)
# a trailing reason: cut at the first of these (the words before it keep the statement)
_REASON = re.compile(
    r"(?:,?\s+(?:because|since|due\s+to|as\s+(?=(?:I|it|they|this|these|my)\b)|given\s+that|owing\s+to)\b|"
    r",\s+(?:so|as|which)\b).*$",
    re.IGNORECASE | re.DOTALL,
)
_WORD = re.compile(r"[a-z0-9]+")
# function words: a subject's other words are its content (closed-class English words)
_FUNCTION_TEXT = (
    "a an the and or but of to in on at for from by with about as into over than then so that this these "
    "those there it its is are was were be been am do does did have has had will would can could any all "
    "some each every my me i you your our we they their them very really such other more most"
)
_FUNCTION = frozenset(_FUNCTION_TEXT.split())


def content_words(text: str) -> set[str]:
    """The lower-cased content words of ``text`` (function words dropped, a plural ``s`` trimmed)."""
    out = set()
    for w in _WORD.findall(text.lower()):
        if w in _FUNCTION or len(w) < 2:
            continue
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return out


def object_words(subject: str) -> set[str]:
    """The content words a rendering must keep of a memory's subject (a quantifier over kinds, "any kind
    of", is not part of the object)."""
    return content_words(_KIND_OF.sub("", subject))


def _tidy(text: str) -> str:
    s = re.sub(r"\s+", " ", text).strip(" ,;")
    s = re.sub(r"\s+([,.;!?])", r"\1", s)
    if s and not s.endswith((".", "!", "?")):
        s += "."
    return s[0].upper() + s[1:] if s else s


_COUNTS = ("no", "one", "two", "three", "four", "five", "six")


def compact_choice(chosen: str, declined: Sequence[str]) -> str:
    """A choice as the block carries it: the chosen option whole, the options turned down by their
    number only ("I chose this over three others: X."); the stored row keeps them whole. Naming what
    was turned down costs about as many tokens again as the choice itself (docs/evaluations.md)."""
    n = len(declined)
    count = _COUNTS[n] if n < len(_COUNTS) else str(n)
    return f"I chose this over {count} other{'' if n == 1 else 's'}: {chosen.strip().rstrip('.')}."


def compact(text: str, subject: str | None = None) -> str:
    """``text`` rendered shorter, its polarity and its object kept (module docstring); ``subject``: what
    the memory is about (the extractor's ``subject``), whose content words must all survive. A choice
    (:func:`retrieval.extract.choice_text`) is rendered by :func:`compact_choice`."""
    choice = read_choice(text)
    if choice is not None:
        return compact_choice(*choice)
    original = _tidy(text)
    need = object_words(subject) if subject else set()
    want = polarity(original)
    body = original.rstrip(".!?")
    graded = _GRADING_RE.sub(r"\1", body)
    for pattern, repl in _REWRITES:
        graded = pattern.sub(repl, graded)
    for candidate in (_REASON.sub("", graded), graded):
        out = _tidy(candidate)
        if len(out.split()) < 2 or len(out) >= len(original):
            continue
        if polarity(out) == want and need <= content_words(out):
            return out
    return original


@dataclass(frozen=True)
class Candidate:
    """A memory offered to the packer: its rendering, its relevance, its vector (unit norm)."""

    key: int
    text: str
    score: float
    vector: npt.NDArray[np.float32] | None = None
    subject: str = ""  # what the memory is about (the extractor's subject), for the restatement check
    cost: int | None = None  # its tokens when the caller counted them already

    @property
    def tokens(self) -> int:
        return count_tokens(self.text) if self.cost is None else self.cost


@dataclass(frozen=True)
class Line:
    """One line of the block: a candidate, and the restatements of it folded into it (no tokens spent)."""

    candidate: Candidate
    folded: tuple[Candidate, ...] = ()

    @property
    def keys(self) -> list[int]:
        return [self.candidate.key, *(c.key for c in self.folded)]


# cosine at or above which two memories may say the same thing: one line is injected for both when their
# subjects agree too (the store's merge rule: retrieval.reconcile.MERGE_AT and restates)
FOLD_AT = 0.85


def pack(
    candidates: Sequence[Candidate],
    budget_tokens: int,
    *,
    diversity: float = 0.0,
    fold_at: float | None = FOLD_AT,
    restates: Callable[[Candidate, Candidate], bool] | None = None,
) -> list[Line]:
    """The lines to inject within ``budget_tokens``, in the order chosen (module docstring).
    ``candidates`` come best first. A candidate whose vector has cosine >= ``fold_at`` with a line
    already chosen, the same polarity, and (when ``restates`` is given) the same subject by it, is folded
    into it instead of spending tokens. With
    ``diversity`` > 0 the next line maximises relevance minus ``diversity`` x its greatest cosine to the
    lines chosen (maximal marginal relevance); with 0 it is the best-first fill that skips what does
    not fit. Without vectors neither folding nor diversity applies."""
    import numpy as np

    with_vectors = all(c.vector is not None for c in candidates)
    if not with_vectors:
        fold_at, diversity = None, 0.0
    lines: list[Line] = []
    left = budget_tokens
    matrix = (
        np.stack([c.vector for c in candidates if c.vector is not None]).astype(np.float32)
        if with_vectors and candidates
        else None
    )
    tone = functools.cache(lambda i: polarity(candidates[i].text))  # worked out only for lines that may fold
    taken = np.zeros(len(candidates), dtype=bool)
    redundancy = np.zeros(len(candidates), dtype=np.float32)
    scores = np.array([c.score for c in candidates], dtype=np.float32)
    costs = np.array([c.tokens for c in candidates])
    folded: dict[int, list[Candidate]] = {}
    while True:
        open_ = ~taken & (costs <= left)
        if not open_.any():
            break
        value = np.where(open_, scores - diversity * redundancy, -np.inf)
        i = int(np.argmax(value))
        taken[i] = True
        line = len(lines)
        lines.append(Line(candidates[i]))
        left -= int(costs[i])
        if matrix is None:
            continue
        sims = matrix @ matrix[i]
        redundancy = np.maximum(redundancy, sims)
        if fold_at is not None:
            for j in np.nonzero(~taken & (sims >= fold_at))[0]:
                if tone(int(j)) == tone(i) and (restates is None or restates(candidates[i], candidates[int(j)])):
                    taken[j] = True
                    folded.setdefault(line, []).append(candidates[int(j)])
    return [Line(ln.candidate, tuple(folded.get(n, ()))) for n, ln in enumerate(lines)]
