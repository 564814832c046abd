"""Keeping memory tidy on write: merge restatements, supersede only on a real change of mind.

- A restatement merges: a new statement whose text vector has cosine >= ``MERGE_AT`` with a current
  memory of agreeing polarity (the same, or either one ``neutral``) is recorded on that memory
  (``meta["merged_from"]``: its source) and its wording in ``meta["restated"]``; nothing is lost.
- A change of mind supersedes: the new statement is about the same object as a current memory and
  either (a) says the opposite ("I love X" then "I hate X" / "I don't like X"), read on the main
  clause's stance (:func:`stance`: "I prefer X since I avoid Y" is a liking of X), neither statement
  being a contrast that states both a liking and an aversion ("I prefer A rather than B", "A
  without B", "a stance against B": their word polarity says nothing about agreement), or (b) says
  the speaker changed ("no longer", "not anymore", "used to", "changed my mind", "these days") where
  the older one did not. The older memory stays in the history.
- "The same object": the subjects' vectors have cosine >= ``SUBJECT_AT`` and one subject's content
  words all occur in the other's: "cars with a manual transmission" and "cars with automatic
  transmissions" are near in vector space but each names a word the other lacks, so a user who
  prefers one and dislikes the other keeps both memories.

The cue words are general English (contrast connectives, aspect markers of change), not taken from
any data set. The thresholds come from pairs of statements written for the tests
(tests/retrieval/test_restatements.py, everyday English, no benchmark item): MiniLM puts two wordings
of one preference at 0.80-0.90 and two different preferences below 0.75, except antonyms ("cold" /
"hot weather": 0.90), which the subject check (:func:`restates`) separates. ``MERGE_AT`` = 0.85
merges only the closer half of the wordings: a restatement kept twice costs tokens, two different
preferences merged lose one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from retrieval.extract import polarity
from retrieval.packing import content_words

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from retrieval.extract import Extracted
    from retrieval.sqlite_store import SqliteFaissStore
    from retrieval.store import Memory

MERGE_AT = 0.85
RESTATED_SUBJECT_AT = 0.75
RELATED_AT = 0.5
SUBJECT_AT = 0.8

_CONTRAST = re.compile(
    r"\b(?:rather\s+than|instead\s+of|as\s+opposed\s+to|without|free\s+of|against|over\s+(?:the\s+)?\w+|"
    r"but\s+(?:not|prefer|like|love|enjoy|avoid|dislike|hate))\b|\w-free\b",
    re.IGNORECASE,
)
_CHANGE = re.compile(
    r"\b(?:no\s+longer|not\s+any\s*more|any\s*more|used\s+to|changed\s+my\s+mind|these\s+days|"
    r"(?:have|'ve)\s+(?:recently\s+)?(?:started|stopped|become|grown|come\s+to)|now\s+(?:I\s+)?"
    r"(?:prefer|like|love|enjoy|avoid|hate|dislike|eat|drink))\b",
    re.IGNORECASE,
)


# where the main clause ends: a reason, a concession, a relative clause, or a new clause after a comma
# or a dash (general English clause connectives)
_AFTER_HEAD = re.compile(
    r",|;|\s[-\u2013\u2014]\s|\b(?:because|since|as|due\s+to|given\s+that|but|though|although|while|whereas|"
    r"so|that|which|who|where|when|unless|if)\b",
    re.IGNORECASE,
)
# the speaker and the words of their stance: "I" and the four words after it
_SPEAKER = re.compile(r"\bI(?:'m|'ve|'d)?(?:\s+\S+){1,4}", re.IGNORECASE)


@dataclass(frozen=True)
class Decision:
    action: Literal["add", "merge", "supersede"]
    target: Memory | None = None  # merged into, or superseded
    contradicts: list[Memory] = field(default_factory=list)


def agrees(a: str | None, b: str | None) -> bool:
    """Two polarities that can be one preference restated (the same, or either one neutral/unknown)."""
    return a in (None, "neutral") or b in (None, "neutral") or a == b


def is_contrast(text: str) -> bool:
    """The statement weighs two things against each other ("A rather than B", "A without B")."""
    return _CONTRAST.search(text) is not None


def says_change(text: str) -> bool:
    """The statement says the speaker's preference changed ("no longer", "used to", "these days")."""
    return _CHANGE.search(text) is not None


