"""kmsportal.crypto.timeutil.as_utc: the one UTC conversion of the X.509, CRL and OCSP code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from kmsportal.crypto.crl import CRLError
from kmsportal.crypto.timeutil import as_utc


def test_aware_times_are_converted_to_utc() -> None:
    moment = datetime(2026, 12, 1, 18, 30, tzinfo=timezone(timedelta(hours=2)))
    converted = as_utc(moment)
    assert converted == moment
    assert converted.tzinfo is UTC and converted.hour == 16


def test_naive_times_are_utc_unless_refused() -> None:
    naive = datetime(2026, 12, 1, 18, 30)
    assert as_utc(naive) == naive.replace(tzinfo=UTC)
    with pytest.raises(TypeError, match="timezone-aware"):
        as_utc(naive, naive_is_utc=False)


def test_other_types_raise_the_callers_error() -> None:
    with pytest.raises(CRLError, match="this_update must be a datetime, not str"):
        as_utc("2026-12-01", what="this_update", error=CRLError)
