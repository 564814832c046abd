"""Choice memories rendered short, and statements whose object only refers (no name) not stored.

Every sentence here is invented for these tests."""

from __future__ import annotations

import pytest

from retrieval.extract import RuleExtractor, Turn, choice_text, objectless, read_choice
from retrieval.packing import compact, compact_choice
from retrieval.tokens import count_tokens


@pytest.mark.parametrize(
    "subject",
    ["the other options", "The other ones", "that one", "it", "those choices", "them", "either of them",
     "What you suggested", "the rest", "the remaining alternatives", "these things"],
)
def test_a_subject_that_only_refers_is_objectless(subject: str) -> None:
    assert objectless(subject)


@pytest.mark.parametrize(
    "subject",
    ["the spicy ones", "the other options involving boats", "seafood", "one-pot meals", "of", "",
     "the glass and brass options", "Loud bars"],
)
def test_a_subject_that_names_something_is_not(subject: str) -> None:
    assert not objectless(subject)


def _user(*texts: str) -> list[Turn]:
    return [{"role": "user", "content": t} for t in texts]


@pytest.mark.parametrize(
    "sentence",
    [
        "The other ones don't really appeal to me.",
        "Honestly, the other options don't appeal to me at all.",
        "It doesn't really interest me.",
        "I don't like that one.",
        "I'm not a fan of the other choices.",
        "I really dislike those suggestions.",
        "I think the other options are worse.",
        "I find them a bit boring.",
        "It's not for me.",
    ],
)
def test_statements_without_an_object_are_not_stored(sentence: str) -> None:
    assert RuleExtractor().extract(_user(sentence)) == []


def test_a_statement_naming_its_object_keeps_it_as_its_subject() -> None:
    (found,) = RuleExtractor().extract(_user("Thanks, but the rooftop bars don't really appeal to me."))
    assert found.subject == "the rooftop bars" and found.polarity == "negative"
    (other,) = RuleExtractor().extract(_user("The other options involving long drives don't appeal to me."))
    assert "long drives" in other.subject


def test_a_demonstrative_with_a_name_or_a_quotation_is_an_object() -> None:
    (found,) = RuleExtractor().extract(_user("Those glossy ones just don't appeal to me."))
    assert found.subject == "Those glossy ones"
    (trips,) = RuleExtractor().extract(_user("Trips to Italy really don't appeal to me."))
    assert trips.subject == "Trips to Italy"
    (quoted,) = RuleExtractor().extract(_user('I especially like the "Pasta Fridays" idea.'))
    assert "Pasta Fridays" in quoted.subject


def test_a_choice_reply_stores_the_choice_and_not_its_objectless_refusal() -> None:
    turns: list[Turn] = [
        {"role": "user", "content": "What should I cook for the potluck?"},
        {
            "role": "assistant",
            "content": "Some ideas:\n1. A lentil and spinach curry.\n2. A slow-roasted pork shoulder.\n"
            "3. A tray of buttery croissants.",
        },
        {"role": "user", "content": "I'll go with the lentil curry. The other ones don't really appeal to me."},
    ]
    (found,) = RuleExtractor().extract(turns)
    assert found.kind == "implicit" and found.subject == "A lentil and spinach curry."
    chosen, declined = read_choice(found.text) or ("", [])
    assert chosen == "A lentil and spinach curry"
    assert declined == ["A slow-roasted pork shoulder", "A tray of buttery croissants"]


def test_choice_text_round_trips_and_other_texts_are_no_choice() -> None:
    text = choice_text("Take the night train.", ["Fly to Lisbon.", "Rent a camper van"])
    assert read_choice(text) == ("Take the night train", ["Fly to Lisbon", "Rent a camper van"])
    assert read_choice("I chose the salad bar.") is None
    assert read_choice("I prefer trains over planes.") is None


def test_a_choice_is_rendered_with_its_pick_whole_and_the_others_counted() -> None:
    declined = [
        "Book a week at an all-inclusive beach resort with nightly entertainment and a water park",
        "Join a guided coach tour of five capital cities in six days",
        "Rent a city-centre apartment close to the clubs and late-night bars",
    ]
    text = choice_text("Hike the coastal trail and stay in small family-run guesthouses", declined)
    line = compact(text)
    pick = "Hike the coastal trail and stay in small family-run guesthouses"
    assert line == f"I chose this over three others: {pick}."
    assert count_tokens(line) * 2 < count_tokens(text)
    assert compact_choice("Tea", ["Coffee"]) == "I chose this over one other: Tea."
    assert compact_choice("Tea", ["x"] * 7).startswith("I chose this over 7 others")


def test_a_reference_followed_by_what_it_names_is_kept() -> None:
    (app,) = RuleExtractor().extract(_user("I prefer option 2, the overnight ferry with a private cabin."))
    assert app.subject == "the overnight ferry with a private cabin"
    said = "The other ones don't appeal to me, as I prefer to avoid crowded beaches."
    (later,) = RuleExtractor().extract(_user(said))
    assert "crowded beaches" in later.subject and later.text.startswith("The other ones")
    assert RuleExtractor().extract(_user("I think option 1 is the best fit for me - a slow week of cycling."))
    assert RuleExtractor().extract(_user("I think option 1 is the best fit for me.")) == []
    # a reply about the assistant's own suggestions stays transient, whatever follows it
    assert RuleExtractor().extract(_user("I like your ideas, especially the herb garden!")) == []
