"""Who a request is for: the ``Identity`` (tenant, end user, the key's rights) and the rule for user ids.

A leaf: the server's authentication (``steer.server.auth``) builds identities; the pipeline and the
methods only read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from steer.errors import InvalidRequest

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


def check_user_id(user: str, param: str = "user") -> str:
    if not USER_ID.fullmatch(user):
        raise InvalidRequest(
            f"invalid {param} {user[:64]!r}: use 1-128 ASCII letters, digits and . _ @ : + | = -, "
            "starting with a letter or digit",
            param=param,
            code="invalid_user",
        )
    return user
