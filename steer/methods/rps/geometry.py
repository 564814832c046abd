"""Robust Preference Selection (Mao et al., 2025): the neighbourhood, the conditioning, the parallel draw.

A user's preference is a unit direction ``v`` over a scorer's reward attributes. RPS draws one
candidate from each of ``k`` directions near ``v`` (the model answers best near the directions it
was trained on), then keeps the candidate whose attribute scores have the largest dot product
with ``v`` itself, the ORIGINAL target. Best-of-N, the baseline, draws all ``k`` from ``v``.

* :func:`neighbours`: in 2-D exactly the paper's grid (absolute angles -40..+40 degrees in
  5-degree steps, those within ``t_max`` of the target, the ``k`` closest); in more dimensions
  a deterministic, seeded spread over the spherical cap of radius ``t_max`` around the target.
* :func:`dpa_text` / :func:`natural_text`: the text each candidate is conditioned on.
* :func:`plan` groups directions whose text coincides into one request with ``n``;
  :func:`candidate_bodies` builds the requests, byte-identical but for the one direction
  message placed after the shared prefix (so vLLM's prefix cache serves every candidate);
  :func:`generate` sends them all at once, each under its own timeout.
* :func:`select`: the argmax of ``dot(v_target, scores)``.

Pure Python (no numpy): these are a handful of short vectors per request.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Vector = tuple[float, ...]
Mode = Literal["rps", "best_of_n"]
Conditioning = Literal["dpa", "natural"]
Placement = Literal["before_last_user", "system"]

PAPER_GRID: tuple[float, float, float] = (-40.0, 40.0, 5.0)  # low, high, step (degrees)
DEFAULT_K = 5
DEFAULT_T_MAX = 30.0  # degrees
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.9
_EPS = 1e-9


# ---------------------------------------------------------------------------------------------
# directions


def normalize(weights: Sequence[float]) -> Vector:
    """``weights`` scaled to unit length; ValueError for an empty, zero or non-finite vector."""
    if not weights or not all(math.isfinite(w) for w in weights):
        raise ValueError("a preference direction needs finite weights")
    norm = math.sqrt(sum(w * w for w in weights))
    if norm < _EPS:
        raise ValueError("a preference direction cannot be the zero vector")
    return tuple(w / norm for w in weights)


def dot(u: Sequence[float], v: Sequence[float]) -> float:
    return sum(a * b for a, b in zip(u, v, strict=True))


def angle_between(u: Sequence[float], v: Sequence[float]) -> float:
    """Degrees between two unit vectors."""
    return math.degrees(math.acos(max(-1.0, min(1.0, dot(u, v)))))


def from_angle(degrees: float) -> Vector:
    """The 2-D unit direction ``(cos t, sin t)``."""
    t = math.radians(degrees)
    return (math.cos(t), math.sin(t))


def angle_of(v: Sequence[float]) -> float:
    """The angle (degrees) of a 2-D direction, in (-180, 180]."""
    return math.degrees(math.atan2(v[1], v[0]))


def _wrapped(a: float) -> float:
    """An angle difference brought into [-180, 180)."""
    return (a + 180.0) % 360.0 - 180.0


def grid_angles(grid: tuple[float, float, float] = PAPER_GRID) -> list[float]:
    low, high, step = grid
    if step <= 0 or high < low:
        raise ValueError("the grid needs low <= high and a positive step")
    count = math.floor((high - low) / step + _EPS) + 1
    return [low + i * step for i in range(count)]


def grid_neighbours(
    target_deg: float,
    k: int = DEFAULT_K,
    t_max: float = DEFAULT_T_MAX,
    grid: tuple[float, float, float] = PAPER_GRID,
) -> list[float]:
    """The paper's 2-D neighbourhood: grid angles within ``t_max`` of the target, the ``k`` closest.

    Closest first; a tie in distance goes to the angle nearer the grid's centre (the model's
    training range), then to the smaller angle. May return fewer than ``k`` (a target far
    outside the grid), or none.
    """
    centre = (grid[0] + grid[1]) / 2
    near = [(abs(_wrapped(g - target_deg)), abs(g - centre), g) for g in grid_angles(grid)]
    kept = sorted(item for item in near if item[0] <= t_max + _EPS)
    return [g for _, _, g in kept[:k]]


def _tangent_basis(v: Vector) -> list[Vector]:
    """An orthonormal basis of the hyperplane orthogonal to the unit vector ``v`` (Gram-Schmidt)."""
    d = len(v)
    basis: list[Vector] = []
    for axis in sorted(range(d), key=lambda i: abs(v[i])):  # the axes least aligned with v first
        e = [0.0] * d
        e[axis] = 1.0
        for b in (v, *basis):
            c = dot(e, b)
            e = [x - c * y for x, y in zip(e, b, strict=True)]
        norm = math.sqrt(sum(x * x for x in e))
        if norm > 1e-6:
            basis.append(tuple(x / norm for x in e))
        if len(basis) == d - 1:
            break
    return basis


def cap_neighbours(
    target: Sequence[float],
    k: int = DEFAULT_K,
    t_max: float = DEFAULT_T_MAX,
    step: float = PAPER_GRID[2],
    seed: int = 0,
) -> list[Vector]:
    """``k`` directions within ``t_max`` degrees of ``target`` (any dimension >= 2), closest first.

    The target itself, then pairs of opposite offsets at ``step``, ``2*step``, ... degrees (never
    beyond ``t_max``), as the 2-D grid gives around a target that lies on it; each pair takes a
    new tangent axis, chosen by farthest-point sampling among seeded random tangents, so the
    directions spread over the cap. The same inputs always give the same directions.
    """
    v = normalize(target)
    out: list[Vector] = [v]
    basis = _tangent_basis(v)
    if k <= 1 or not basis:
        return out[:k]
    rng = random.Random(seed * 1_000_003 + len(v))
    pool: list[Vector] = []
    for _ in range(32 * len(basis) + 32):
        coeffs = [rng.gauss(0.0, 1.0) for _ in basis]
        norm = math.sqrt(sum(c * c for c in coeffs)) or 1.0
        pool.append(tuple(sum(c / norm * b[i] for c, b in zip(coeffs, basis, strict=True)) for i in range(len(v))))
    chosen: list[Vector] = []
    j = 1
    while len(out) < k:
        theta = math.radians(min(t_max, step * ((j + 1) // 2)))
        if j % 2 == 1:  # a new axis: the pool tangent farthest from every axis (and its opposite) so far
            u = max(pool, key=lambda p: min((1 - abs(dot(p, c)) for c in chosen), default=1.0))
            chosen.append(u)
        else:
            u = tuple(-x for x in chosen[-1])
        out.append(normalize([math.cos(theta) * a + math.sin(theta) * b for a, b in zip(v, u, strict=True)]))
        j += 1
    return out


def neighbours(
    target: Sequence[float],
    k: int = DEFAULT_K,
    t_max: float = DEFAULT_T_MAX,
    grid: tuple[float, float, float] = PAPER_GRID,
    seed: int = 0,
) -> list[Vector]:
    """RPS's neighbour directions of a unit ``target``, closest first: the paper's grid in 2-D, the
    seeded cap spread in more dimensions; padded with the target itself up to ``k`` (so the sample
    budget stays ``k`` when few grid angles lie within ``t_max``)."""
    v = normalize(target)
    if len(v) == 2:
        out = [from_angle(a) for a in grid_neighbours(angle_of(v), k, t_max, grid)]
    elif len(v) == 1:
        out = [v]
    else:
        out = cap_neighbours(v, k, t_max, grid[2], seed)
    return out + [v] * (k - len(out))


# ---------------------------------------------------------------------------------------------
# conditioning


def integer_weights(weights: Sequence[float]) -> list[int]:
    """The DPA integers: ``round(100 * v_i)``."""
    return [round(100 * w) for w in weights]


def dpa_text(attributes: Sequence[str], weights: Sequence[float]) -> str:
    """The DPA system text: ``Your response should maximize weighted rating = helpfulness*h + verbosity*w``."""
    terms = " + ".join(f"{a}*{w}" for a, w in zip(attributes, integer_weights(weights), strict=True))
    return f"Your response should maximize weighted rating = {terms}"


def natural_text(attributes: Sequence[str], weights: Sequence[float]) -> str:
    """The same integer weights in plain words, for models not trained on the DPA format."""
    parts = []
    for a, w in zip(attributes, integer_weights(weights), strict=True):
        name = a.replace("_", " ")
        if w > 0:
            parts.append(f"more {name} is better (weight {w})")
        elif w < 0:
            parts.append(f"less {name} is better (weight {-w})")
        else:
            parts.append(f"{name} does not matter (weight 0)")
    return (
        "Shape your response to this reader's preferences, weighted out of 100: "
        + "; ".join(parts)
        + ". Give each quality as much room as its weight, and do not mention these weights."
    )


TEXTS: dict[str, Callable[[Sequence[str], Sequence[float]], str]] = {"dpa": dpa_text, "natural": natural_text}


def condition(messages: list[dict[str, Any]], text: str, placement: Placement) -> list[dict[str, Any]]:
    """``messages`` with the direction ``text`` added; the input list is left as it was.

    ``before_last_user``: a system message of its own just before the last user turn, so every
    candidate shares the byte-identical prefix before it (vLLM's prefix cache serves them all).
    ``system``: appended to the leading system message (a new one when there is none), for chat
    templates that accept a system message only first (Mistral's).
    """
    out = list(messages)
    if placement == "system":
        if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{text}"}
        else:
            out.insert(0, {"role": "system", "content": text})
        return out
    at = next((i for i in range(len(out) - 1, -1, -1) if out[i].get("role") == "user"), len(out))
    out.insert(at, {"role": "system", "content": text})
    return out


# ---------------------------------------------------------------------------------------------
# requests


@dataclass(frozen=True)
class Planned:
    """One upstream request: ``n`` samples conditioned on one direction."""

    direction: Vector
    text: str
    n: int
    offset_deg: float  # angle from the target direction


def plan(
    attributes: Sequence[str],
    target: Sequence[float],
    mode: Mode = "rps",
    k: int = DEFAULT_K,
    t_max: float = DEFAULT_T_MAX,
    conditioning: Conditioning = "natural",
    grid: tuple[float, float, float] = PAPER_GRID,
    seed: int = 0,
    use_n: bool = True,
) -> list[Planned]:
    """The requests for ``k`` samples, closest to the target first. Directions whose conditioning
    text coincides share one request with ``n`` (when ``use_n``; else one request each)."""
    v = normalize(target)
    if len(v) != len(attributes):
        raise ValueError(f"{len(v)} weights for {len(attributes)} attributes")
    dirs = [v] * k if mode == "best_of_n" else neighbours(v, k, t_max, grid, seed)
    render = TEXTS[conditioning]
    out: list[Planned] = []
    for d in dirs:
        text = render(attributes, d)
        same = next((i for i, p in enumerate(out) if p.text == text), None) if use_n else None
        if same is not None:
            p = out[same]
            out[same] = Planned(p.direction, p.text, p.n + 1, p.offset_deg)
        else:
            out.append(Planned(d, text, 1, round(angle_between(v, d), 6)))
    return out


def per_candidate_cap(client: int | None, cap: int | None, budget: int | None, samples: int) -> int | None:
    """The ``max_tokens`` each sample may use: the smallest of the client's, the per-candidate cap and
    an equal share of the total budget."""
    limits = [x for x in (client, cap, budget // samples if budget is not None and samples else None) if x]
    return min(limits) if limits else None


def candidate_bodies(
    request: dict[str, Any],
    planned: Sequence[Planned],
    placement: Placement = "before_last_user",
    temperature: float | None = DEFAULT_TEMPERATURE,
    top_p: float | None = DEFAULT_TOP_P,
    max_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """One non-streaming request body per planned request: the client's body with the direction
    text placed after the shared prefix, the sampling parameters and ``n`` set; nothing else
    changes, so the bodies are byte-identical but for that text (and ``n``)."""
    base = {k: v for k, v in request.items() if k not in ("stream", "stream_options", "n")}
    if temperature is not None:
        base["temperature"] = temperature
    if top_p is not None:
        base["top_p"] = top_p
    if max_tokens is not None:
        keys = [k for k in ("max_tokens", "max_completion_tokens") if k in request] or ["max_tokens"]
        base.update(dict.fromkeys(keys, max_tokens))
    seed = request.get("seed")
    out = []
    for i, p in enumerate(planned):
        body = {**base, "messages": condition(request["messages"], p.text, placement)}
        if p.n > 1:
            body["n"] = p.n
        if isinstance(seed, int) and not isinstance(seed, bool):
            body["seed"] = seed + i  # the same seed on every request would draw the same answer
        out.append(body)
    return out


@dataclass
class Outcome:
    """What one request gave: its status, timing, usage and one completion per choice."""

    index: int
    status: Literal["ok", "failed", "timeout", "straggler"] = "ok"
    ms: float = 0.0
    usage: dict[str, int] = field(default_factory=dict)
    completions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def split_choices(completion: dict[str, Any]) -> list[dict[str, Any]]:
    """A completion with ``n`` choices as ``n`` completions of one choice each (index 0)."""
    choices = completion.get("choices") or []
    head = {k: v for k, v in completion.items() if k not in ("choices", "usage")}
    return [{**head, "choices": [{**c, "index": 0}]} for c in choices if isinstance(c, dict)]


async def generate(
    complete: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    bodies: Sequence[dict[str, Any]],
    timeout_s: float,
    quorum: int | None = None,
    grace: float = 0.2,
) -> list[Outcome]:
    """Send every body at once, each under its own timeout; one outcome per body, in order.

    With ``quorum``: once that many requests have answered, the others get ``grace`` times the time
    spent so far to finish, then are cancelled (status ``straggler``): one stalled upstream call
    costs a fifth more wall time, not a whole candidate timeout.
    """

    async def one(i: int, body: dict[str, Any]) -> Outcome:
        out = Outcome(i)
        t0 = time.perf_counter()
        try:
            data = await asyncio.wait_for(complete(body), timeout_s)
        except TimeoutError:
            out.status, out.error = "timeout", f"no answer within {timeout_s:g}s"
        except Exception as exc:  # one candidate's failure must not sink the others
            out.status, out.error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            out.completions = split_choices(data)
            usage = data.get("usage")
            if isinstance(usage, dict):
                out.usage = {k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)}
            if not out.completions:
                out.status, out.error = "failed", "the upstream's answer has no choices"
        out.ms = (time.perf_counter() - t0) * 1000
        return out

    tasks = [asyncio.create_task(one(i, b)) for i, b in enumerate(bodies)]
    if quorum is None or quorum >= len(tasks):
        return list(await asyncio.gather(*tasks))
    t0 = time.perf_counter()
    pending: set[asyncio.Task[Outcome]] = set(tasks)
    deadline: float | None = None
    answered = 0
    try:
        while pending:
            wait = None if deadline is None else max(0.0, deadline - time.perf_counter())
            done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                break  # the grace period is over
            answered += sum(1 for t in done if t.result().status == "ok")
            if deadline is None and answered >= quorum:
                now = time.perf_counter()
                deadline = now + grace * (now - t0)
    finally:
        for t in pending:
            t.cancel()
    elapsed_ms = (time.perf_counter() - t0) * 1000
    return [
        Outcome(i, "straggler", elapsed_ms, error="cancelled once the quorum had answered")
        if t in pending
        else t.result()
        for i, t in enumerate(tasks)
    ]


def total_usage(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """Token counts added up over every request that answered."""
    total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for o in outcomes:
        for key in total:
            total[key] += o.usage.get(key, 0)
    return total


# ---------------------------------------------------------------------------------------------
# selection


def select(scores: Sequence[Sequence[float]], target: Sequence[float]) -> tuple[int, list[float]]:
    """The index of the candidate with the largest ``dot(target, scores)``, and every projection.

    Always the ORIGINAL target direction, whatever direction each candidate was drawn from; the
    first candidate wins a tie."""
    if not scores:
        raise ValueError("no candidates to select from")
    projected = [dot(target, row) for row in scores]
    best = max(range(len(projected)), key=lambda i: (projected[i], -i))
    return best, projected