def same_object(a: str, b: str) -> bool:
    """One subject's content words all occur in the other's: the same object, or one more specific
    ("horror movies", "horror movie marathons"); each naming a word the other lacks ("manual
    transmission cars", "automatic transmission cars") are different objects."""
    wa, wb = content_words(a), content_words(b)
    return bool(wa and wb) and (wa <= wb or wb <= wa)


def stance(text: str) -> str:
    """The polarity of the speaker's stance: of the main clause (a reason, a concession or a relative
    clause after it is another statement: "I prefer land-based activities since I avoid diving" is a
    liking; "I prefer exercises that don't involve water" too), read on the first words from "I" on."""
    head = _AFTER_HEAD.split(text, maxsplit=1)[0]
    found = _SPEAKER.search(head)
    return polarity(found.group(0) if found else head)


def changes_mind(item: Extracted, old: Memory) -> bool:
    """Whether ``item`` retracts ``old`` (module docstring), given they are about the same object: an
    opposite stance of the speaker (:func:`stance`), not merely a negation somewhere in the sentence."""
    if says_change(item.text) and not says_change(old.text):
        return True
    flipped = {"positive": "negative", "negative": "positive"}.get(stance(item.text))
    return (
        flipped is not None
        and stance(old.text) == flipped
        and not is_contrast(item.text)
        and not is_contrast(old.text)
    )


def decide(
    store: SqliteFaissStore,
    tenant: str,
    user: str,
    item: Extracted,
    vector: npt.NDArray[np.float32],
    *,
    merge_at: float = MERGE_AT,
    related_at: float = RELATED_AT,
    subject_at: float = SUBJECT_AT,
) -> Decision:
    """What to do with ``item`` (whose text embeds to ``vector``) given the user's memory."""
    hits = store.search(tenant, user, vector, k=8)
    own = store.text_vectors(tenant, user, [h.memory.id for h in hits])
    scored = sorted(
        ((float(own[h.memory.id] @ vector), h.memory) for h in hits if h.memory.id in own),
        key=lambda x: -x[0],
    )
    related = [m for s, m in scored if s >= related_at]
    candidates = [
        m for m in related if same_object(item.subject, str(m.meta.get("subject") or m.text)) and changes_mind(item, m)
    ]
    if candidates:
        subjects = store.embedder.encode([item.subject] + [str(m.meta.get("subject") or m.text) for m in candidates])
        same = [m for m, v in zip(candidates, subjects[1:], strict=True) if float(v @ subjects[0]) >= subject_at]
        if same:
            return Decision("supersede", same[0], same)
    for s, m in scored:
        subject = str(m.meta.get("subject") or m.text)
        if (
            s >= merge_at
            and agrees(m.meta.get("polarity"), item.polarity)
            and restates(store.embedder, item.subject, subject)
        ):
            return Decision("merge", m)
    return Decision("add")


def restates(embedder: Any, a: str, b: str) -> bool:
    """Two statements whose texts are near (cosine >= ``MERGE_AT``) say the same thing only when their
    subjects agree too: one's content words contain the other's, or their vectors have cosine >=
    ``RESTATED_SUBJECT_AT``. MiniLM puts "I hate cold weather" and "I hate hot weather" at 0.90; their
    subjects are 0.68 apart and neither contains the other, so both are kept."""
    if same_object(a, b):
        return True
    if not a or not b:
        return False
    va, vb = embedder.encode([a, b])
    return float(va @ vb) >= RESTATED_SUBJECT_AT
