"""Correlation ids: each request and each task carries one id into logs and audit."""

import contextvars
import logging
import re
import uuid

_correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "correlation_id", default=""
)
_VALID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def correlation_id() -> str:
    return _correlation_id.get()


def set_correlation_id(value: str) -> contextvars.Token:
    return _correlation_id.set(value)


def reset_correlation_id(token: contextvars.Token) -> None:
    _correlation_id.reset(token)


class CorrelationIdMiddleware:
    """Takes a well-formed ``X-Request-ID`` from the proxy or makes one; echoes it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        value = incoming if _VALID.match(incoming) else uuid.uuid4().hex
        token = set_correlation_id(value)
        try:
            response = self.get_response(request)
        finally:
            reset_correlation_id(token)
        response["X-Request-ID"] = value
        return response


class CorrelationIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id() or "-"
        return True


class GateCacheMiddleware:
    """Lets the permission gate read the user's groups once per request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from psi.permissions import grantees_cached_for_request

        with grantees_cached_for_request():
            return self.get_response(request)
