"""Who is calling (the API key's tenant and rights) and for which end user.

Keys are kept only as SHA-256 digests. The end user comes from the ``X-Steer-User`` header,
the body's ``user`` field or its ``safety_identifier``; under a key scoped to some users, every
one of those that is given must be within the scope, so a spoofed ``user`` field is refused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from steer.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from steer.settings import KeyConfig, Settings, resolve_secret

USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+|=-]{0,127}")


@dataclass(frozen=True, slots=True)
class Identity:
    tenant: str
    user: str | None
    key_name: str | None = None
    admin: bool = False
    user_scopes: tuple[str, ...] | None = None  # None: any user

    def may_act_as(self, user: str) -> bool:
        if self.admin or self.user_scopes is None:
            return True
        return any(fnmatchcase(user, pattern) for pattern in self.user_scopes)

    def owns(self, user: str) -> bool:
        """True when the key belongs to this very user (scoped to it), or is admin."""
        return self.admin or (self.user_scopes is not None and self.may_act_as(user))


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_user_id(user: str, param: str = "user") -> str:
    if not USER_ID.fullmatch(user):
        raise InvalidRequest(
            f"invalid {param} {user[:64]!r}: use 1-128 ASCII letters, digits and . _ @ : + | = -, "
            "starting with a letter or digit",
            param=param,
            code="invalid_user",
        )
    return user


class KeyRing:
    def __init__(self, settings: Settings) -> None:
        self.required = settings.auth_required
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

    def authenticate(self, authorization: str | None) -> Identity:
        """The caller's identity before the end user is known."""
        if not self.required:
            return Identity(tenant="default", user=None, key_name=None, admin=True)
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
        cfg = self._keys.get(digest(authorization[7:].strip()))
        if cfg is None:
            raise AuthenticationFailed("invalid API key")
        return Identity(
            tenant=cfg.tenant, user=None, key_name=cfg.name or None, admin=cfg.admin, user_scopes=cfg.users
        )


def resolve_user(caller: Identity, headers: Mapping[str, str], body: Mapping[str, object]) -> Identity:
    """Pick the end user of a chat request and check the key may act as that user."""
    given: list[tuple[str, str]] = []
    header = headers.get("x-steer-user")
    if header:
        given.append(("X-Steer-User", header))
    for field in ("user", "safety_identifier"):
        value = body.get(field)
        if isinstance(value, str) and value:
            given.append((field, value))
    for param, named in given:
        check_user_id(named, param)
        if not caller.may_act_as(named):
            raise PermissionDenied(f"this API key may not act as user {named!r}", param=param)
    user = given[0][1] if given else None
    if (
        user is None
        and caller.user_scopes
        and len(caller.user_scopes) == 1
        and not _is_glob(caller.user_scopes[0])
    ):
        user = caller.user_scopes[0]  # a key for exactly one user speaks for that user
    return Identity(caller.tenant, user, caller.key_name, caller.admin, caller.user_scopes)


def authorize_user(caller: Identity, user: str) -> None:
    """Steer's own per-user endpoints: admin keys reach any user, scoped keys their own."""
    check_user_id(user, "user")
    if not caller.may_act_as(user):
        raise PermissionDenied(f"this API key may not access user {user!r}")


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")
