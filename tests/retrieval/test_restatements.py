"""Where the merge threshold comes from: pairs of statements written for this test in everyday
English (no benchmark item), two wordings of one preference against two different preferences."""

from __future__ import annotations

from retrieval.reconcile import MERGE_AT, RESTATED_SUBJECT_AT, restates

SAME = [
    ("I love hiking in the mountains.", "I really enjoy mountain hikes."),
    ("I prefer aisle seats on flights.", "I always choose an aisle seat when I fly."),
    ("I can't stand loud music in restaurants.", "I dislike restaurants that play loud music."),
    ("I don't drink coffee.", "I never drink coffee."),
    ("I hate cold weather.", "I really dislike the cold."),
    ("I avoid sugary drinks.", "I stay away from sweet sodas and juices."),
]
DIFFERENT = [
    ("I love jazz.", "I love classical music."),
    ("I avoid gluten.", "I avoid dairy."),
    ("I prefer aisle seats on flights.", "I prefer window seats on trains."),
    ("I'm allergic to cats.", "I'm allergic to peanuts."),
    ("I like minimalist furniture.", "I like minimalist clothing."),
    ("I hate cold weather.", "I hate hot weather."),  # antonyms: the texts are near, the subjects are not
]


def cos(embedder, a: str, b: str) -> float:
    va, vb = embedder.encode([a, b])
    return float(va @ vb)


def test_wordings_of_one_preference_are_near_and_different_preferences_mostly_far(embedder) -> None:
    same = [cos(embedder, a, b) for a, b in SAME]
    different = [cos(embedder, a, b) for a, b in DIFFERENT[:-1]]
    assert min(same) > max(different)
    assert max(different) < MERGE_AT <= max(same)


def test_antonyms_near_in_vector_space_are_not_restatements(embedder) -> None:
    assert cos(embedder, "I hate cold weather.", "I hate hot weather.") >= MERGE_AT  # why the subject check
    assert not restates(embedder, "cold weather", "hot weather")
    assert restates(embedder, "horror movies", "horror movie marathons")  # one contains the other
    assert restates(embedder, "loud music in restaurants", "restaurants that play loud music")
    assert RESTATED_SUBJECT_AT < MERGE_AT
