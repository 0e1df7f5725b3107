"""The root of every error this project reports to a person or a program (no Django here:
the crypto package is the bottom layer, so the root lives with it).

A :class:`KMSError` carries a stable machine-readable ``code``, the HTTP ``status`` it maps to
and a ``message`` written for the person who caused it. ``kmsportal.errors`` renders it as an
RFC 9457 problem document; pages and command-line tools show ``message``.
"""

from __future__ import annotations

__all__ = ["KMSError"]


class KMSError(Exception):
    """A request that cannot be done as asked: ``code``, ``status`` and a ``message``."""

    code: str = "refused"
    status: int = 400

    def __init__(
        self, message: str = "", *args: object, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, *args)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args and self.args[0] else self.code.replace("_", " ")
