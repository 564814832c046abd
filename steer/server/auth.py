"""Who is calling (the API key's tenant and rights) and for which end user.

Keys are kept only as SHA-256 digests, sent as ``Authorization: Bearer <key>`` or (as LiteLLM's
clients do) ``x-litellm-api-key: <key>`` (``Bearer `` before it allowed). The end user comes from
the identity sources (``settings.identity.sources``; by default the ``X-Steer-User`` header, the
body's ``user`` and ``safety_identifier``, LiteLLM's ``x-litellm-end-user-id`` and
``x-litellm-customer-id`` headers, ``metadata.user_id`` and ``litellm_metadata.user``): the first
one present names the user. Under a key scoped to some users, every source that is present must be
within the scope, so a spoofed ``user`` field is refused, and under any key, the sources present
must name the same user (else the upstream would see one user while steer serves another). The id
is stored under its key (``steer.identity.UserIds``: plain ids as they are, others mapped).

With no keys configured, steer listens on loopback only, and :class:`BrowserGuard` keeps web pages
out: a page the user visits can reach loopback too (a form or ``fetch`` POST needs no CORS
preflight when its body is ``text/plain``, and DNS rebinding makes a page's own name resolve to
127.0.0.1).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping

from steer.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MisdirectedRequest,
    PermissionDenied,
    UnsupportedMediaType,
)
from steer.identity import Identity, UserIds
from steer.settings import IDENTITY_SOURCES, KeyConfig, Settings, resolve_secret

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")  # the names of this machine no rebinding can take
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})  # RFC 9110 9.2.1: the methods that are not safe
WITH_BODY = frozenset({"POST", "PUT", "PATCH"})  # the methods whose body steer reads
# Fetch Metadata (W3C): a request a page on another site (or another port of this host) started
CROSS_SITE = frozenset({b"cross-site", b"same-site"})


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class BrowserGuard:
    """No-key mode's rules, checked on every request before anything else runs.

    * The Host header must name this machine: 127.0.0.1, localhost, [::1] (any port) or a name in
      ``allowed_hosts``; else 421 Misdirected Request (RFC 9110 15.5.20: the server will not answer
      for that authority). A page that rebound its own name to 127.0.0.1 still sends its own name.
    * A state-changing request (POST, PUT, PATCH, DELETE) that a browser page started is refused
      with 403 unless the page's origin is listed by name in ``cors_origins``: the ``Origin``
      header browsers send on such requests, or, where a browser omits it, ``Sec-Fetch-Site:
      cross-site`` or ``same-site``.
    * A body (POST, PUT, PATCH) must be declared ``application/json`` (parameters such as charset
      allowed); else 415. The content types a page may send without a CORS preflight are
      text/plain, form and multipart only.
    """

    def __init__(self, settings: Settings) -> None:
        self.hosts = frozenset(h.lower().encode() for h in (*LOOPBACK_HOSTS, *settings.allowed_hosts))
        # "*" lets pages read answers (CORS), never write without a key
        self.origins = frozenset(o.encode() for o in settings.cors_origins if o != "*")

    def check(self, method: str, raw_headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Raise the error for a request these rules refuse; ``raw_headers`` as in the ASGI scope
        (lower-case names: one dict built from them, then a few lookups)."""
        headers = dict(raw_headers)
        host = headers.get(b"host", b"").lower()
        name = host[: host.find(b"]") + 1] if host.startswith(b"[") else host.partition(b":")[0]
        if name not in self.hosts:
            raise MisdirectedRequest(
                "this steer has no API keys and answers only requests addressed to 127.0.0.1, localhost "
                f"or [::1], not {host[:100].decode('latin-1')!r}; add the name to allowed_hosts, or configure keys"
            )
        if method not in STATE_CHANGING:
            return
        origin = headers.get(b"origin")
        if (origin is not None and origin not in self.origins) or (
            origin is None and headers.get(b"sec-fetch-site") in CROSS_SITE
        ):
            raise PermissionDenied(
                "this steer has no API keys: web pages may not change anything in it unless their origin "
                "is listed in cors_origins",
                code="cross_origin",
            )
        if method in WITH_BODY:
            ctype = headers.get(b"content-type", b"")
            if ctype.partition(b";")[0].strip().lower() != b"application/json":
                raise UnsupportedMediaType(
                    "the request body must be sent as Content-Type: application/json, "
                    f"not {ctype[:100].decode('latin-1')!r}"
                )


NO_KEY = Identity(tenant="default", user=None, key_name=None, admin=True)  # every caller when no keys are set


