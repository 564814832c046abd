"""The inspector's session tokens, CSRF tokens and origin rule, and the pieces its pages draw with."""

from __future__ import annotations

from steer.server.ui.sessions import NO_KEY, Sessions, cookie_header, same_origin
from steer.server.ui.views import bars, word_diff


def test_a_session_token_reads_back_and_any_change_to_it_is_refused() -> None:
    sessions = Sessions(b"k" * 32, hours=1)
    token = sessions.issue("ab" * 32)
    read = sessions.read(token)
    assert read is not None and read[0] == "ab" * 32
    body, _, sig = token.rpartition(".")
    assert sessions.read(body + "." + sig[:-1] + ("0" if sig[-1] != "0" else "1")) is None
    assert sessions.read(body[:-2] + "." + sig) is None
    assert Sessions(b"x" * 32, hours=1).read(token) is None  # another secret signed it
    assert sessions.read(None) is None and sessions.read("") is None and sessions.read("garbage") is None
    no_key = sessions.read(sessions.issue(None))
    assert no_key is not None and no_key[0] == NO_KEY


def test_an_expired_session_is_refused() -> None:
    sessions = Sessions(b"k" * 32, hours=1)
    sessions.lifetime = -1
    assert sessions.read(sessions.issue("ab")) is None


def test_csrf_tokens_are_per_session() -> None:
    sessions = Sessions(b"k" * 32, hours=1)
    one, two = (sessions.read(sessions.issue("ab")) for _ in range(2))
    assert one is not None and two is not None
    assert sessions.check_csrf(one[1], sessions.csrf(one[1]))
    assert not sessions.check_csrf(one[1], sessions.csrf(two[1]))
    assert not sessions.check_csrf(one[1], None) and not sessions.check_csrf(one[1], "")


def test_same_origin_compares_the_origin_with_the_host() -> None:
    assert same_origin({"host": "127.0.0.1:8400", "origin": "http://127.0.0.1:8400"})
    assert not same_origin({"host": "127.0.0.1:8400", "origin": "http://evil.example"})
    assert not same_origin({"host": "127.0.0.1:8400", "origin": "null"})
    assert same_origin({"host": "127.0.0.1:8400"})  # no Origin: not a browser form from a page
    assert not same_origin({"host": "127.0.0.1:8400", "sec-fetch-site": "cross-site"})


def test_the_session_cookie_is_httponly_and_strict() -> None:
    header = cookie_header("steer_ui", "v", 60, secure=True)
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Secure" in header and "Path=/ui" in header


def test_word_diff_marks_what_the_rewrite_removed_and_added() -> None:
    assert word_diff("find me a steak place", "find me a vegetarian place") == [
        ("same", "find me a"),
        ("del", "steak"),
        ("ins", "vegetarian"),
        ("same", "place"),
    ]


def test_bars_scale_to_the_largest_magnitude_around_a_zero_line() -> None:
    chart = bars([("a", 1.0), ("b", -0.5)], width=200)
    a, b = chart["rows"]
    assert chart["zero"] == 100 and a["x"] == 100 and a["w"] == 100 and b["w"] == 50 and b["x"] == 50
    assert bars([("p", 0.25), ("q", 1.0)], width=100)["rows"][0]["w"] == 25
