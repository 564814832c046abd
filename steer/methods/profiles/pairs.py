"""Feedback on a served completion turned into Bradley-Terry pairs on its candidates' attribute scores.

Each pair is (x_winner - x_loser, weight), x a candidate's scorer row scaled to 0-1
(``steer.methods.profiles.math.normalise``):

* ``rating`` r > 0: the rated choice beat every other candidate (weight r); r < 0: lost to each;
* ``choice`` k: returned choice k beat the other returned choices;
* ``edit``: the edited text (scored now, against the kept context) beat the served choice.
"""

from __future__ import annotations

import math
from typing import Any

from steer.errors import InvalidRequest
from steer.methods.profiles.math import normalise
from steer.pipeline.ports import Scorer
from steer.storage.profiles import Served

MAX_EDIT_CHARS = 100_000


def _number(body: dict[str, Any], name: str) -> float:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a number", param=name, code="invalid_value")
    return float(value)



async def feedback_pairs(
    scorer: Scorer, served: Served, kind: str, body: dict[str, Any]
) -> tuple[list[tuple[list[float], float]], dict[str, Any]]:
    """The Bradley-Terry pairs (normalised x_winner - x_loser, weight) one feedback event on ``served``
    gives, and the feedback value to store; an ``InvalidRequest`` naming the field for bad feedback."""
    if tuple(scorer.attributes) != served.attributes:
        raise InvalidRequest(
            "the scorer's attributes changed since this completion was served; feedback on it cannot be used",
            param="completion_id",
            code="stale_completion",
        )
    x = normalise(served.scores, served.attributes, scorer.ranges).tolist()
    n_returned = len(served.returned)
    index = body.get("index", 0)
    bad_index = isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n_returned
    if kind != "choice" and bad_index:
        raise InvalidRequest(f"index must be an integer in 0..{n_returned - 1}", param="index", code="invalid_value")
    pairs: list[tuple[list[float], float]] = []

    def pair(win: list[float], lose: list[float], weight: float) -> None:
        pairs.append(([w - lo for w, lo in zip(win, lose, strict=True)], weight))

    if kind == "rating":
        rating = _number(body, "rating")
        if not -1.0 <= rating <= 1.0:
            raise InvalidRequest("rating must be within -1..1 (1: good, -1: bad)", param="rating", code="invalid_value")
        rated = served.returned[index]
        for other in range(len(x)):
            if other != rated and rating > 0:
                pair(x[rated], x[other], rating)
            elif other != rated and rating < 0:
                pair(x[other], x[rated], -rating)
        return pairs, {"rating": rating}
    if kind == "choice":
        choice = body["choice"]
        if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice < n_returned:
            raise InvalidRequest(
                f"choice must be an integer in 0..{n_returned - 1} (the index of a returned choice)",
                param="choice",
                code="invalid_value",
            )
        if n_returned < 2:
            raise InvalidRequest(
                "choice needs a completion served with several choices (request n > 1)",
                param="choice",
                code="invalid_value",
            )
        for k in range(n_returned):
            if k != choice:
                pair(x[served.returned[choice]], x[served.returned[k]], 1.0)
        return pairs, {"choice": choice}
    edit = body["edit"]
    if not isinstance(edit, str) or not edit.strip():
        raise InvalidRequest("edit must be a non-empty string", param="edit", code="invalid_value")
    if len(edit) > MAX_EDIT_CHARS:
        raise InvalidRequest(f"edit is over {MAX_EDIT_CHARS} characters", param="edit", code="invalid_value")
    if served.context is None:
        raise InvalidRequest(
            "this completion was served without its context (it is kept only when the user's policy sets "
            "log_prompts: true and rerank.keep_context is on); an edit cannot be scored",
            param="edit",
            code="no_context",
        )
    rows = await scorer.score(served.context, [edit])
    x_edit = normalise(rows, served.attributes, scorer.ranges).tolist()[0]
    pair(x_edit, x[served.returned[index]], 1.0)
    return pairs, {"edit": edit}
