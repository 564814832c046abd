"""The response that carries a chat stream: Starlette's streaming response, made cheaper per stream.

Two costs of Starlette's ``StreamingResponse`` are paid on every stream and are not needed here:

* it ends every response with one more, empty message (one more pass through the middleware and one
  more write to the socket). A chat stream's last chunk is known by its end, ``data: [DONE]``: that
  chunk is sent as the response's last message. A stream that ends otherwise (an error event) is
  ended by the empty message as before;
* it watches for the client going away in an anyio task group (a task, a cancel scope, their
  bookkeeping). Here one plain asyncio task waits on ``receive`` and, when the client is gone before
  the response is done, cancels the task serving the stream: the stream's generator is closed at the
  read it was waiting on (the upstream's response with it) and the cancellation ends there.
"""

from __future__ import annotations

import asyncio

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from steer.protocol import SSE_DONE


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        serving = asyncio.current_task()
        assert serving is not None
        finished = gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if not finished:  # also told once the response is complete: nothing to do then
                gone = True
                serving.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
            finished = True  # the last message went out: the watcher is told and ends by itself
        except asyncio.CancelledError:
            if not gone:
                raise  # cancelled from elsewhere (shutdown)
            serving.uncancel()
        finally:
            if not finished:
                finished = True
                watcher.cancel()
        if self.background is not None and not gone:
            await self.background()

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        more = True
        async for chunk in self.body_iterator:  # read to its end, so that the generator finishes here
            if not more:
                continue  # nothing goes out after [DONE]
            if not isinstance(chunk, bytes):
                chunk = bytes(chunk) if isinstance(chunk, memoryview) else chunk.encode(self.charset)
            more = not chunk.endswith(SSE_DONE)
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
        if more:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
