"""The key list's rotation filters, as the dashboard links to them: overdue now (?overdue=on)
and due within N days (?due_within=N: active keys whose next rotation falls after now and
within N days, so that the two never count a key twice)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from vault import services
from vault.models import SymmetricKey

pytestmark = pytest.mark.django_db


def names(client: Client, **query: object) -> list[str]:
    response = client.get("/keys/", query)
    assert response.status_code == 200
    return [k.name for k in response.context["page"].keys]


@pytest.fixture
def keys(key, custodian) -> None:
    key("in-two-days", rotation_period_days=2)
    key("in-ten-days", rotation_period_days=10)
    key("manual")
    late = key("late", rotation_period_days=1)
    SymmetricKey.objects.filter(pk=late.pk).update(
        next_rotation_at=timezone.now() - timedelta(hours=1)
    )
    services.symmetric_key_suspend(actor=custodian, key=key("paused", rotation_period_days=2))


def test_due_within_lists_active_keys_whose_rotation_comes_due(keys, custodian, signed_in) -> None:
    client = signed_in(custodian)
    assert names(client, due_within=7) == ["in-two-days"]
    assert names(client, due_within=11) == ["in-ten-days", "in-two-days"]
    # Overdue keys are not "due within": the dashboard shows both numbers side by side.
    assert names(client, overdue="on") == ["late"]
    assert names(client, overdue="on", due_within=7) == []
    # Only active keys come due: a suspended key is not rotated.
    assert names(client, due_within=7, state="suspended") == []
    assert names(client, due_within=7, q="ten") == []
    assert names(client) == ["in-ten-days", "in-two-days", "late", "manual", "paused"]


def test_the_filter_is_on_the_form(keys, custodian, signed_in) -> None:
    page = signed_in(custodian).get("/keys/", {"due_within": 7}).content.decode()
    assert 'name="due_within"' in page and 'value="7"' in page
    assert "Rotation due within (days)" in page


@pytest.mark.parametrize("value", ["0", "-1", "soon", "99999"])
def test_bad_due_within_is_a_clear_400(custodian, signed_in, value: str) -> None:
    response = signed_in(custodian).get("/keys/", {"due_within": value})
    assert response.status_code == 400
    assert b'class="error"' in response.content
