"""The smallest proxy worth the name, as a reference for ``steer bench overhead``.

Starlette served by uvicorn (uvloop and httptools where installed, as ``steer serve``) forwarding each
``/v1/chat/completions`` body to one upstream through one pooled aiohttp session, the answer or
its stream passed back untouched: no identity, policy, metrics, error mapping or trace. What it
adds over the upstream is what any Python proxy of this shape pays on the machine, so steer's
figures can be read against it. Its collector runs at the same first threshold as `steer serve`'s
default (``gc_threshold``), so the two differ only in what steer does.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from steer.server.gc import tune_collector
from steer.settings import GC_THRESHOLD


def create_min_proxy(upstream: str) -> Starlette:
    """``upstream``: the base URL ending in ``/v1``."""
    url = f"{upstream.rstrip('/')}/chat/completions"
    sessions: list[aiohttp.ClientSession] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        yield
        await sessions[0].close()

    async def chat(request: Request) -> Response:
        body = await request.body()
        resp = await sessions[0].post(url, data=body, headers={"Content-Type": "application/json"})
        media = resp.headers.get("Content-Type", "application/json")
        if not media.startswith("text/event-stream"):
            async with resp:
                return Response(await resp.read(), status_code=resp.status, media_type=media)

        async def relay() -> AsyncIterator[bytes]:
            async with resp:
                async for chunk in resp.content.iter_any():
                    yield chunk

        return StreamingResponse(relay(), status_code=resp.status, media_type=media)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    p = argparse.ArgumentParser(description="a minimal forwarding proxy (reference for steer bench overhead)")
    p.add_argument("--upstream", required=True, help="the upstream's base URL, ending in /v1")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--gc-threshold", type=int, default=GC_THRESHOLD, help="the collector's first threshold (steer's default)"
    )
    a = p.parse_args(argv)
    tune_collector(a.gc_threshold)
    uvicorn.run(
        create_min_proxy(a.upstream),
        host=a.host,
        port=a.port,
        log_level="warning",
        access_log=False,  # loop and http "auto": uvloop and httptools, as steer serve
        server_header=False,
        date_header=False,
    )


if __name__ == "__main__":
    main()
