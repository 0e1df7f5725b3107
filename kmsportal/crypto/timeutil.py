"""One idea of "a UTC datetime" for the X.509, CRL and OCSP code."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["as_utc"]


def as_utc(
    moment: object,
    *,
    what: str = "the time",
    error: Callable[[str], Exception] = TypeError,
    naive_is_utc: bool = True,
) -> datetime:
    """`moment` as an aware datetime in UTC.

    A naive datetime is taken as UTC (cryptography's convention) when `naive_is_utc`, and
    refused with ``TypeError`` otherwise. Anything that is not a datetime raises
    ``error(message)``, the caller's domain error, with `what` naming the value.
    """
    if not isinstance(moment, datetime):
        raise error(f"{what} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None:
        if not naive_is_utc:
            raise TypeError("datetimes must be timezone-aware")
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
