"""The recaller's block: real tokens within the budget, a caller's order kept, renderings never stale."""

from __future__ import annotations

from retrieval.recall import Recaller
from retrieval.sqlite_store import SqliteFaissStore
from retrieval.store import MemoryDraft
from retrieval.tokens import count_tokens

T = "t1"
# statements written for this test (everyday English)
STATEMENTS = [
    "I have a strong aversion to crowded beaches.",
    "I prefer aisle seats on long flights.",
    "I'm allergic to peanuts.",
    "I love quiet mountain villages.",
    "I never travel without my own pillow.",
    "I dislike early morning tours.",
]


def fill(store: SqliteFaissStore, user: str = "ann") -> None:
    store.add(T, user, [MemoryDraft(t, source_conversation=f"c{i}", source_turn=0) for i, t in enumerate(STATEMENTS)])


def test_the_block_holds_real_tokens_within_the_budget(store: SqliteFaissStore) -> None:
    fill(store)
    for budget in (8, 20, 40, 600):
        got = Recaller(store, budget_tokens=budget).for_prompt(T, "ann", "Plan me a beach holiday")
        assert got.tokens == sum(count_tokens(t) for t in got.texts) <= budget
    whole = Recaller(store, budget_tokens=600).for_prompt(T, "ann", "Plan me a beach holiday")
    assert whole.complete and len(whole.covered) == len(STATEMENTS)
    assert "I dislike crowded beaches." in whole.texts  # the compact rendering is what is injected


def test_a_ranking_given_by_the_caller_is_kept_as_given(store: SqliteFaissStore) -> None:
    fill(store)
    recaller = Recaller(store, budget_tokens=600)
    searched = recaller.top(T, "ann", "Plan me a beach holiday", 10)
    reordered = list(reversed(searched))  # e.g. a model's order
    got = recaller.for_prompt(T, "ann", "Plan me a beach holiday", hits=reordered)
    assert [m.id for m in got.memories] == [h.memory.id for h in reordered]
    assert got.scores == [h.score for h in reordered]  # scores stay the cosines (min_score compares them)


def test_an_edited_memory_is_rendered_again_and_renderings_stay_per_user(store: SqliteFaissStore) -> None:
    fill(store, "ann")
    fill(store, "bob")
    recaller = Recaller(store, budget_tokens=600)
    before = recaller.for_prompt(T, "ann", "beaches")
    (beach,) = [m for m in before.memories if "beaches" in m.text]
    store.update(T, "ann", beach.id, text="I have a strong aversion to pebble beaches.")
    after = recaller.for_prompt(T, "ann", "beaches")
    assert "I dislike pebble beaches." in after.texts and "I dislike crowded beaches." not in after.texts
    assert "I dislike crowded beaches." in recaller.for_prompt(T, "bob", "beaches").texts
    recaller.forget(T, "ann")
    assert recaller.for_prompt(T, "ann", "beaches").texts == after.texts
