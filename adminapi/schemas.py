"""Request and response shapes shared by the admin API's routers (pydantic, via ninja)."""

from __future__ import annotations

from ninja import Schema
from pydantic import Field

# Database ids in paths: larger numbers are no id (and must not reach the database).
MAX_ID = 2**53
REASON = Field(min_length=1, max_length=1000, description="Why; a second person may read it.")


class Message(Schema):
    """What the portal would have said after the action."""

    message: str


class ReasonIn(Schema):
    reason: str = REASON
