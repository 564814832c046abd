"""Cutting an upstream's SSE bytes into runs of whole events, checked without decoding them.

The common case, a read of ``data: {...}\\n\\n`` events written the way every OpenAI-compatible server
writes them (one space after ``data:``, no comments, no ``\\r``, no error object), is recognised by a
few byte counts over the read and forwarded as it came. Anything else (an ``"error"`` anywhere in
it, comments, ``event:`` lines, CRLF framing, a line that is not a JSON object) goes through the
line-by-line check, which re-frames each event and stops at the first bad one, so both ways give
the client the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from steer.errors import UpstreamError
from steer.protocol import SSE_DONE

_SEP = b"}\n\ndata: {"  # between two well-formed events


@dataclass(slots=True)
class Framed:
    """What one read gave: the events to forward (``data: [DONE]`` last when it came: ``done``), the error to
    raise after them."""

    events: bytes
    done: bool = False
    error: UpstreamError | None = None


def plain_events(run: bytes) -> bool:
    """``run`` is only ``data: {...}\\n\\n`` events, none of them an error: every newline in it is one of
    the two of an event's end, each event starts with ``data: {`` and its line ends with ``}``."""
    return (
        run.startswith(b"data: {")
        and run.endswith(b"}\n\n")
        and run.count(b"\n") == 2 * (run.count(_SEP) + 1)
        and b"\r" not in run
        and b'"error"' not in run
    )


class EventFramer:
    """Fed an upstream's reads in order; gives back the complete lines' events (a line cut by a read
    waits for the next one)."""

    __slots__ = ("model", "pending")

    def __init__(self, model: str) -> None:
        self.model = model  # the steer model, named in errors
        self.pending = b""

    def feed(self, block: bytes) -> Framed:
        data = self.pending + block if self.pending else block
        cut = data.rfind(b"\n") + 1
        run, self.pending = data[:cut], data[cut:]
        if not run:
            return Framed(b"")
        if run.endswith(SSE_DONE):  # the last read of a stream
            events = run[: -len(SSE_DONE)]
            if not events or plain_events(events):
                return Framed(run, done=True)
        elif plain_events(run):
            return Framed(run)
        return self.lines(run.split(b"\n"))

    def finish(self) -> Framed:
        """The last line, when the stream ended without its newline."""
        last, self.pending = self.pending, b""
        return self.lines([last])

    def lines(self, lines: list[bytes]) -> Framed:
        """The events in these complete lines, re-framed, up to ``[DONE]`` or the first bad line."""
        out: list[bytes] = []
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event: lines
            data = line[5:].strip()
            if data == b"[DONE]":
                out.append(SSE_DONE)
                return Framed(b"".join(out), done=True)
            if data.startswith(b'{"error"'):
                return Framed(b"".join(out), error=UpstreamError(f"{self.model}: {error_message(data)}"))
            if not (data.startswith(b"{") and data.endswith(b"}")):  # a cheap check, not a parse
                error = UpstreamError(f"{self.model}: the upstream sent an event that is not a JSON object")
                return Framed(b"".join(out), error=error)
            out.append(b"data: " + data + b"\n\n")
        return Framed(b"".join(out))


def error_message(raw: bytes) -> str:
    """The message of an upstream's error body (OpenAI's shape or not), for the client."""
    try:
        data = orjson.loads(raw)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    except (orjson.JSONDecodeError, TypeError):
        return raw[:300].decode("utf-8", "replace")
