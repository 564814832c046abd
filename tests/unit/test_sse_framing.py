"""The upstream stream's framing: the byte-count check forwards plain reads as they came, and agrees
with the line-by-line check on everything else (errors, [DONE], reads cut anywhere)."""

from __future__ import annotations

import orjson
import pytest

from steer.upstreams.sse_framing import EventFramer, Framed, plain_events


def event(content: str) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


ERROR = b'data: {"error":{"message":"the model crashed","type":"server_error"}}\n\n'
DONE = b"data: [DONE]\n\n"


def feed_all(reads: list[bytes]) -> tuple[bytes, bool, str | None]:
    """Everything the framer forwards for these reads, whether it saw [DONE], the error's message."""
    framer = EventFramer("m")
    out = b""
    for block in reads:
        framed = framer.feed(block)
        out += framed.events
        if framed.error is not None:
            return out, framed.done, framed.error.message
        if framed.done:
            return out, True, None
    last = framer.finish()
    out += last.events
    return out, last.done, last.error.message if last.error else None


def cuts(raw: bytes) -> list[list[bytes]]:
    """``raw`` as one read, and as two reads cut at every position."""
    return [[raw]] + [[raw[:i], raw[i:]] for i in range(1, len(raw))]


def test_a_plain_read_is_forwarded_as_it_came() -> None:
    raw = event("a") + event("b") + event('say "error" twice\n')
    assert plain_events(raw)
    framed = EventFramer("m").feed(raw)
    assert framed.events == raw and not framed.done and framed.error is None


def test_done_ends_the_events_and_nothing_after_it_is_forwarded() -> None:
    raw = event("a") + event("b") + DONE
    for reads in cuts(raw + event("late")):
        assert feed_all(reads) == (raw, True, None)


def test_an_error_event_cut_across_two_reads_is_still_an_error_after_the_deltas_before_it() -> None:
    raw = event("a") + event("b") + ERROR + event("never")
    for reads in cuts(raw):
        out, done, message = feed_all(reads)
        assert (out, done) == (event("a") + event("b"), False), reads
        assert message == "m: the model crashed", reads


@pytest.mark.parametrize(
    "raw",
    [
        b": keep-alive\n\n" + event("a") + DONE,  # a comment
        b"event: message\n" + event("a") + DONE,  # an event: line
        event("a").replace(b"\n", b"\r\n") + DONE.replace(b"\n", b"\r\n"),  # CRLF
        event("a").replace(b"data: ", b"data:") + DONE,  # no space after data:
        event("a")[:-1] + b"data: [DONE]",  # one newline between events, no newline at the end
    ],
)
def test_other_framings_are_re_framed_line_by_line(raw: bytes) -> None:
    assert not plain_events(raw)
    for reads in cuts(raw):
        assert feed_all(reads) == (event("a") + DONE, True, None), reads


def test_a_line_that_is_not_a_json_object_is_an_error() -> None:
    out, done, message = feed_all([event("a") + b"data: not json\n\n" + DONE])
    assert (out, done) == (event("a"), False)
    assert message == "m: the upstream sent an event that is not a JSON object"


def test_an_end_without_done_is_seen_by_the_caller() -> None:
    assert feed_all([event("a"), event("b")]) == (event("a") + event("b"), False, None)


def test_a_read_without_a_whole_line_forwards_nothing_yet() -> None:
    framer = EventFramer("m")
    assert framer.feed(event("a")[:10]) == Framed(b"")
    assert framer.feed(event("a")[10:]).events == event("a")
