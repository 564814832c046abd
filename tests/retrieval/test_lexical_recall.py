"""BM25 (``retrieval.lexical``) and the ``hybrid`` recall design built on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.lexical import BM25, stem, tokenize
from retrieval.recall import EXPANSION_LEAD, LEXICAL_WEIGHT, LexiconExpander, Recaller, lexical_document
from retrieval.sqlite_store import SqliteFaissStore
from retrieval.store import MemoryDraft
from steer.storage import open_database

T = "t1"


def drafts(*texts: str) -> list[MemoryDraft]:
    return [MemoryDraft(text) for text in texts]


@pytest.fixture
def expanded(tmp_path: Path, embedder) -> SqliteFaissStore:  # type: ignore[no-untyped-def]
    s = SqliteFaissStore(open_database(tmp_path / "memory.db"), embedder, expander=LexiconExpander())
    yield s
    s.close()


def test_tokenize_keeps_content_words_stemmed_and_drops_request_boilerplate() -> None:
    assert tokenize("Can you recommend some good restaurants for me in Rome?") == ["restaurant", "rome"]
    assert tokenize("Stories about boxes and glasses") == ["story", "box", "glass"]
    assert stem("bus") == "bus" and stem("class") == "class"


def test_bm25_ranks_the_document_with_the_rarer_shared_word_first_and_omits_the_rest() -> None:
    docs = [tokenize(t) for t in ("jazz concerts", "rock concerts", "rock festivals", "gardening")]
    index = BM25(docs)
    scores = index.scores(tokenize("jazz concerts tonight"))
    assert set(scores) == {0, 1}  # "gardening" and "rock festivals" share no word with the question
    assert scores[0] > scores[1] > 0
    norm = index.normalised(tokenize("jazz concerts tonight"))
    assert norm[0] == 1.0 and 0 < norm[1] < 1
    assert index.normalised(tokenize("weather")) == {}
    assert BM25([]).scores(["x"]) == {}


def test_a_memorys_lexical_document_holds_its_text_and_the_situations_once() -> None:
    text = "I have a severe gluten intolerance."
    doc = lexical_document(text, LexiconExpander().expand(text))
    assert doc.count("gluten") == 1 and "pasta" in doc and "bakery" in doc
    assert EXPANSION_LEAD.strip() not in " ".join(doc)


def test_hybrid_lifts_the_memory_that_shares_the_questions_content_word(expanded: SqliteFaissStore) -> None:
    expanded.add(T, "ann", drafts("I love long walks in the countryside.", "I only read books printed on paper."))
    question = "Which countryside walks are nice in autumn?"
    dense = Recaller(expanded).top(T, "ann", question, k=2)
    hybrid = Recaller(expanded, lexical_weight=LEXICAL_WEIGHT).top(T, "ann", question, k=2)
    assert hybrid[0].memory.text.startswith("I love long walks")
    by_id = {h.memory.id: h.score for h in dense}
    top = hybrid[0]
    assert top.score == pytest.approx(by_id[top.memory.id] + LEXICAL_WEIGHT)  # the best BM25 match gets the full bonus
    assert hybrid[1].score == pytest.approx(by_id[hybrid[1].memory.id])  # no shared word: dense score unchanged


def test_lexical_evidence_reorders_the_dense_candidates(expanded: SqliteFaissStore) -> None:
    a, b = expanded.add(T, "ann", drafts("I love jazz music.", "My cat Zorro is shy."))
    question = "Saxophone gigs for Zorro?"  # shares a content word with the cat memory only
    assert Recaller(expanded).top(T, "ann", question, k=2)[0].memory.id == a.id
    assert Recaller(expanded, lexical_weight=1.0).top(T, "ann", question, k=2)[0].memory.id == b.id


def test_the_lexical_index_follows_adds_updates_and_deletes(expanded: SqliteFaissStore) -> None:
    recaller = Recaller(expanded, lexical_weight=LEXICAL_WEIGHT)
    (a,) = expanded.add(T, "ann", drafts("I love sailing."))
    assert recaller.lexical_scores(T, "ann", "sailing trips") == {a.id: 1.0}
    (b,) = expanded.add(T, "ann", drafts("I collect vintage sailing maps."))
    assert set(recaller.lexical_scores(T, "ann", "sailing trips")) == {a.id, b.id}
    expanded.update(T, "ann", a.id, text="I love pottery.")
    assert set(recaller.lexical_scores(T, "ann", "sailing trips")) == {b.id}
    expanded.delete(T, "ann", b.id)
    assert recaller.lexical_scores(T, "ann", "sailing trips") == {}
    assert recaller.lexical_scores(T, "ann", "pottery") == {a.id: 1.0}


def test_forgetting_a_user_drops_their_lexical_index(expanded: SqliteFaissStore) -> None:
    recaller = Recaller(expanded, lexical_weight=LEXICAL_WEIGHT)
    expanded.add(T, "ann", drafts("I love sailing."))
    expanded.add(T, "bob", drafts("I love sailing too."))
    recaller.lexical_scores(T, "ann", "sailing")
    recaller.lexical_scores(T, "bob", "sailing")
    expanded.delete_user(T, "ann")
    recaller.forget(T, "ann")
    assert (T, "ann") not in recaller._lexical and (T, "bob") in recaller._lexical
    assert recaller.lexical_scores(T, "ann", "sailing") == {}


def test_hybrid_recall_never_returns_or_scores_another_users_memory(expanded: SqliteFaissStore) -> None:
    (mine,) = expanded.add(T, "ann", drafts("I prefer window seats."))
    (theirs,) = expanded.add(T, "bob", drafts("I am allergic to peanuts and avoid Thai satay."))
    (other_tenant,) = expanded.add("t2", "ann", drafts("I avoid peanuts in Thai food."))
    recaller = Recaller(expanded, lexical_weight=LEXICAL_WEIGHT)
    question = "Any Thai restaurants with peanut-free satay?"
    assert recaller.lexical_scores(T, "ann", question) == {}
    assert [h.memory.id for h in recaller.top(T, "ann", question, k=10)] == [mine.id]
    assert {m.id for m in recaller.for_prompt(T, "ann", question).memories} == {mine.id}
    assert theirs.id in recaller.lexical_scores(T, "bob", question)
    assert other_tenant.id in recaller.lexical_scores("t2", "ann", question)


def test_for_prompt_uses_the_hybrid_ranking(expanded: SqliteFaissStore) -> None:
    expanded.add(T, "ann", drafts("I love long walks in the countryside.", "I only read books printed on paper."))
    recaller = Recaller(expanded, lexical_weight=LEXICAL_WEIGHT)
    question = "Which countryside walks are nice in autumn?"
    packed = recaller.for_prompt(T, "ann", question)
    assert [m.id for m in packed.memories] == [h.memory.id for h in recaller.top(T, "ann", question, k=2)]
    assert packed.scores == [h.score for h in recaller.top(T, "ann", question, k=2)] and packed.complete


def test_the_servers_recall_stage_adds_the_lexical_bonus_through_http(make_steer) -> None:  # type: ignore[no-untyped-def]
    import httpx

    s = make_steer(
        policies={"default": "name: default\nextends: none\nstages:\n  recall: {}\n"},
        keys=[{"key": "admin", "tenant": "t1", "admin": True}],
    )
    headers = {"Authorization": "Bearer admin"}
    url = f"{s.url}/users/ann/memories"
    ids = {}
    for text in ("I love jazz music.", "My cat Zorro is shy."):
        r = httpx.post(url, headers=headers, json={"text": text}, timeout=60)
        assert r.status_code == 201
        ids[text] = r.json()["id"]
    question = "Saxophone gigs for Zorro?"
    r = httpx.post(
        s.url + "/chat/completions",
        headers={**headers, "X-Steer-Debug": "1"},
        json={"model": "stub", "user": "ann", "messages": [{"role": "user", "content": question}]},
        timeout=60,
    )
    assert r.status_code == 200
    recall = next(st for st in r.json()["steer"]["stages"] if st["name"] == "recall")
    injected = {m["id"]: m["score"] for m in recall["injected"]}
    store = s.services.memory._parts[0]
    dense = {h.memory.id: h.score for h in Recaller(store).top("t1", "ann", question, k=2)}
    cat, jazz = ids["My cat Zorro is shy."], ids["I love jazz music."]
    assert injected[cat] == pytest.approx(dense[cat] + LEXICAL_WEIGHT, abs=1e-3)  # shares "zorro"
    assert injected[jazz] == pytest.approx(dense[jazz], abs=1e-3)  # shares no content word
