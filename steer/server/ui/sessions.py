"""Who is looking at the inspector: sessions, CSRF tokens and the browser rules.

* With keys configured, a browser signs in once by pasting a key on ``/ui/login``; it gets a session
  cookie (HttpOnly, SameSite=Strict, path ``/ui``) holding the key's SHA-256 digest, an expiry and a
  random nonce, signed with HMAC-SHA256. The key itself is never stored. Each request maps the digest
  back to the configured key, so a key removed from the settings ends its sessions at the next start.
* With no keys (loopback only), the first page sets an admin session cookie by itself; the browser
  guard's Host rule (``steer.server.auth.BrowserGuard``) applies to every inspector request.
* Every POST carries a CSRF token: an HMAC of the session's nonce, in a hidden form field, compared in
  constant time; a POST whose ``Origin`` names another site is refused before that. The sign-in form,
  which has no session yet, uses a double-submit token (a cookie and a field that must agree).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from steer.identity import Identity

COOKIE = "steer_ui"
LOGIN_COOKIE = "steer_ui_login"
PATH = "/ui"
NO_KEY = "-"  # the digest field of a no-key (loopback) session


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in browser: the key's identity and the CSRF token its forms carry."""

    identity: Identity
    csrf: str

    @property
    def admin(self) -> bool:
        return self.identity.admin

    @property
    def sees_tenant(self) -> bool:
        """Admin keys and keys not limited to some users see every user of the tenant."""
        return self.identity.admin or self.identity.user_scopes is None

    def may_see(self, user: str) -> bool:
        return self.identity.may_act_as(user)


class Sessions:
    """Issues and checks signed session tokens."""

    def __init__(self, secret: bytes | None, hours: float) -> None:
        self.secret = secret or secrets.token_bytes(32)
        self.lifetime = hours * 3600

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self.secret, payload, hashlib.sha256).hexdigest()

    def issue(self, key_sha256: str | None) -> str:
        """A session token for the key with this digest (None: a no-key session)."""
        payload = f"{key_sha256 or NO_KEY}|{int(time.time() + self.lifetime)}|{secrets.token_hex(16)}".encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + self._sign(payload)

    def read(self, token: str | None) -> tuple[str, str] | None:
        """(key digest or ``NO_KEY``, nonce) of a valid, unexpired token; None otherwise."""
        if not token or "." not in token or len(token) > 512:
            return None
        body, _, sig = token.rpartition(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            return None
        if not hmac.compare_digest(self._sign(payload), sig):
            return None
        try:
            key, expires, nonce = payload.decode().split("|")
            if int(expires) < time.time():
                return None
        except ValueError:
            return None
        return key, nonce

    def csrf(self, nonce: str) -> str:
        return self._sign(b"csrf|" + nonce.encode())[:40]

    def check_csrf(self, nonce: str, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(self.csrf(nonce), given)


def same_origin(headers: dict[str, str]) -> bool:
    """False for a request a page on another origin started: its ``Origin`` names another host than the
    request's ``Host`` (or, where a browser sends no Origin, ``Sec-Fetch-Site`` says cross-site)."""
    origin = headers.get("origin")
    host = headers.get("host", "")
    if origin is not None:
        return origin != "null" and origin.partition("://")[2] == host
    return headers.get("sec-fetch-site") not in ("cross-site", "same-site")


def cookie_header(name: str, value: str, max_age: int, secure: bool) -> str:
    attrs = f"{name}={value}; Path={PATH}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return attrs + ("; Secure" if secure else "")
