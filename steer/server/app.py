"""``create_app(settings)``: the one place that assembles a steer server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from steer.errors import InvalidRequest, NotFound, SteerError
from steer.server.feedback import feedback_routes
from steer.server.memories import user_routes
from steer.server.openapi import openapi_routes
from steer.server.passthrough import passthrough_routes
from steer.server.responses import response_routes
from steer.server.routes import TRACE_HEADER, error_response, new_trace_id, routes
from steer.server.services import Services
from steer.settings import Settings
from steer.storage.secrets import INSPECTOR, server_secret


def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, wrong method) in the OpenAI shape, after the same
    no-key browser rules as every endpoint (a refused Host learns nothing about the routes)."""
    assert isinstance(exc, HTTPException)
    err: SteerError
    guard = request.app.state.services.keys.guard
    try:
        if guard is not None:
            guard.check(request.method, request.scope["headers"])
    except SteerError as refused:
        return error_response(refused, new_trace_id())
    if exc.status_code == 404:
        err = NotFound(f"no route {request.method} {request.url.path}")
    elif exc.status_code == 405:
        err = InvalidRequest(
            f"method {request.method} is not allowed on {request.url.path}", code="method_not_allowed"
        )
        err.status = 405
        err.headers = dict(exc.headers or {})  # Allow: the methods the route takes
    else:
        err = SteerError(str(exc.detail))
        err.status = exc.status_code
    return error_response(err, new_trace_id())


def create_app(settings: Settings, services: Services | None = None, *, owns_process: bool = False) -> Starlette:
    """Build the ASGI app. Policies are validated here; clients and stores open in the lifespan.

    ``owns_process``: the app is the process (``steer serve``), so process-wide settings apply
    (``gc_freeze``); embedded in someone else's process they are left alone.
    """
    services = services or Services(settings, owns_process=owns_process)

    # parses and validates large chat bodies off the event loop (see steer.server.routes.LARGE_BODY_BYTES)
    body_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="steer-body")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        if settings.inspector.enabled and settings.inspector.session_secret is None:
            # one signing secret for every worker and replica on this database: a session signed by one
            # is read by the others
            assert services.db is not None
            app.state.ui_sessions.secret = (await asyncio.to_thread(server_secret, services.db, INSPECTOR)).encode()
        try:
            yield
        finally:
            body_worker.shutdown(wait=False, cancel_futures=True)
            await services.close()

    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                allow_headers=["*"],
                expose_headers=[TRACE_HEADER],
            )
        )
    pages = []
    if settings.inspector.enabled:
        from steer.server.ui.routes import make_sessions, ui_routes

        pages = ui_routes()
    app = Starlette(
        routes=[
            *routes(), *user_routes(), *openapi_routes(), *feedback_routes(), *response_routes(),
            *passthrough_routes(), *pages,
        ],
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.services = services
    app.state.body_worker = body_worker
    if settings.inspector.enabled:
        app.state.ui_sessions = make_sessions(services)
    return app
