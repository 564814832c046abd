"""Keeping memory tidy on write: merge restatements, let newer statements supersede contradicted ones.

- A new statement whose text vector has cosine >= ``merge_at`` with a current memory is a
  restatement: the existing memory records the new source in ``meta["merged_from"]``.
- A new statement about the same subject (subject vectors' cosine >= ``subject_at``) with the
  opposite polarity ("I love X" then "I no longer like X" / "I hate X") is stored and supersedes
  the older one, which stays in the history. Constraints ("I'm vegan") are "neutral" and never
  contradict by polarity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from retrieval.extract import Extracted
    from retrieval.sqlite_store import SqliteFaissStore
    from retrieval.store import Memory


@dataclass(frozen=True)
class Decision:
    action: Literal["add", "merge", "supersede"]
    target: Memory | None = None  # merged into, or superseded
    contradicts: list[Memory] = field(default_factory=list)


def decide(
    store: SqliteFaissStore,
    tenant: str,
    user: str,
    item: Extracted,
    vector: npt.NDArray[np.float32],
    *,
    merge_at: float = 0.92,
    related_at: float = 0.5,
    subject_at: float = 0.8,
) -> Decision:
    """What to do with ``item`` (whose text embeds to ``vector``) given the user's memory."""
    hits = store.search(tenant, user, vector, k=8)
    best: tuple[float, Memory] | None = None
    related: list[Memory] = []
    for hit in hits:
        own = float(store.vectors(tenant, user, hit.memory.id)[0] @ vector)
        if best is None or own > best[0]:
            best = (own, hit.memory)
        if own >= related_at:
            related.append(hit.memory)
    if (
        best is not None
        and best[0] >= merge_at
        and best[1].meta.get("polarity") in (None, "neutral", item.polarity)
    ):
        return Decision("merge", best[1])
    flipped = {"positive": "negative", "negative": "positive"}.get(item.polarity)
    opposite = [m for m in related if flipped is not None and m.meta.get("polarity") == flipped]
    if opposite:
        subjects = store.embedder.encode(
            [item.subject] + [str(m.meta.get("subject", m.text)) for m in opposite]
        )
        same = [
            m for m, v in zip(opposite, subjects[1:], strict=True) if float(v @ subjects[0]) >= subject_at
        ]
        if same:
            return Decision("supersede", same[0], same)
    return Decision("add")
