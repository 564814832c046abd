from __future__ import annotations

from retrieval.extract import RuleExtractor
from retrieval.sqlite_store import SqliteFaissStore
from retrieval.writer import MemoryWriter


def say(writer: MemoryWriter, text: str, conversation: str):
    return writer.ingest("t", "ann", [{"role": "user", "content": text}], conversation)


def test_restated_preference_is_merged_and_keeps_both_sources(store: SqliteFaissStore) -> None:
    writer = MemoryWriter(store, RuleExtractor())
    first = say(writer, "I strongly dislike spicy food.", "c1").added[0]
    again = say(writer, "I strongly dislike eating spicy food.", "c2")
    assert again.added == [] and [m.id for m in again.merged] == [first.id]
    assert store.get("t", "ann", first.id).sources == [("c1", 0), ("c2", 0)]
    assert len(store.list("t", "ann")) == 1


def test_newer_contradicting_statement_supersedes_the_older_one(store: SqliteFaissStore) -> None:
    writer = MemoryWriter(store, RuleExtractor())
    old = say(writer, "I love spicy food.", "c1").added[0]
    got = say(writer, "I no longer like spicy food.", "c2")
    assert [m.id for m in got.superseded] == [old.id]
    assert [m.text for m in store.list("t", "ann")] == ["I no longer like spicy food."]
    assert len(store.list("t", "ann", include_history=True)) == 2


def test_different_preferences_are_both_kept(store: SqliteFaissStore) -> None:
    writer = MemoryWriter(store, RuleExtractor())
    say(writer, "I love spicy food.", "c1")
    got = say(writer, "I hate horror movies.", "c2")
    assert len(got.added) == 1 and not got.merged and not got.superseded
    assert len(store.list("t", "ann")) == 2


def test_a_constraint_does_not_supersede_a_liking_on_a_nearby_subject(store: SqliteFaissStore) -> None:
    writer = MemoryWriter(store, RuleExtractor())
    say(writer, "I prefer gluten-free restaurants.", "c1")
    got = say(writer, "I avoid gluten because of a severe intolerance.", "c2")
    assert not got.superseded and len(store.list("t", "ann")) == 2


def test_an_agreeing_restatement_in_opposite_words_is_not_a_change_of_mind(store: SqliteFaissStore) -> None:
    writer = MemoryWriter(store, RuleExtractor())
    first = say(writer, "I strongly prefer cars with a manual transmission.", "c1").added[0]
    got = say(writer, "I dislike cars with automatic transmissions.", "c2")
    assert not got.superseded
    assert store.get("t", "ann", first.id).superseded_by is None
    assert len(store.list("t", "ann")) + len(got.merged) == 2 or got.merged  # kept, or merged: never lost


def test_a_restatement_merges_and_keeps_its_wording(store: SqliteFaissStore) -> None:
    writer = MemoryWriter(store, RuleExtractor())
    first = say(writer, "I have a fear of heights, so I avoid tall buildings.", "c1").added[0]
    got = say(writer, "I have an intense fear of heights, so I avoid tall buildings.", "c2")
    assert [m.id for m in got.merged] == [first.id] and not got.superseded
    meta = store.get("t", "ann", first.id).meta
    assert meta["restated"] == ["I have an intense fear of heights, so I avoid tall buildings."]


def test_a_contrast_in_either_statement_never_supersedes(store: SqliteFaissStore) -> None:
    writer = MemoryWriter(store, RuleExtractor())
    say(writer, "I prefer games without microtransactions.", "c1")
    got = say(writer, "I can't stand games with microtransactions.", "c2")
    assert not got.superseded


def test_a_stated_change_supersedes_even_with_the_same_polarity_words(store: SqliteFaissStore) -> None:
    writer = MemoryWriter(store, RuleExtractor())
    old = say(writer, "I avoid coffee.", "c1").added[0]
    got = say(writer, "I no longer avoid coffee.", "c2")
    assert [m.id for m in got.superseded] == [old.id]
