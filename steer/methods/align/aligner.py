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
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from retrieval import embeddings
from steer.methods.align.cache import Cached, RewriteCache
from steer.pipeline.stage import StageConfig
from steer.protocol import is_text_only, message_text

if TYPE_CHECKING:
    from retrieval.embeddings import Embedder

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


# --- the config (the align stage's policy section) -----------------------------------------------

GUIDANCE = (
    "A clearer statement of the user's latest request follows. It is a rewrite of the user's own words "
    "and carries no more authority than they do; answer the user's request, using it where it helps.\n"
    "{rewrite}"
)


class AlignConfig(StageConfig):
    timeout_s: float = Field(default=3.0, gt=0)  # the whole stage, guards included
    model: str = Field(min_length=1)  # the aligner: a name from the settings' `models`
    trained: bool = True  # false: a model not trained as P-Aligner; the prompt adds the principle list
    mode: Literal["replace", "guidance"] = "replace"
    guidance: str = GUIDANCE  # guidance mode: the system message; {rewrite} stands for the rewrite
    rewrite_timeout_s: float = Field(default=2.0, gt=0)  # the aligner call; past it the original stays
    max_tokens: int = Field(default=1024, ge=16, le=4096)  # also capped by max_length_ratio
    min_length_ratio: float = Field(default=0.5, ge=0)  # rewrite chars / original chars
    max_length_ratio: float = Field(default=6.0, gt=0)
    min_similarity: float = Field(default=0.6, ge=-1, le=1)  # embedding cosine to the original; -1: off
    preserve: tuple[Literal["code", "numbers", "names"], ...] = ("code", "numbers", "names")
    min_words: int = Field(default=3, ge=0)  # shorter turns are left alone
    max_chars: int = Field(default=8000, ge=1)  # longer turns are left alone
    skip_follow_ups: bool = True  # leave alone turns that lean on earlier turns
    follow_up_max_words: int = Field(default=6, ge=0)  # after earlier turns, this short is a follow-up
    cache: bool = True
    persist: bool = True  # keep the cache in SQLite too (a hash of the instruction, and the rewrite)
    # rewrites are cached per user only: a cache shared by a tenant's users would tell one user what
    # another asked (a hit shows as cached: true, and in the latency); `tenant` is refused at load
    cache_scope: str = "user"
    cache_size: int = Field(default=4096, ge=1)  # in-memory entries

    @field_validator("cache_scope")
    @classmethod
    def _per_user_only(cls, scope: str) -> str:
        if scope != "user":
            raise ValueError(
                f"cache_scope {scope!r} is not supported: rewrites are cached per user only, since a cache shared "
                "by users tells one user what another asked (a hit shows as cached: true and in the latency); "
                "remove the line or write cache_scope: user"
            )
        return scope

    @model_validator(mode="after")
    def _consistent(self) -> AlignConfig:
        if self.min_length_ratio >= self.max_length_ratio:
            raise ValueError("min_length_ratio must be below max_length_ratio")
        if "{rewrite}" not in self.guidance:
            raise ValueError("guidance must contain {rewrite}")
        return self



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
    if not is_text_only(last.get("content")):
        return "non_text"
    text = message_text(last.get("content"))
    if len(text.split()) < config.min_words:
        return "short_turn"
    if len(text) > config.max_chars:
        return "long_turn"
    earlier = any(m.get("role") in ("user", "assistant", "tool", "function") for m in messages[:-1])
    if earlier and config.skip_follow_ups and is_follow_up(text, config.follow_up_max_words):
        return "follow_up"
    return Turn(len(messages) - 1, text)


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
