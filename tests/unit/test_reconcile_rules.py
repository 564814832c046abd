"""The reconciler's rules without a model: what is the same object, a contrast, a stated change."""

from __future__ import annotations

import pytest

from retrieval.extract import Extracted
from retrieval.reconcile import agrees, changes_mind, is_contrast, same_object, says_change, stance
from retrieval.store import Memory


def memory(text: str, polarity: str) -> Memory:
    return Memory(1, "t", "u", text, "explicit", "c1", 0, 0.0, 0.0, meta={"polarity": polarity, "subject": text})


def item(text: str, polarity: str, subject: str) -> Extracted:
    return Extracted(text, "explicit", 0, polarity, subject)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("spicy food", "spicy food", True),
        ("horror movies", "horror movie marathons", True),
        ("manual transmission vehicles", "cars with automatic transmissions", False),
        ("jazz", "heavy metal", False),
        ("", "jazz", False),
    ],
)
def test_same_object_needs_most_content_words_shared(a: str, b: str, same: bool) -> None:
    assert same_object(a, b) is same


@pytest.mark.parametrize(
    ("text", "contrast"),
    [
        ("I prefer trains rather than planes.", True),
        ("I like gluten-free bread.", True),
        ("I choose hotels without carpets.", True),
        ("I have a stance against fast fashion.", True),
        ("I love spicy food.", False),
        ("I don't like spicy food.", False),
    ],
)
def test_contrasts_are_recognised(text: str, contrast: bool) -> None:
    assert is_contrast(text) is contrast


@pytest.mark.parametrize(
    ("text", "change"),
    [
        ("I no longer eat meat.", True),
        ("I used to love horror films.", True),
        ("I don't watch TV anymore.", True),
        ("These days I prefer tea.", True),
        ("I love tea.", False),
    ],
)
def test_stated_changes_are_recognised(text: str, change: bool) -> None:
    assert says_change(text) is change


def test_opposite_polarity_is_a_change_of_mind_only_without_a_contrast() -> None:
    old = memory("I love spicy food.", "positive")
    assert changes_mind(item("I hate spicy food.", "negative", "spicy food"), old)
    assert not changes_mind(item("I love spicy food.", "positive", "spicy food"), old)
    contrast = memory("I prefer games without microtransactions.", "positive")
    assert not changes_mind(item("I can't stand games with microtransactions.", "negative", "games"), contrast)


def test_neutral_or_equal_polarities_agree() -> None:
    assert agrees("neutral", "negative") and agrees("positive", "positive") and agrees(None, "negative")
    assert not agrees("positive", "negative")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("I prefer trains since I avoid flying whenever I can.", "positive"),  # a reason is another statement
        ("I enjoy board games that don't take all night.", "positive"),  # negation inside the object
        ("I like city breaks, but I can't stand crowds.", "positive"),
        ("I don't like cold showers.", "negative"),
        ("I can't stand loud restaurants because I can't hear anyone.", "negative"),
        ("I'm vegetarian.", "neutral"),
    ],
)
def test_the_stance_is_read_on_the_main_clause(text: str, want: str) -> None:
    assert stance(text) == want


def test_an_agreeing_restatement_with_an_aversion_in_its_reason_is_not_a_change_of_mind() -> None:
    old = memory("I prefer trains.", "positive")
    assert not changes_mind(item("I prefer trains since I avoid flying.", "negative", "trains"), old)
    assert not changes_mind(item("I prefer trains that don't stop everywhere.", "negative", "trains"), old)
    assert changes_mind(item("I don't like trains.", "negative", "trains"), old)
