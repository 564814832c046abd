"""P-Aligner instruction pre-alignment: the prompt format, the parser, the guards and the rewrite cache.

P-Aligner (Song et al., 2025) is a small model that rewrites an instruction into a clearer one
with the same intent, before the target model decodes. steer calls the aligner through the
generator interface (any model in the settings' ``models``), greedily, and keeps the rewrite only
when every guard passes:

- it parses (both ``[The Start of Optimized Prompt]`` / ``[The End of Optimized Prompt]``
  markers present, something between them, no echo of the aligner's own prompt);
- its length stays within ``min_length_ratio``..``max_length_ratio`` of the original;
- it keeps the code blocks, numbers and names of the original;
- its meaning stays close: embedding cosine to the original at least ``min_similarity``;
- it arrives within ``rewrite_timeout_s``.

Turns where rewriting hurts are never sent to the aligner (:func:`turn_gate`): very short turns,
follow-ups that lean on earlier turns, tool results, non-text content. Aligner outputs are cached
by (user, aligner model, prompt format, instruction) in memory and in SQLite (``align_cache``), and
only per user: a cache shared by users would tell one user what another asked (a hit shows as
``cached: true`` and in the latency), so a request without a user is never cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from retrieval import embeddings
from steer.storage.database import NOT_FORGOTTEN, tombstone_args

if TYPE_CHECKING:
    from retrieval.embeddings import Embedder
    from steer.methods.align.stage import AlignConfig
    from steer.storage.database import Database

HEADER = "You are an expert prompt engineer. Please help me optimize this prompt to get better response:"
START_RAW = "[The Start of Raw Prompt]"
END_RAW = "[The End of Raw Prompt]"
START_OPT = "[The Start of Optimized Prompt]"
END_OPT = "[The End of Optimized Prompt]"
ANSWER_LEAD = "The Optimized Prompt:"

# For models not trained on P-Aligner: the principles its training data applied (UltraPrompt), in our words.
PRINCIPLES = """Apply these principles where they fit, and only where they fit:
1. Harmlessness: state a safe intent and keep the request within safe boundaries.
2. Helpfulness: ask for the context that is missing, or supply context the request implies;
   make the tone clear and polite.
3. Honesty: ask for a factual answer that says what is uncertain.
4. Coding: ask to anticipate likely errors and to explain how to debug them.
5. Math: add a hint towards the method and ask to verify the solution.
Keep the intent of the raw prompt exactly. Keep every name, number and code block of it. Do not answer it."""

FORMAT_RULE = f"""Reply in exactly this format, with nothing after it:
{ANSWER_LEAD}

{START_OPT}
<the optimized prompt>
{END_OPT}"""

# The prompt formats, versioned: a cached output is only reused for the format that produced it.
FORMATS = {False: "p-aligner-v1", True: "principles-v1"}

Decision = Literal["applied", "kept", "skipped"]


def aligner_prompt(instruction: str, principles: bool = False) -> str:
    """The user turn sent to the aligner: P-Aligner's training format, plus the principles if asked."""
    raw = f"{START_RAW}\n{instruction}\n{END_RAW}"
    if principles:
        return f"{HEADER}\n\n{PRINCIPLES}\n\n{raw}\n\n{FORMAT_RULE}"
    return f"{HEADER}\n\n{raw}"


def parse_rewrite(text: str) -> str | None:
    """The text between the Optimized-Prompt markers, stripped; None unless both markers are there."""
    start = text.find(START_OPT)
    if start < 0:
        return None
    end = text.find(END_OPT, start + len(START_OPT))
    if end < 0:
        return None
    body = text[start + len(START_OPT) : end]
    last = body.rfind(START_OPT)  # a repeated start marker: the last one opens the rewrite
    if last >= 0:
        body = body[last + len(START_OPT) :]
    return body.strip() or None


def echoes_prompt(rewrite: str) -> bool:
    """The rewrite carries the aligner's own scaffolding (which must never reach the target model)."""
    return any(marker in rewrite for marker in (START_RAW, END_RAW, START_OPT, END_OPT, HEADER))


# --- facts a rewrite must keep ---------------------------------------------------------------------

_FENCED = re.compile(r"```.*?```", re.S)
_INLINE = re.compile(r"`[^`\n]+`")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE = re.compile(r"(?<=[.!?:;])\s+|\n+")
_WORD = re.compile(r"[^\W\d_][\w'\-]*\w|[^\W\d_]")
_NOT_NAMES = frozenset({"I", "I'm", "I'll", "I've", "I'd", "OK"})
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})


def _squash(text: str) -> str:
    return " ".join(text.split())


