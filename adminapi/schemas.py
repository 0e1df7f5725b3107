"""Request and response shapes shared by the admin API's routers (pydantic, via ninja)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from ninja import P, PathEx, Schema
from pydantic import AfterValidator, Field

# Database ids in paths: larger numbers are no id (and must not reach the database).
MAX_ID = 2**53
# A database id in a path (``Path(..., ge=1, le=MAX_ID)``, in ninja's typed spelling).
PathId = PathEx[int, P(ge=1, le=MAX_ID)]
REASON = Field(min_length=1, max_length=1000, description="Why; a second person may read it.")


class Message(Schema):
    """What the portal would have said after the action."""

    message: str


class ReasonIn(Schema):
    reason: str = REASON


def _instant(value: datetime) -> datetime:
    """A moment the services can compute with: naive means UTC (as the portal's forms read
    it), and years outside 1970-2200 are refused before date arithmetic can overflow."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not 1970 <= value.year <= 2200:
        raise ValueError("use a date between 1970 and 2200")
    return value


Instant = Annotated[datetime, AfterValidator(_instant)]
