"""The inspector's routes: sign-in, the pages (GET, never changing anything) and the forms (POST, each
with a CSRF token), every answer with the security headers below.

    GET  /ui/                               recent requests, links to users, policies, health
    GET  /ui/login            POST /ui/login, POST /ui/logout
    GET  /ui/users[?q=]                     users of the tenant
    GET  /ui/users/{user}[?page=N]          memories (+ supersede chains), recent requests, policy
    GET  /ui/users/{user}/memories/{id}     one memory, with its edit form
    POST /ui/users/{user}/memories          add          POST .../memories/{id}/edit, .../memories/{id}/delete
    GET  /ui/users/{user}/export            the API's export JSON, as a download
    GET  /ui/users/{user}/forget            confirmation  POST /ui/users/{user}/forget
    GET  /ui/users/{user}/profile           mixture, weights and direction as charts, feedback events
    GET  /ui/traces/{trace_id}              one request's trace
    GET  /ui/policies, /ui/health           admins only
    GET  /ui/static/{name}                  the stylesheet
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

import steer.server.ui.views as views
from steer.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied, SteerError
from steer.identity import MAPPED, Identity
from steer.server import memories as api
from steer.server.auth import digest
from steer.server.routes import read_body
from steer.server.services import Services
from steer.server.ui.sessions import COOKIE, LOGIN_COOKIE, NO_KEY, Sessions, Viewer, cookie_header, same_origin
from steer.settings import resolve_secret

_MAPPED_KEY = re.compile(MAPPED + r"[0-9a-f]{40}")
log = logging.getLogger("steer.ui")
# no script may run, nothing loads from elsewhere, no page may frame these
CSP = (
    "default-src 'self'; script-src 'none'; object-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send Origin: null on forms
    "Cache-Control": "no-store",
}
MAX_FORM = 64 * 1024
CSRF_REFUSED = "the form's CSRF token is missing or wrong: reload the page and send it again"
STATIC = {"style.css": "text/css; charset=utf-8"}
DONE = {  # the notes a page shows after a form (chosen by key: no text from the request is echoed)
    "added": "Memory added.",
    "merged": "That memory was held already; nothing new was added.",
    "edited": "Memory changed.",
    "deleted": "Memory deleted.",
    "forgotten": "The user was forgotten: memories, requests, traces, profile and feedback are deleted.",
}
Page = Callable[[Request, Services, Viewer], Awaitable[Response]]


@cache
def _env() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("steer.server.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = lambda t: "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    env.filters["num"] = lambda v, d=3: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    env.filters["q"] = lambda s: quote(str(s), safe="")
    env.filters["json"] = lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2).decode()
    return env


def render(template: str, viewer: Viewer | None, status: int = 200, **context: Any) -> HTMLResponse:
    html = _env().get_template(template).render(viewer=viewer, **context)
    return HTMLResponse(html, status_code=status)


def make_sessions(services: Services) -> Sessions:
    """The app's session signer (``create_app`` keeps one on ``app.state.ui_sessions``)."""
    cfg = services.settings.inspector
    secret = resolve_secret(cfg.session_secret)
    return Sessions(secret.encode() if secret else None, cfg.session_hours)


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.ui_sessions
    return sessions


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _viewer(request: Request, services: Services) -> tuple[Viewer | None, str | None]:
    """The signed-in viewer, and a new session cookie to set (no-key mode's first page)."""
    sessions = _sessions(request)
    session = sessions.read(request.cookies.get(COOKIE))
    if not services.keys.required:
        admin = Identity(tenant="default", user=None, admin=True)
        if session is not None and session[0] == NO_KEY:
            return Viewer(admin, sessions.csrf(session[1])), None
        token = sessions.issue(None)
        nonce = sessions.read(token)
        assert nonce is not None
        return Viewer(admin, sessions.csrf(nonce[1])), token
    if session is None or session[0] == NO_KEY:
        return None, None
    identity = services.keys.by_digest(session[0])
    if identity is None:
        return None, None
    return Viewer(identity, sessions.csrf(session[1])), None


