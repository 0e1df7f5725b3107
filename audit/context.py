"""Who and where a request comes from, available to services without passing the request.

The middleware sets it for every request; management commands leave it empty (system actor).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestMeta:
    request_id: str
    source_ip: str


_current: contextvars.ContextVar[RequestMeta | None] = contextvars.ContextVar(
    "audit_request_meta", default=None
)


def request_meta() -> RequestMeta | None:
    return _current.get()


def request_meta_set(meta: RequestMeta | None) -> contextvars.Token[RequestMeta | None]:
    return _current.set(meta)


def request_meta_reset(token: contextvars.Token[RequestMeta | None]) -> None:
    _current.reset(token)