class KeyRing:
    def __init__(self, settings: Settings) -> None:
        self.required = settings.auth_required
        self.guard = None if self.required else BrowserGuard(settings)  # no-key mode only
        self._keys: dict[str, KeyConfig] = {}
        for cfg in settings.keys:
            if cfg.key is not None:
                plain = resolve_secret(cfg.key)
                if not plain:
                    continue  # os.environ/NAME not set: that key is disabled
                self._keys[digest(plain)] = cfg
            elif cfg.key_sha256:
                self._keys[cfg.key_sha256.lower()] = cfg
        if self.required and not self._keys:
            raise ValueError("keys are configured but none resolved (check their os.environ/ variables)")

    def caller(self, headers: Mapping[str, str]) -> Identity:
        """The caller of a request with these headers (:meth:`authenticate`; no header is read when no keys
        are configured)."""
        if not self.required:
            return NO_KEY
        return self.authenticate(headers.get("authorization"), headers.get("x-litellm-api-key"))

    def authenticate(self, authorization: str | None, litellm_key: str | None = None) -> Identity:
        """The caller's identity before the end user is known, from the ``Authorization`` header or,
        when that is absent, the ``x-litellm-api-key`` header (``litellm_key``)."""
        if not self.required:
            return NO_KEY
        if not authorization and litellm_key:
            key = litellm_key[7:] if litellm_key.lower().startswith("bearer ") else litellm_key
        elif authorization and authorization.lower().startswith("bearer "):
            key = authorization[7:]
        else:
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
        caller = self.by_digest(digest(key.strip()))
        if caller is None:
            raise AuthenticationFailed("invalid API key")
        return caller

    def by_digest(self, key_sha256: str) -> Identity | None:
        """The identity of the configured key with this SHA-256 digest (a signed-in inspector session keeps
        the digest, never the key), or None."""
        cfg = self._keys.get(key_sha256)
        if cfg is None:
            return None
        return Identity(
            tenant=cfg.tenant, user=None, key_name=cfg.name or None, admin=cfg.admin, user_scopes=cfg.users
        )


PLAIN = UserIds()  # ids as they are, nothing mapped: for callers that pass no UserIds


def given_users(
    headers: Mapping[str, str], body: Mapping[str, object], sources: tuple[str, ...] = IDENTITY_SOURCES
) -> list[tuple[str, str]]:
    """The (source, user id) pairs present in a request, in the order of ``sources``; a source is
    present when it holds a non-empty string."""
    given: list[tuple[str, str]] = []
    for param, header, path in compiled_sources(sources):
        value: object
        if header is not None:
            value = headers.get(header)
        else:
            value = body
            for part in path:
                value = value.get(part) if isinstance(value, dict | Mapping) else None
        if isinstance(value, str) and value:
            given.append((param, value))
    return given


@functools.lru_cache(maxsize=32)
def compiled_sources(sources: tuple[str, ...]) -> tuple[tuple[str, str | None, tuple[str, ...]], ...]:
    """Each source as (its name in messages, the header to read or None, the body path to read), worked out
    once per sources tuple rather than on every request."""
    out = []
    for source in sources:
        kind, _, name = source.partition(":")
        out.append((_param(source), name if kind == "header" else None, tuple(name.split("."))))
    return tuple(out)


def _param(source: str) -> str:
    kind, _, name = source.partition(":")
    return name if kind == "body" else "-".join(w.capitalize() for w in name.split("-"))


def resolve_user(
    caller: Identity,
    headers: Mapping[str, str],
    body: Mapping[str, object],
    ids: UserIds = PLAIN,
    sources: tuple[str, ...] = IDENTITY_SOURCES,
) -> Identity:
    """Pick the end user of a request and check the key may act as that user."""
    given = given_users(headers, body, sources)
    user: str | None = None
    for param, named in given:
        ids.key(named, param)  # each source's id is checked, not just the first
        if not caller.may_act_as(named):
            raise PermissionDenied(f"this API key may not act as user {named!r}", param=param)
        if user is None:
            user = named
        elif named != user:
            raise InvalidRequest(
                f"{given[0][0]} names user {user!r} but {param} names {named!r}; give one, or the same in each",
                param=param,
                code="user_conflict",
            )
    if (
        user is None
        and caller.user_scopes
        and len(caller.user_scopes) == 1
        and not _is_glob(caller.user_scopes[0])
    ):
        user = caller.user_scopes[0]  # a key for exactly one user speaks for that user
    if user is None:
        return Identity(caller.tenant, None, caller.key_name, caller.admin, caller.user_scopes)
    key = ids.key(user, given[0][0] if given else "user")
    as_given = user if key != user else None
    return Identity(caller.tenant, key, caller.key_name, caller.admin, caller.user_scopes, as_given)


def authorize_user(caller: Identity, user: str, ids: UserIds = PLAIN) -> str:
    """Steer's own per-user endpoints: admin keys reach any user, scoped keys their own. The user's
    stored key is returned (the id as given, or its mapped key)."""
    key = ids.key(user, "user")
    if not caller.may_act_as(user):
        raise PermissionDenied(f"this API key may not access user {user!r}")
    return key


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")