def code_spans(text: str) -> list[str]:
    """Fenced code blocks and inline code spans, whitespace-normalised."""
    fenced = _FENCED.findall(text)
    rest = _FENCED.sub(" ", text)
    return [_squash(c) for c in (*fenced, *_INLINE.findall(rest))]


def numbers(text: str) -> list[str]:
    """Numbers, thousands separators dropped (``1,000`` and ``1000`` are the same number)."""
    return [n.replace(",", "") for n in _NUMBER.findall(_FENCED.sub(" ", text))]


def names(text: str) -> list[str]:
    """Capitalised words not opening a sentence, acronyms, CamelCase and snake_case identifiers."""
    out: list[str] = []
    text = text.translate(_APOSTROPHES)
    for sentence in _SENTENCE.split(_FENCED.sub(" ", _INLINE.sub(" ", text))):
        for i, match in enumerate(_WORD.finditer(sentence)):
            word = re.sub(r"'s$", "", match.group())
            if word in _NOT_NAMES:
                continue
            inner_upper = any(c.isupper() for c in word[1:])
            if (i > 0 and word[0].isupper()) or inner_upper or "_" in word:
                out.append(word)
    return list(dict.fromkeys(out))


def missing_facts(original: str, rewrite: str, kinds: tuple[str, ...]) -> tuple[str, list[str]] | None:
    """The first kind of fact (``code``, ``numbers``, ``names``) the rewrite dropped, with what it dropped."""
    if "code" in kinds:
        have = _squash(rewrite)
        lost = [c for c in code_spans(original) if c not in have and c.strip("`").strip() not in have]
        if lost:
            return "lost_code", lost
    if "numbers" in kinds:
        have_numbers = set(numbers(rewrite))
        lost = [n for n in dict.fromkeys(numbers(original)) if n not in have_numbers]
        if lost:
            return "lost_numbers", lost
    if "names" in kinds:
        lower = rewrite.lower()
        lost = [n for n in names(original) if n.lower() not in lower]
        if lost:
            return "lost_names", lost
    return None


# --- which turns are worth rewriting ----------------------------------------------------------------

_LEADERS = frozenset(
    "and also so but or then ok okay yes no sure thanks great nice now instead same again more".split()  # noqa: SIM905
)
_ANAPHORIC_WORDS = (
    "it its it's that this these those they them their theirs he she him her his above previous "
    "earlier same again instead one ones former latter"
)
_ANAPHORA = frozenset(_ANAPHORIC_WORDS.split())


