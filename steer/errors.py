"""Errors steer raises, and their OpenAI wire shape.

    SteerError                      500 api_error
    ├── InvalidRequest              400 invalid_request_error
    ├── AuthenticationFailed        401 authentication_error
    ├── PermissionDenied            403 permission_error
    ├── NotFound                    404 not_found_error
    │   └── ModelNotFound           404 model_not_found
    ├── RequestTooLarge             413 request_too_large
    ├── UnsupportedMediaType        415 unsupported_media_type (no-key mode: a body that is not JSON)
    ├── MisdirectedRequest          421 host_not_allowed (no-key mode: a Host that is not this machine's)
    ├── RateLimited                 429 rate_limit_error
    ├── UpstreamError               502 upstream_error
    │   └── UpstreamTimeout         504 timeout_error
    ├── Unavailable                 503 service_unavailable_error (a backend of steer's own is down)
    │   └── StoreUnavailable        503 store_unavailable (the database cannot be reached)
    └── StageFailed                 500 stage_error (a required stage failed)

Every error leaves steer as ``{"error": {"message", "type", "param", "code"}}``. An upstream error's
``detail`` (the connector's text, which may name the upstream's host and port or a file path) is
for the log, never for the client.
"""

from __future__ import annotations

from typing import Any

import orjson


class SteerError(Exception):
    status = 500
    type = "api_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def json(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequest(SteerError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(SteerError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(SteerError):
    status = 403
    type = "permission_error"
    default_code = "forbidden"


class NotFound(SteerError):
    status = 404
    type = "not_found_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    type = "invalid_request_error"
    default_code = "model_not_found"


class RequestTooLarge(SteerError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedMediaType(SteerError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class MisdirectedRequest(SteerError):
    status = 421
    type = "invalid_request_error"
    default_code = "host_not_allowed"


class RateLimited(SteerError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(SteerError):
    status = 502
    type = "upstream_error"
    default_code = "upstream_failed"

    def __init__(
        self, message: str, *, upstream_status: int | None = None, detail: str | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        self.upstream_status = upstream_status
        self.detail = detail  # for the log only


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"


class Unavailable(SteerError):
    status = 503
    type = "service_unavailable_error"
    default_code = "unavailable"


class StoreUnavailable(Unavailable):
    """The database steer keeps its state in cannot be reached (down, restarting, or every pooled
    connection busy past the pool timeout); raised by ``steer.storage``'s backends."""

    default_code = "store_unavailable"

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": "2"})
        super().__init__(message, **kw)


class StageFailed(SteerError):
    status = 500
    type = "api_error"
    default_code = "stage_failed"


def from_upstream_status(status: int, message: str, retry_after: str | None = None) -> SteerError:
    """Map an upstream's HTTP error to the error steer returns for it."""
    if status == 429:
        headers = {"Retry-After": retry_after} if retry_after else {}
        return RateLimited(f"upstream rate limit: {message}", headers=headers)
    if status in (400, 422):
        return InvalidRequest(f"upstream rejected the request: {message}", code="upstream_bad_request")
    if status in (401, 403):
        return UpstreamError(
            f"upstream refused steer's credentials ({status}): {message}", upstream_status=status
        )
    if status == 404:
        return UpstreamError(f"upstream has no such model or route: {message}", upstream_status=status)
    if status in (408, 504):
        return UpstreamTimeout(f"upstream timed out ({status}): {message}", upstream_status=status)
    return UpstreamError(f"upstream failed ({status}): {message}", upstream_status=status)
