from __future__ import annotations

import pytest

from retrieval.extract import RuleExtractor, polarity


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize(
    "statement",
    [
        "I prefer window seats on long flights.",
        "I can't stand the smell of lavender.",
        "I'm allergic to shellfish, so please keep that in mind.",
        "I have a severe lactose intolerance.",
        "I am vegan.",
        "I always travel with carry-on luggage only.",
        "I never drink alcohol.",
        "Please don't suggest anything with pork.",
        "I really don\u2019t enjoy cold weather activities.",
        "I find crowded museums overwhelming.",
    ],
)
def test_first_person_preference_statements_become_memories(statement: str) -> None:
    found = RuleExtractor().extract(user(f"Hi there. {statement} Can you help me plan a trip?"))
    assert len(found) == 1
    assert found[0].turn == 0 and found[0].kind == "explicit"
    assert found[0].text.startswith("I")


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "Make this grammatically correct: I like your watch. How long have you had it?",
        "I like the second answer better, can you expand it?",
        "def f(x):\n    # I prefer tabs\n    return x;",
        "Can you try again, no numbers please",
        "Do you prefer cats or dogs?",
        "He hates broccoli and she loves it.",
    ],
)
def test_questions_tasks_and_other_peoples_likes_are_not_memories(text: str) -> None:
    assert RuleExtractor().extract(user(text)) == []


def test_assistant_turns_are_never_read_as_the_users_preferences() -> None:
    turns = [{"role": "assistant", "content": "I love helping with travel plans."}]
    assert RuleExtractor().extract(turns) == []


def test_choosing_one_listed_option_becomes_an_implicit_memory() -> None:
    turns = [
        {"role": "user", "content": "Where should I eat lunch?"},
        {
            "role": "assistant",
            "content": "Options: 1. A gluten-free bakery with salads. 2. A pizza place. 3. A burger pub.",
        },
        {
            "role": "user",
            "content": "The gluten-free bakery sounds good. The other options don't work for me.",
        },
    ]
    (found,) = RuleExtractor().extract(turns)
    assert found.kind == "implicit" and found.turn == 2 and "gluten-free bakery" in found.text
    assert "pizza" in found.text.split("turned down")[1]


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("I love jazz.", "positive"),
        ("I no longer like jazz.", "negative"),
        ("I hate jazz.", "negative"),
        ("I am vegan.", "neutral"),
    ],
)
def test_polarity_separates_liking_from_rejection_and_constraints(sentence: str, expected: str) -> None:
    assert polarity(sentence) == expected


def test_options_written_in_one_sentence_and_a_pick_named_by_a_short_title() -> None:
    prose = (
        "There are several ways to learn it. You could watch a short documentary series, read a long "
        "academic textbook, or take an evening class at the library."
    )
    turns = [
        {"role": "assistant", "content": prose},
        {"role": "user", "content": "I think I'll go with the documentary. The others seem too heavy."},
    ]
    (found,) = RuleExtractor().extract(turns)
    assert "watch a short documentary series" in found.text.split("turned down")[0]
    assert "academic textbook" in found.text.split("turned down")[1]
    games = "Try these: 1. Tetris. 2. A sprawling open-world survival game. 3. A realistic war shooter."
    turns = [{"role": "assistant", "content": games}, {"role": "user", "content": "I'll go with Tetris."}]
    (found,) = RuleExtractor().extract(turns)
    assert found.subject == "Tetris."


def test_a_reply_naming_no_option_or_two_equally_is_not_a_choice() -> None:
    games = "Try these: 1. Tetris. 2. Chess. 3. A realistic war shooter."
    for reply in ("I'll go with something else entirely.", "I'll go with Tetris or Chess."):
        turns = [{"role": "assistant", "content": games}, {"role": "user", "content": reply}]
        assert RuleExtractor().extract(turns) == []
