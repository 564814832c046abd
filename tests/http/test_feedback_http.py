"""Feedback and profiles through the real HTTP path: errors, online updates, key scoping, SDK."""

from __future__ import annotations

import sqlite3

import pytest
from helpers import bearer
from test_rerank_http import ADMIN, ALICE, BOB, KEYS, NO_EMB, SHORT, chat, fake_upstream, models, policy

__all__ = ["fake_upstream"]  # the fixture, shared with the rerank tests


@pytest.fixture
def s(make_app, fake_upstream):
    # log_prompts: an edit is scored against the kept context, which only such a policy keeps
    logged = policy(NO_EMB).replace("extends: none\n", "extends: none\nlog_prompts: true\n")
    return make_app(policies={"default": logged}, models=models(fake_upstream), keys=KEYS)


def feedback(s, headers=ADMIN, **body):
    return s.http.post(s.url + "/feedback", headers=headers, json=body, timeout=30)


def profile(s, user, headers=ADMIN, **params):
    return s.http.get(f"{s.url}/users/{user}/profile", headers=headers, params=params, timeout=30)


def test_feedback_on_an_unknown_completion_is_404(s):
    r = feedback(s, completion_id="chatcmpl-nope", rating=1)
    assert r.status_code == 404 and r.json()["error"]["param"] == "completion_id"


def test_feedback_on_another_users_completion_is_404_like_an_unknown_one(s):
    cid = chat(s, n=2, user="alice", headers=ALICE).json()["id"]
    r = feedback(s, headers=BOB, completion_id=cid, rating=1)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == feedback(s, headers=BOB, completion_id="x", rating=1).json()["error"][
        "message"
    ].replace("'x'", repr(cid))
    other_tenant = feedback(s, headers=bearer("t2-admin"), completion_id=cid, rating=1)
    assert other_tenant.status_code == 404
    assert feedback(s, completion_id=cid, rating=1, user="bob").status_code == 404
    assert feedback(s, headers=ALICE, completion_id=cid, rating=1).status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"rating": 1.5}, "rating"),
        ({"rating": -3}, "rating"),
        ({"rating": "good"}, "rating"),
        ({"choice": 7}, "choice"),
        ({"rating": 1, "choice": 0}, "rating"),
        ({}, "rating"),
        ({"edit": "  "}, "edit"),
        ({"rating": 1, "index": 5}, "index"),
        ({"rating": 1, "bogus": 1}, "bogus"),
    ],
)
def test_bad_feedback_is_a_400_naming_the_field(s, body, param):
    cid = chat(s, n=2, user="alice").json()["id"]
    r = feedback(s, completion_id=cid, **body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"


def test_choosing_the_short_answer_moves_the_users_weight_toward_concise_only_for_that_user(s):
    before = profile(s, "alice").json()
    bob_before = profile(s, "bob").json()
    for _ in range(3):
        r = chat(s, n=4, user="alice")
        short_at = [c["message"]["content"] for c in r.json()["choices"]].index(SHORT)
        fb = feedback(s, completion_id=r.json()["id"], choice=short_at)
        assert fb.status_code == 200 and fb.json()["pairs"] == 3
    after = profile(s, "alice").json()
    assert after["events"] == 3
    assert after["weights"]["concise"] > before["weights"]["concise"] + 0.1
    assert profile(s, "bob").json() == bob_before
    db = sqlite3.connect(s.settings.database)
    assert db.execute("SELECT count(*), min(user), max(user) FROM feedback").fetchone() == (3, "alice", "alice")


def test_a_good_rating_and_an_edit_each_update_the_profile(s):
    r = chat(s, n=2, user="alice")
    first = profile(s, "alice").json()["weights"]
    rated = feedback(s, completion_id=r.json()["id"], rating=1)
    assert rated.status_code == 200 and rated.json()["pairs"] == 1
    assert rated.json()["profile"]["weights"] != first
    edited = feedback(s, completion_id=r.json()["id"], edit="- one\n- two\n- three")
    assert edited.status_code == 200 and edited.json()["pairs"] == 1
    assert edited.json()["profile"]["weights"]["structured"] > rated.json()["profile"]["weights"]["structured"]


def test_profile_get_and_put_respect_key_scope(s):
    assert profile(s, "alice", headers=ALICE).status_code == 200
    assert profile(s, "bob", headers=ALICE).status_code == 403
    r = s.http.put(f"{s.url}/users/bob/profile", headers=ALICE, json={"weights": {"concise": 2}}, timeout=30)
    assert r.status_code == 403
    r = s.http.put(
        f"{s.url}/users/alice/profile",
        headers=ALICE,
        json={"weights": {"concise": 2}, "pinned": {"formal": -1}},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (
        body["weights"]["concise"] == 2.0 and body["weights"]["formal"] == -1.0 and body["pinned"] == {"formal": -1.0}
    )
    assert profile(s, "alice", headers=ALICE).json()["weights"] == body["weights"]


def test_put_profile_rejects_unknown_attributes_and_bad_values(s):
    url = f"{s.url}/users/alice/profile"
    r = s.http.put(url, headers=ADMIN, json={"weights": {"funny": 1}}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_attribute"
    assert s.http.put(url, headers=ADMIN, json={"pinned": {"concise": "x"}}, timeout=30).status_code == 400
    assert s.http.put(url, headers=ADMIN, json={"scorer": "nope"}, timeout=30).status_code == 400


def test_pinned_weights_never_move_with_feedback_and_reset_forgets(s):
    s.http.put(f"{s.url}/users/alice/profile", headers=ADMIN, json={"pinned": {"concise": -1.0}}, timeout=30)
    r = chat(s, n=4, user="alice")
    short_at = [c["message"]["content"] for c in r.json()["choices"]].index(SHORT)
    fb = feedback(s, completion_id=r.json()["id"], choice=short_at).json()
    assert fb["profile"]["weights"]["concise"] == -1.0
    reset = s.http.put(f"{s.url}/users/alice/profile", headers=ADMIN, json={"reset": True}, timeout=30).json()
    assert reset["events"] == 0 and reset["pinned"] == {}


def test_sdk_helpers_reach_feedback_and_profiles(s):
    client = s.client(api_key="t1-admin", user="alice")
    r = client.chat.completions.create(model="fake", n=2, messages=[{"role": "user", "content": "pack?"}])
    fb = client.feedback(r.id, rating=1)
    assert fb["pairs"] == 1
    assert client.profile()["events"] == 1
    assert client.set_profile(weights={"concise": 1.5})["weights"]["concise"] == 1.5


def test_export_holds_the_users_profile_served_completions_and_feedback_and_no_one_elses(s):
    r = chat(s, n=2, user="alice")
    assert feedback(s, completion_id=r.json()["id"], rating=1).status_code == 200
    chat(s, n=2, user="bob")
    export = s.http.get(f"{s.url}/users/alice/export", headers=ADMIN, timeout=30).json()
    assert [f["completion_id"] for f in export["feedback"]] == [r.json()["id"]]
    assert [c["completion_id"] for c in export["served_completions"]] == [r.json()["id"]]
    assert export["user_profiles"] and export["user_profiles"][0]["events"] == 1