def text_of(content: Any) -> str | None:
    """A message's text: a string as is, a list of text parts joined; None for any non-text content."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                return None
            parts.append(part["text"])
        return "\n".join(parts)
    return None


def is_follow_up(text: str, max_words: int) -> bool:
    """A turn that leans on earlier turns: short (elliptical), opening with a connective, or pronoun-led."""
    words = re.findall(r"[\w']+", text.lower().translate(_APOSTROPHES))
    if len(words) <= max_words:
        return True
    return words[0] in _LEADERS or any(w in _ANAPHORA for w in words[:6])


@dataclass(frozen=True, slots=True)
class Turn:
    index: int  # of the last user message in ``messages``
    text: str


def turn_gate(messages: list[dict[str, Any]], config: AlignConfig) -> Turn | str:
    """The last user instruction to rewrite, or the reason this turn is left alone."""
    if not messages:
        return "no_user_turn"
    last = messages[-1]
    role = last.get("role")
    if role in ("tool", "function"):
        return "tool_result"
    if role != "user":
        return "not_user_turn"
    text = text_of(last.get("content"))
    if text is None:
        return "non_text"
    if len(text.split()) < config.min_words:
        return "short_turn"
    if len(text) > config.max_chars:
        return "long_turn"
    earlier = any(m.get("role") in ("user", "assistant", "tool", "function") for m in messages[:-1])
    if earlier and config.skip_follow_ups and is_follow_up(text, config.follow_up_max_words):
        return "follow_up"
    return Turn(len(messages) - 1, text)


# --- the rewrite cache ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cached:
    rewrite: str | None  # None: the aligner's output did not parse
    outcome: str  # parsed | unparsed | truncated
    raw: str | None = field(default=None, compare=False)  # the aligner's whole output (fresh calls only)


class RewriteCache:
    """Aligner outputs by (tenant, user, aligner model, format, instruction): an LRU over an SQLite table.

    Greedy decoding makes the output a function of its input, so failures are cached too. Only a
    SHA-256 of the instruction is stored, never the instruction; rows carry tenant and user so a
    user's rows can be forgotten (``forget``). A rewrite made for a request that began before its user
    was forgotten is stored nowhere: the insert checks the tombstone, and the in-memory layer takes an
    entry only if no forget ran since the entry was read or made (``_generation``).
    """

    def __init__(self, db: Callable[[], Database | None], size: int = 4096) -> None:
        self._db = db
        self.size = size
        self._lru: OrderedDict[tuple[str, str, str, str], Cached] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every forget

    @staticmethod
    def digest(fmt: str, instruction: str) -> str:
        return hashlib.sha256(f"{fmt}\x00{instruction}".encode()).hexdigest()

    def get(self, tenant: str, user: str, model: str, fmt: str, instruction: str) -> Cached | None:
        key = (tenant, user, model, self.digest(fmt, instruction))
        with self._lock:
            hit = self._lru.get(key)
            if hit is not None:
                self._lru.move_to_end(key)
                return hit
            generation = self._generation
        db = self._db()
        if db is None:
            return None
        rows = db.execute(
            "SELECT rewrite, outcome FROM align_cache WHERE tenant = ? AND user = ? AND model = ? AND key = ?",
            key,
        )
        if not rows:
            return None
        found = Cached(rows[0][0], rows[0][1])
        self._remember(key, found, generation)
        return found

    def put(
        self,
        tenant: str,
        user: str,
        model: str,
        fmt: str,
        instruction: str,
        value: Cached,
        persist: bool,
        began: float | None = None,
    ) -> None:
        """Store a rewrite made for ``user``'s request, which began at ``began`` (``time.time()``; None: now)."""
        if not user:
            raise ValueError("rewrites are cached per user only")
        key = (tenant, user, model, self.digest(fmt, instruction))
        with self._lock:
            generation = self._generation
        db = self._db()
        if db is not None:
            args = tombstone_args(tenant, user, time.time() if began is None else began)
            if args is None:
                return
            if persist:
                sql = (
                    "INSERT OR REPLACE INTO align_cache (tenant, user, model, key, rewrite, outcome, created_at, "
                    f"origin) SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE {NOT_FORGOTTEN} RETURNING 1"
                )
                kept = db.execute(sql, (*key, value.rewrite, value.outcome, time.time(), user, *args))
            else:
                kept = db.execute(f"SELECT 1 WHERE {NOT_FORGOTTEN}", args)
            if not kept:  # the user was forgotten after the request began
                return
        self._remember(key, value, generation)

    def _remember(self, key: tuple[str, str, str, str], value: Cached, generation: int) -> None:
        """Keep an entry in memory, unless a forget ran since it was read or made (``generation``)."""
        with self._lock:
            if generation != self._generation:
                return
            self._lru[key] = value
            self._lru.move_to_end(key)
            while len(self._lru) > self.size:
                self._lru.popitem(last=False)

    # the user's rows (``origin`` is the user too; files from before steer cached per user only also had
    # tenant-wide rows, user '', with the requesting user in ``origin``: migration 6 deleted them)
    _MINE = "tenant = ? AND (user = ? OR origin = ?)"

    def export(self, tenant: str, user: str) -> list[dict[str, Any]]:
        """The persisted rewrites of one user's requests (the instruction itself is kept only as a hash)."""
        db = self._db()
        if db is None:
            return []
        rows = db.execute(
            f"SELECT model, rewrite, outcome, created_at FROM align_cache WHERE {self._MINE} ORDER BY created_at",
            (tenant, user, user),
        )
        keys = ("model", "rewrite", "outcome", "created_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def forget(self, tenant: str, user: str) -> int:
        """Drop every cached rewrite of one user's requests; how many persisted rows went."""
        with self._lock:
            self._generation += 1  # entries read or made before now are not kept in memory any more
            for key in [k for k in self._lru if k[0] == tenant and k[1] == user]:
                del self._lru[key]
        db = self._db()
        if db is None:
            return 0
        n = db.execute(f"SELECT count(*) FROM align_cache WHERE {self._MINE}", (tenant, user, user))[0][0]
        db.execute(f"DELETE FROM align_cache WHERE {self._MINE}", (tenant, user, user))
        return int(n)


# --- the shared embedder ----------------------------------------------------------------------------

shared_embedder = embeddings.shared_embedder  # one per model per process, shared with memory and scorers


# --- one rewrite, guarded ---------------------------------------------------------------------------

CompleteFn = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
EmbedderFn = Callable[[], Awaitable["Embedder"]]


@dataclass(slots=True)
class Outcome:
    """What the align stage decided for one instruction; ``trace()`` is what the trace shows."""

    decision: Decision
    reason: str
    original: str | None = None
    rewrite: str | None = None
    similarity: float | None = None
    length_ratio: float | None = None
    aligner_ms: float | None = None
    cached: bool = False
    missing: list[str] = field(default_factory=list)
    error: str | None = None
    raw: str | None = None  # the aligner's whole output: for evaluations, never in the trace

    def trace(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decision": self.decision, "reason": self.reason}
        for name in ("original", "rewrite", "similarity", "length_ratio", "aligner_ms", "error"):
            value = getattr(self, name)
            if value is not None:
                out[name] = round(value, 4) if isinstance(value, float) else value
        if self.missing:
            out["missing"] = self.missing
        if self.original is not None and self.decision != "skipped":
            out["cached"] = self.cached
        return out


def max_new_tokens(instruction: str, config: AlignConfig) -> int:
    """Enough tokens for the longest rewrite the length guard would accept (about 3 characters a token)."""
    longest = config.max_length_ratio * len(instruction)
    return max(32, min(config.max_tokens, int(longest / 3) + 48))


class Aligner:
    """Calls the aligner model and applies the guards; no knowledge of requests or metrics."""

    def __init__(self, complete: CompleteFn, embedder: EmbedderFn, cache: RewriteCache | None = None) -> None:
        self.complete = complete
        self.embedder = embedder
        self.cache = cache

    async def _call(self, instruction: str, config: AlignConfig, timeout: float) -> tuple[Cached, float]:
        body = {
            "model": config.model,
            "messages": [{"role": "user", "content": aligner_prompt(instruction, not config.trained)}],
            "temperature": 0,
            "max_tokens": max_new_tokens(instruction, config),
        }
        t0 = time.perf_counter()
        answer = await asyncio.wait_for(self.complete(config.model, body), timeout)
        ms = (time.perf_counter() - t0) * 1000
        choice = (answer.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content")
        raw = text if isinstance(text, str) else None
        rewrite = parse_rewrite(raw) if raw is not None else None
        if rewrite is not None:
            return Cached(rewrite, "parsed", raw), ms
        return Cached(None, "truncated" if choice.get("finish_reason") == "length" else "unparsed", raw), ms

    async def rewrite(
        self,
        instruction: str,
        config: AlignConfig,
        tenant: str = "",
        user: str = "",
        budget_s: float | None = None,
        began: float | None = None,
    ) -> Outcome:
        """One guarded rewrite of ``instruction``; ``budget_s`` bounds the whole of it (call and guards).
        The cache is the user's own (none without a user); ``began``: when the request began."""
        deadline = time.perf_counter() + (budget_s if budget_s is not None else config.timeout_s * 0.9)
        fmt = FORMATS[not config.trained]
        cache = self.cache if config.cache and user else None
        out = Outcome("kept", "", original=instruction)
        got: Cached | None = None
        if cache is not None:
            got = await asyncio.to_thread(cache.get, tenant, user, config.model, fmt, instruction)
            out.cached = got is not None
        if got is None:
            timeout = min(config.rewrite_timeout_s, max(deadline - time.perf_counter(), 0.001))
            try:
                got, out.aligner_ms = await self._call(instruction, config, timeout)
            except TimeoutError:
                out.reason, out.error = "timeout", f"no rewrite within {timeout:.3g}s"
                return out
            except Exception as exc:  # the aligner failing never fails the request: the original stays
                out.reason, out.error = "aligner_error", f"{type(exc).__name__}: {exc}"
                return out
            if cache is not None:
                await asyncio.to_thread(
                    cache.put, tenant, user, config.model, fmt, instruction, got, config.persist, began
                )
        rewrite, out.raw = got.rewrite, got.raw
        if rewrite is None:
            out.reason = "too_long" if got.outcome == "truncated" else "unparsed"
            return out
        out.rewrite = rewrite
        out.length_ratio = len(rewrite) / max(len(instruction), 1)
        if echoes_prompt(rewrite):
            out.reason = "echoed_prompt"
        elif _squash(rewrite) == _squash(instruction):
            out.reason = "unchanged"
        elif out.length_ratio > config.max_length_ratio:
            out.reason = "too_long"
        elif out.length_ratio < config.min_length_ratio:
            out.reason = "too_short"
        elif lost := missing_facts(instruction, rewrite, tuple(config.preserve)):
            out.reason, out.missing = lost
        if out.reason:
            return out
        if config.min_similarity > -1:
            remaining = deadline - time.perf_counter()
            try:
                out.similarity = await asyncio.wait_for(self.similarity(instruction, rewrite), max(remaining, 0.001))
            except TimeoutError:
                out.reason, out.error = "similarity_timeout", "the embedding model was not ready in time"
                return out
            except Exception as exc:
                out.reason, out.error = "similarity_error", f"{type(exc).__name__}: {exc}"
                return out
            if out.similarity < config.min_similarity:
                out.reason = "drift"
                return out
        out.decision, out.reason = "applied", "cache" if out.cached else "ok"
        return out

    async def similarity(self, a: str, b: str) -> float:
        embedder = await asyncio.shield(self.embedder())
        vectors = await asyncio.to_thread(embedder.encode, [a, b])
        return float(vectors[0] @ vectors[1])
