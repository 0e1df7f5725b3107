"""The SQLite side of the append-only triggers (audit migration 0006).

SQLite triggers cannot read a session setting, so they call `kmsportal_audit_maintenance()`,
registered here on every SQLite connection the application opens. It answers 0 (refuse),
except inside `sqlite_maintenance()`, which only the test suite's flush between transactional
tests and its tampering helpers use. A connection opened without this function (the sqlite3
shell, another program) cannot UPDATE or DELETE audit rows either: the trigger fails with
"no such function".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_state = threading.local()


def _maintenance() -> int:
    return 1 if getattr(_state, "on", False) else 0


def register_sqlite_function(sender: Any, connection: Any, **kwargs: Any) -> None:
    """`connection_created` receiver: give each SQLite connection the trigger's function."""
    if connection.vendor == "sqlite":
        connection.connection.create_function("kmsportal_audit_maintenance", 0, _maintenance)


@contextmanager
def sqlite_maintenance() -> Iterator[None]:
    """Let this thread's SQLite connection change audit rows (tests only)."""
    previous = getattr(_state, "on", False)
    _state.on = True
    try:
        yield
    finally:
        _state.on = previous


def sqlite_maintenance_set(on: bool) -> None:
    """Switch the bypass on or off for this thread (the test suite's flush fixture)."""
    _state.on = on
