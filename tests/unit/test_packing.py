"""Packing recalled memories: compact renderings keep polarity and object; the budget is honoured."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.extract import RuleExtractor, polarity
from retrieval.packing import Candidate, compact, content_words, object_words, pack
from retrieval.tokens import count_tokens

# statements written for this test (everyday English), with the object each one is about
STATEMENTS = [
    "I really strongly dislike crowded shopping malls because the noise gives me headaches.",
    "I would absolutely prefer aisle seats on long flights since I like to stretch my legs.",
    "I do not eat any red meat due to my cholesterol.",
    "I am completely vegetarian, as I care about animal welfare.",
    "I truly love hiking in the mountains during autumn.",
    "I never drink coffee after lunch, so please keep that in mind.",
    "Due to a bad knee, I avoid running on concrete.",
    "I no longer enjoy watching horror films.",
    "I always travel with hand luggage only.",
    "I find loud open-plan offices exhausting.",
    "I'm not really into team sports.",
    "I cannot stand the smell of strong perfume.",
    "I have a strong aversion to crowded beaches.",
    "I have a slight preference for window seats.",
    "I'm not a big fan of musicals with long dance numbers.",
    "I avoid any kind of deep-fried snacks.",
    "Cold weather isn't for me.",
    "Spicy food and I don't get along.",
    "I'm trying to cut back on sugar.",
    "I'm someone who really likes a clear plan.",
]


@pytest.mark.parametrize("statement", STATEMENTS)
def test_a_compact_rendering_keeps_the_polarity_and_the_object(statement: str) -> None:
    (item,) = RuleExtractor().extract([{"role": "user", "content": statement}])
    short = compact(item.text, item.subject)
    assert polarity(short) == polarity(item.text)
    assert object_words(item.subject) <= content_words(short), (item.subject, short)
    assert count_tokens(short) <= count_tokens(item.text)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("I do not eat any red meat due to my cholesterol.", "I don't eat red meat."),
        (
            "I would absolutely prefer aisle seats on long flights since I like to stretch.",
            "I prefer aisle seats on long flights.",
        ),
        ("Due to a bad knee, I avoid running on concrete.", "I avoid running on concrete."),
        # a stance said as a noun gets its verb; grading adjectives go as grading adverbs do
        ("I have a strong aversion to crowded beaches.", "I dislike crowded beaches."),
        ("I have a deep-seated dislike of board games.", "I dislike board games."),
        ("I feel an intense distaste for reality shows.", "I dislike reality shows."),
        ("I'm not a big fan of musicals.", "I dislike musicals."),
        ("I avoid any kind of deep-fried snacks.", "I avoid deep-fried snacks."),
    ],
)
def test_reasons_intensifiers_and_idle_quantifiers_go(text: str, kept: str) -> None:
    assert compact(text) == kept


@pytest.mark.parametrize(
    "text",
    [
        "I'd pick a quiet cabin over a busy resort any day.",
        "I could eat noodles all week.",
        "I don't drink soda any more.",
    ],
)
def test_time_and_degree_phrases_are_not_idle_quantifiers(text: str) -> None:
    assert compact(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "I always travel with hand luggage only.",  # restriction and frequency words are meaning
        "I no longer enjoy watching horror films.",
        "I usually avoid fried food.",  # a hedge changes what is claimed
        "I never fly.",
        "I have a slight preference for window seats.",  # a downtoner is not a grading word to drop
    ],
)
def test_frequency_restriction_and_hedges_stay(text: str) -> None:
    short = compact(text)
    for word in ("always", "only", "no longer", "usually", "never", "slight"):
        assert (word in text) == (word in short)


def test_a_rendering_that_would_flip_the_polarity_is_not_used() -> None:
    # cutting the reason would leave a plain liking: the original is kept
    text = "I prefer aisle seats because I don't like feeling trapped."
    assert polarity(compact(text)) == polarity(text)


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_pack_honours_the_budget_and_skips_what_does_not_fit() -> None:
    cands = [
        Candidate(0, "x", 0.9, unit(1, 0, 0), cost=10),
        Candidate(1, "y", 0.8, unit(0, 1, 0), cost=50),  # does not fit what is left
        Candidate(2, "z", 0.7, unit(0, 0, 1), cost=5),
    ]
    lines = pack(cands, 20)
    assert [ln.candidate.key for ln in lines] == [0, 2]
    assert sum(ln.candidate.tokens for ln in lines) <= 20


def test_a_restatement_is_folded_into_its_line_without_spending_tokens() -> None:
    cands = [
        Candidate(0, "I love jazz.", 0.9, unit(1, 0.05, 0), cost=4),
        Candidate(1, "I really love jazz music.", 0.85, unit(1, 0.0, 0), cost=6),  # cosine ~1: the same preference
        Candidate(2, "I hate flying.", 0.5, unit(0, 0, 1), cost=4),
    ]
    lines = pack(cands, 8)  # room for two short lines
    assert [ln.keys for ln in lines] == [[0, 1], [2]]


def test_an_opposite_statement_is_never_folded_into_a_line() -> None:
    cands = [
        Candidate(0, "I love jazz.", 0.9, unit(1, 0, 0)),
        Candidate(1, "I don't like jazz.", 0.85, unit(1, 0.01, 0)),
    ]
    assert [ln.keys for ln in pack(cands, 100)] == [[0], [1]]


def test_diversity_prefers_another_facet_over_a_near_duplicate() -> None:
    cands = [
        Candidate(0, "a", 0.9, unit(1, 0, 0), cost=2),
        Candidate(1, "b", 0.89, unit(1, 0.5, 0), cost=2),  # close to 0, not a restatement
        Candidate(2, "c", 0.8, unit(0, 0, 1), cost=2),
    ]
    plain = pack(cands, 4, fold_at=None)
    diverse = pack(cands, 4, fold_at=None, diversity=0.5)
    assert [ln.candidate.key for ln in plain] == [0, 1]
    assert [ln.candidate.key for ln in diverse] == [0, 2]