async def read_form(request: Request) -> dict[str, str]:
    raw = await read_body(request, MAX_FORM)
    ctype = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequest("forms are sent as application/x-www-form-urlencoded")
    try:
        fields = parse_qs(raw.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("the form could not be read") from exc
    return {k: v[0] for k, v in fields.items()}


def page(route: str, handler: Page, *, admin: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a page or form handler: the browser rules, the session (sign-in when none), CSRF on POST,
    errors as pages, the security headers and the request metrics."""

    async def wrapped(request: Request) -> Response:
        services: Services = request.app.state.services
        t0 = time.perf_counter()
        viewer: Viewer | None = None
        new_cookie: str | None = None
        try:
            guard = services.keys.guard
            if guard is not None:
                guard.check("GET", request.scope["headers"])  # the Host rule; forms are checked below
            viewer, new_cookie = _viewer(request, services)
            if viewer is None:
                nxt = quote(request.url.path, safe="/")
                response: Response = RedirectResponse(f"/ui/login?next={nxt}", status_code=303)
            else:
                if request.method == "POST":
                    form = await read_form(request)
                    if not same_origin(dict(request.headers)):
                        raise PermissionDenied("this form was sent from another site", code="cross_origin")
                    session = _sessions(request).read(request.cookies.get(COOKIE))
                    if session is None or not _sessions(request).check_csrf(session[1], form.get("csrf")):
                        raise PermissionDenied(CSRF_REFUSED, code="csrf")
                    request.state.form = form
                if admin and not viewer.admin:
                    raise PermissionDenied("this page is for admin keys")
                response = await handler(request, services, viewer)
        except SteerError as exc:
            response = render("error.html", viewer, status=exc.status, error=exc)
        except Exception:
            log.exception("inspector page %s failed", request.url.path)
            response = render("error.html", viewer, status=500, error=SteerError("internal error; see the log"))
        if new_cookie is not None:
            max_age = int(services.settings.inspector.session_hours * 3600)
            response.headers.append("Set-Cookie", cookie_header(COOKIE, new_cookie, max_age, _secure(request)))
        response.headers.update(SECURITY_HEADERS)
        services.metrics.request_done(route, response.status_code, time.perf_counter() - t0)
        return response

    return wrapped


def _user(request: Request, viewer: Viewer) -> str:
    """The user's stored key, read as the API reads ``{user}`` (the same 400 for a bad id); a user the
    viewer may not see is a 404, the same answer as for a user that does not exist. A viewer who sees
    the whole tenant also opens a mapped key as stored (``~`` and 40 hex digits): the users list links
    mapped users so, their given ids being known only to their clients."""
    given = str(request.path_params["user"])
    if viewer.sees_tenant and _MAPPED_KEY.fullmatch(given):
        return given
    try:
        return api.path_user(request, viewer.identity)
    except PermissionDenied as exc:
        raise NotFound(f"no user {given!r} you may see") from exc


def _memory_fields(request: Request, services: Services) -> tuple[str, str | None]:
    """The memory form's text and kind, checked as the API checks its JSON body (the same errors); a
    field left blank is one not sent."""
    form: dict[str, str] = request.state.form
    text, kind = api.memory_fields({k: v for k, v in form.items() if v}, services)
    assert text is not None
    return text, kind


def _done(request: Request) -> str | None:
    return DONE.get(request.query_params.get("done", ""))


# --- sign-in ------------------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"


async def login_page(request: Request) -> Response:
    services: Services = request.app.state.services
    guard = services.keys.guard
    if guard is not None:
        try:
            guard.check("GET", request.scope["headers"])
        except SteerError as exc:
            return _headers(render("error.html", None, status=exc.status, error=exc))
    if not services.keys.required:
        return _headers(RedirectResponse("/ui/", status_code=303))
    return _login_form(request, None, 200)


def _login_form(request: Request, error: str | None, status: int) -> Response:
    token = _sessions(request).issue(None).rpartition(".")[2][:32]
    nxt = _safe_next(request.query_params.get("next"))
    response = render("login.html", None, status=status, error=error, login_token=token, next=nxt)
    response.headers.append("Set-Cookie", cookie_header(LOGIN_COOKIE, token, 600, _secure(request)))
    return _headers(response)


def _headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


async def login(request: Request) -> Response:
    services: Services = request.app.state.services
    t0 = time.perf_counter()
    try:
        form = await read_form(request)
        if not same_origin(dict(request.headers)):
            raise PermissionDenied("this form was sent from another site", code="cross_origin")
        expected = request.cookies.get(LOGIN_COOKIE)
        if not expected or form.get("login_token") != expected:
            raise PermissionDenied("the sign-in form expired: reload the page", code="csrf")
        key = form.get("key", "").strip()
        if not services.keys.required:
            response: Response = RedirectResponse("/ui/", status_code=303)
        else:
            identity = services.keys.by_digest(digest(key)) if key else None
            if identity is None:
                raise AuthenticationFailed("that key is not one of this steer's keys")
            token = _sessions(request).issue(digest(key))
            response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
            max_age = int(services.settings.inspector.session_hours * 3600)
            response.headers.append("Set-Cookie", cookie_header(COOKIE, token, max_age, _secure(request)))
        response.headers.append("Set-Cookie", cookie_header(LOGIN_COOKIE, "", 0, _secure(request)))
        response = _headers(response)
    except SteerError as exc:
        response = _login_form(request, exc.message, exc.status)
    services.metrics.request_done("ui", response.status_code, time.perf_counter() - t0)
    return response


async def logout(request: Request, services: Services, viewer: Viewer) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.headers.append("Set-Cookie", cookie_header(COOKIE, "", 0, _secure(request)))
    return response


# --- pages --------------------------------------------------------------------------------------------


async def home(request: Request, services: Services, viewer: Viewer) -> Response:
    scopes = viewer.identity.user_scopes or ()
    own = [u for u in scopes if not any(c in u for c in "*?[")] if not viewer.sees_tenant else []
    requests = await views.recent_requests(services, viewer)
    return render(
        "home.html", viewer, requests=requests, own=own, traces=services.settings.traces.keep, done=_done(request)
    )


async def users_page(request: Request, services: Services, viewer: Viewer) -> Response:
    query = request.query_params.get("q", "")[:128]
    found = await views.users(services, viewer, query)
    return render("users.html", viewer, users=found, q=query, done=_done(request))


async def user_page(request: Request, services: Services, viewer: Viewer) -> Response:
    user = _user(request, viewer)
    number = request.query_params.get("page", "1")
    data = await views.user_page(services, viewer, user, int(number) if number.isdigit() and len(number) < 6 else 1)
    return render("user.html", viewer, done=_done(request), uq=quote(user, safe=""), **data)


async def memory_page(request: Request, services: Services, viewer: Viewer) -> Response:
    user = _user(request, viewer)
    data = await views.memory_page(services, viewer, user, api.path_memory_id(request))
    return render("memory.html", viewer, **data)


async def add_memory(request: Request, services: Services, viewer: Viewer) -> Response:
    began = time.time()
    user = _user(request, viewer)
    text, kind = _memory_fields(request, services)
    _, created = await api.add_user_memory(services, viewer.identity.tenant, user, text, kind, "inspector", began)
    return RedirectResponse(f"/ui/users/{quote(user)}?done={'added' if created else 'merged'}", status_code=303)


async def edit_memory(request: Request, services: Services, viewer: Viewer) -> Response:
    began = time.time()
    user = _user(request, viewer)
    text, kind = _memory_fields(request, services)
    await api.call_memory(
        services, "update", viewer.identity.tenant, user, api.path_memory_id(request), text=text, kind=kind, began=began
    )
    return RedirectResponse(f"/ui/users/{quote(user)}?done=edited", status_code=303)


async def delete_memory(request: Request, services: Services, viewer: Viewer) -> Response:
    user = _user(request, viewer)
    await api.call_memory(services, "delete", viewer.identity.tenant, user, api.path_memory_id(request))
    return RedirectResponse(f"/ui/users/{quote(user)}?done=deleted", status_code=303)


async def export(request: Request, services: Services, viewer: Viewer) -> Response:
    user = _user(request, viewer)
    await views.require_user(services, viewer, user)
    data = await api.export_user_data(services, viewer.identity.tenant, user)
    return Response(
        orjson.dumps(data),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="steer-export-{user}.json"'},
    )


async def forget_confirm(request: Request, services: Services, viewer: Viewer) -> Response:
    user = _user(request, viewer)
    await views.require_user(services, viewer, user)
    return render("forget.html", viewer, user=user)


async def forget(request: Request, services: Services, viewer: Viewer) -> Response:
    user = _user(request, viewer)
    form: dict[str, str] = request.state.form
    if form.get("confirm") not in (user, str(request.path_params["user"])):  # the stored key, or the id as given
        raise InvalidRequest("type the user id to confirm: nothing was deleted")
    await api.forget_user_data(services, viewer.identity.tenant, user)
    target = "/ui/users?done=forgotten" if viewer.sees_tenant else "/ui/?done=forgotten"
    return RedirectResponse(target, status_code=303)


async def profile(request: Request, services: Services, viewer: Viewer) -> Response:
    user = _user(request, viewer)
    return render("profile.html", viewer, **await views.profile_page(services, viewer, user))


async def trace(request: Request, services: Services, viewer: Viewer) -> Response:
    trace_id = str(request.path_params["trace_id"])
    if not (trace_id.isascii() and trace_id.isalnum()) or len(trace_id) > 64:
        raise NotFound("no such trace")
    return render("trace.html", viewer, **await views.trace_page(services, viewer, trace_id))


async def policies(request: Request, services: Services, viewer: Viewer) -> Response:
    return render("policies.html", viewer, **views.policies_page(services, viewer))


async def health(request: Request, services: Services, viewer: Viewer) -> Response:
    return render("health.html", viewer, **views.health_page(services))


async def static(request: Request) -> Response:
    name = str(request.path_params["name"])
    if name not in STATIC:
        return _headers(Response(b"not found", status_code=404, media_type="text/plain"))
    body = resources.files("steer.server.ui").joinpath("static", name).read_bytes()
    response = Response(body, media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})
    for key, value in SECURITY_HEADERS.items():
        if key != "Cache-Control":
            response.headers[key] = value
    return response


async def root_redirect(request: Request) -> Response:
    return _headers(RedirectResponse("/ui/", status_code=308))


def ui_routes() -> list[Route]:
    u = "/ui/users/{user}"
    return [
        Route("/ui", root_redirect, methods=["GET"]),
        Route("/ui/", page("ui", home), methods=["GET"]),
        Route("/ui/login", login_page, methods=["GET"]),
        Route("/ui/login", login, methods=["POST"]),
        Route("/ui/logout", page("ui", logout), methods=["POST"]),
        Route("/ui/users", page("ui", users_page), methods=["GET"]),
        Route(u, page("ui", user_page), methods=["GET"]),
        Route(u + "/memories", page("ui", add_memory), methods=["POST"]),
        Route(u + "/memories/{memory_id}", page("ui", memory_page), methods=["GET"]),
        Route(u + "/memories/{memory_id}/edit", page("ui", edit_memory), methods=["POST"]),
        Route(u + "/memories/{memory_id}/delete", page("ui", delete_memory), methods=["POST"]),
        Route(u + "/export", page("ui", export), methods=["GET"]),
        Route(u + "/forget", page("ui", forget_confirm), methods=["GET"]),
        Route(u + "/forget", page("ui", forget), methods=["POST"]),
        Route(u + "/profile", page("ui", profile), methods=["GET"]),
        Route("/ui/traces/{trace_id}", page("ui", trace), methods=["GET"]),
        Route("/ui/policies", page("ui", policies, admin=True), methods=["GET"]),
        Route("/ui/health", page("ui", health, admin=True), methods=["GET"]),
        Route("/ui/static/{name}", static, methods=["GET"]),
    ]
