"""Cheap text signals for the ``features`` scorer: length, structure, code, reading ease, formality,
sentiment. Pure Python and regular expressions, microseconds per answer, no model.

Every function maps a text to a float inside the range the scorer declares for it.
"""

from __future__ import annotations

import re

WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019-]*|\d+(?:[.,]\d+)*")
SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
VOWEL_GROUP = re.compile(r"[aeiouy]+")
NO_VOWEL_WORD = re.compile(r"(?<!\S)[^aeiouy\s]+(?!\S)")  # in lower-case words joined by spaces
LIST_LINE = re.compile(r"^\s*(?:[-*+•]\s+|\d{1,3}[.)]\s+|#{1,6}\s+|\|.*\|\s*$)")
FENCE = re.compile(r"```.*?(?:```|$)", re.S)
INLINE_CODE = re.compile(r"`[^`\n]+`")
CONTRACTION = re.compile(r"\b\w+(?:'|\u2019)(?:s|t|re|ve|ll|d|m)\b", re.I)
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")

INFORMAL = frozenset(
    [
        "hey",
        "hi",
        "yeah",
        "yep",
        "nope",
        "ok",
        "okay",
        "gonna",
        "wanna",
        "gotta",
        "kinda",
        "sorta",
        "lol",
        "omg",
        "btw",
        "cool",
        "awesome",
        "stuff",
        "guys",
        "dude",
        "totally",
        "super",
        "pretty",
        "basically",
        "anyway",
        "yay",
        "wow",
        "huh",
        "hmm",
        "ya",
        "nah",
        "tbh",
        "imo",
    ]
)
FORMAL = frozenset(
    [
        "therefore",
        "however",
        "furthermore",
        "moreover",
        "consequently",
        "regarding",
        "thus",
        "hence",
        "accordingly",
        "whereas",
        "nevertheless",
        "notwithstanding",
        "additionally",
        "subsequently",
        "respectively",
        "pursuant",
        "herein",
        "thereby",
        "approximately",
        "sufficient",
        "demonstrate",
        "facilitate",
        "utilize",
        "obtain",
        "require",
        "provide",
        "ensure",
    ]
)
POSITIVE = frozenset(
    [
        "good",
        "great",
        "excellent",
        "wonderful",
        "amazing",
        "happy",
        "glad",
        "love",
        "enjoy",
        "best",
        "better",
        "perfect",
        "nice",
        "helpful",
        "delightful",
        "fantastic",
        "beautiful",
        "pleasant",
        "recommend",
        "success",
        "successful",
        "benefit",
        "benefits",
        "easy",
        "favorite",
        "fun",
        "exciting",
        "delicious",
        "comfortable",
        "safe",
        "healthy",
        "popular",
        "positive",
        "thanks",
        "welcome",
        "ideal",
        "impressive",
        "charming",
        "cozy",
        "relaxing",
        "friendly",
        "reliable",
    ]
)
NEGATIVE = frozenset(
    [
        "bad",
        "poor",
        "terrible",
        "awful",
        "horrible",
        "sad",
        "angry",
        "hate",
        "worst",
        "worse",
        "wrong",
        "difficult",
        "hard",
        "problem",
        "problems",
        "fail",
        "failure",
        "risk",
        "risky",
        "dangerous",
        "unfortunately",
        "sorry",
        "painful",
        "boring",
        "expensive",
        "unhealthy",
        "negative",
        "annoying",
        "ugly",
        "broken",
        "harmful",
        "avoid",
        "disappointing",
        "stressful",
        "unsafe",
        "uncomfortable",
        "crowded",
        "noisy",
    ]
)


def words(text: str) -> list[str]:
    return WORD.findall(text)


def signals(text: str, scale_words: float = 100.0) -> list[float]:
    """The six signals at once, the text split into words once:
    [concise, structured, code, simple, formal, positive]."""
    ws = words(text)
    lower = [w.lower() for w in ws]
    return [
        _concise(ws, scale_words),
        structured(text),
        code(text),
        _simple(text, ws),
        _formal(text, ws, lower),
        _positive(lower),
    ]


