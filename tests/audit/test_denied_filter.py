"""The audit list's outcome and since filters in the form the dashboard links to them
(`?outcome=denied&since=YYYY-MM-DDTHH:MM:SS`, UTC): exactly the denied events since then."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.utils import timezone

from accounts.roles import Role
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_denied_since_lists_exactly_the_denied_events(role_client) -> None:
    auditor = role_client(Role.AUDITOR)
    custodian = role_client(Role.KEY_CUSTODIAN)
    for url in ("/audit/", "/pki/", "/users/"):
        assert custodian.get(url).status_code == 403
    hour_ago = (timezone.now() - timedelta(hours=1)).astimezone(UTC)
    since = hour_ago.strftime("%Y-%m-%dT%H:%M:%S")
    events = auditor.get("/audit/", {"outcome": "denied", "since": since}).context["page"].events
    expected = AuditEvent.objects.filter(
        outcome="denied", time__gte=hour_ago.replace(microsecond=0)
    )
    assert sorted(e.sequence for e in events) == sorted(expected.values_list("sequence", flat=True))
    assert len(events) == 3 and {e.actor_name for e in events} == {"user-key_custodian"}
    future = (timezone.now() + timedelta(minutes=5)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert (
        auditor.get("/audit/", {"outcome": "denied", "since": future}).context["page"].events == []
    )
