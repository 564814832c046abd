"""Who a request is for: the ``Identity`` (tenant, end user, the key's rights) and the rule for user ids.

A leaf: the server's authentication (``steer.server.auth``) builds identities; the pipeline and the
methods only read them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from fnmatch import fnmatchcase

from steer.errors import InvalidRequest

USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+|=-]{0,127}")
MAPPED = "~"  # the first character of a mapped key; no id as given may start with it
MAX_GIVEN_CHARS = 1024  # longest id accepted for mapping


@dataclass(frozen=True, slots=True)
class Identity:
    tenant: str
    user: str | None
    key_name: str | None = None
    admin: bool = False
    user_scopes: tuple[str, ...] | None = None  # None: any user
    named: str | None = None  # the end user's id as the client gave it, when ``user`` is its mapped key

    def may_act_as(self, user: str) -> bool:
        if self.admin or self.user_scopes is None:
            return True
        return any(fnmatchcase(user, pattern) for pattern in self.user_scopes)

    def owns(self, user: str) -> bool:
        """True when the key belongs to this very user (scoped to it), or is admin."""
        return self.admin or (self.user_scopes is not None and self.may_act_as(user))

    @property
    def given_user(self) -> str | None:
        """The end user's id as the client gave it (key scopes are written with these)."""
        return self.named or self.user


def check_user_id(user: str, param: str = "user") -> str:
    if not USER_ID.fullmatch(user):
        raise InvalidRequest(
            f"invalid {param} {user[:64]!r}: use 1-128 ASCII letters, digits and . _ @ : + | = -, "
            "starting with a letter or digit",
            param=param,
            code="invalid_user",
        )
    return user


class UserIds:
    """The rule for the end-user ids clients send, and the key each is stored under.

    * An id of 1-128 ASCII letters, digits and ``. _ @ : + | = -`` starting with a letter or digit is
      stored as is.
    * Any other id LiteLLM would accept (spaces, more than 128 characters, non-ASCII; at most
      ``MAX_GIVEN_CHARS``) is stored under a mapped key: ``~`` and the first 40 hex digits of the
      HMAC-SHA-256 of its NFC form under the server's identity secret. The same id, and ids that
      differ only in Unicode composition, map to the same key on every start while the secret stays.
    * Refused with a 400: an id with a path separator (``/``, ``\\``), that is ``.`` or ``..``, or
      holds a control or invisible formatting character (NUL, newlines, zero-width and bidi marks);
      one with leading or trailing white space; and one that starts with ``~``, so no id as given can
      pass for another's mapped key.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret  # None until the server has its secret: then only plain ids are accepted

    def key(self, given: str, param: str = "user") -> str:
        if USER_ID.fullmatch(given):
            return given
        problem = _problem(given)
        if problem is None and self.secret is None:
            problem = "this steer maps no ids yet"
        if problem is not None:
            raise InvalidRequest(
                f"invalid {param} {given[:64]!r}: {problem}", param=param, code="invalid_user"
            )
        assert self.secret is not None
        normal = unicodedata.normalize("NFC", given).encode()
        return MAPPED + hmac.new(self.secret, normal, hashlib.sha256).hexdigest()[:40]


def _problem(given: str) -> str | None:
    if not given or len(given) > MAX_GIVEN_CHARS:
        return f"an id must have 1 to {MAX_GIVEN_CHARS} characters"
    if given.startswith(MAPPED):
        return f"an id may not start with {MAPPED!r} (the mark of steer's mapped keys)"
    if "/" in given or "\\" in given or given in (".", ".."):
        return "an id may not hold a path separator or be . or .."
    if given != given.strip():
        return "an id may not start or end with white space"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in given):
        return "an id may not hold control or invisible formatting characters"
    return None