def concise(text: str, scale_words: float = 100.0) -> float:
    """1 for an empty answer, 0.5 at ``scale_words`` words, toward 0 as the answer grows."""
    return _concise(words(text), scale_words)


def _concise(ws: list[str], scale_words: float) -> float:
    return 1.0 / (1.0 + len(ws) / scale_words)


def structured(text: str) -> float:
    """The share of non-empty lines that are list items, headings or table rows."""
    lines = [line for line in FENCE.sub("", text).splitlines() if line.strip()]
    if not lines:
        return 0.0
    return sum(1 for line in lines if LIST_LINE.match(line)) / len(lines)


def code(text: str) -> float:
    """The share of characters in fenced or inline code."""
    if not text:
        return 0.0
    inside = sum(len(m) for m in FENCE.findall(text))
    inside += sum(len(m) for m in INLINE_CODE.findall(FENCE.sub("", text)))
    return min(1.0, inside / len(text))


def syllables(ws: list[str]) -> int:
    """Syllables of these words: vowel groups (a silent final e dropped), at least one a word.

    Counted on all the words joined (a vowel group never spans two words), then corrected for the
    few words with no vowel or a silent final e: one pattern search per word only for those.
    """
    joined = " ".join(ws).lower()
    total = len(VOWEL_GROUP.findall(joined)) + len(NO_VOWEL_WORD.findall(joined))
    final_e = [w for w in joined.split() if w.endswith("e") and not w.endswith(("le", "ee"))]
    return total - sum(1 for w in final_e if len(VOWEL_GROUP.findall(w)) > 1)


def simple(text: str) -> float:
    """Flesch reading ease, clipped to 0-100 and scaled to 0-1 (1: easiest to read)."""
    return _simple(text, words(text))


def _simple(text: str, all_words: list[str]) -> float:
    ws = [w for w in all_words if w[0].isalpha()]
    if not ws:
        return 1.0
    sentences = max(1, len(SENTENCE_END.findall(text)))
    ease = 206.835 - 1.015 * (len(ws) / sentences) - 84.6 * (syllables(ws) / len(ws))
    return min(100.0, max(0.0, ease)) / 100.0


def formal(text: str) -> float:
    """A lexical formality score in 0-1: formal connectives and long words up; contractions,
    slang, exclamation marks and emoji down. 0.5 is neutral."""
    ws = words(text)
    return _formal(text, ws, [w.lower() for w in ws])


def _formal(text: str, ws: list[str], lower: list[str]) -> float:
    if not ws:
        return 0.5
    n = len(ws)
    bare = [w.strip("'\u2019") for w in lower]
    informal = sum(map(INFORMAL.__contains__, bare)) + len(CONTRACTION.findall(text))
    informal += text.count("!") + 2 * len(EMOJI.findall(text))
    formal_hits = sum(map(FORMAL.__contains__, bare))
    long_words = sum(1 for w in ws if len(w) >= 9) / n
    raw = 3.0 * (formal_hits / n) - 4.0 * (informal / n) + 1.5 * (long_words - 0.1)
    return min(1.0, max(0.0, 0.5 + raw))


def positive(text: str) -> float:
    """Lexicon sentiment in -1..1: (positive - negative) / (positive + negative + 1)."""
    return _positive([w.lower() for w in words(text)])


def _positive(lower: list[str]) -> float:
    pos = sum(map(POSITIVE.__contains__, lower))
    neg = sum(map(NEGATIVE.__contains__, lower))
    return (pos - neg) / (pos + neg + 1)


def head(text: str, max_words: int) -> str:
    """The first ``max_words`` words of a text (what is embedded for relevance)."""
    if max_words <= 0:
        return text
    parts = text.split(maxsplit=max_words)
    return " ".join(parts[:max_words])
