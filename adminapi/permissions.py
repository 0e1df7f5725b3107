"""The declarative authorization table of the admin API: one rule per operation id.

Each router module (adminapi/routers/<area>.py) defines, beside its ``router``::

    RULES: dict[str, Rule] = {
        "keys_list": Rule(("vault.view_symmetrickey",), write=False),
        "keys_create": Rule(("vault.add_symmetrickey",), write=True),
    }

keyed by operation id (the view function's name, which is the operationId in
/api/v1/openapi.json and must be unique across routers). ``permissions`` are those the portal
page for the same action checks (all required); ``write`` says the operation may change state
(it must then not be GET). A rule whose object-level check goes further (an approval needs the
permission of the request's kind) declares it with ``kind``; ``note`` says anything else.

:func:`operation_rules` gathers every router's RULES; tests/adminapi/test_authorization_matrix.py
checks that every operation in openapi.json has exactly one rule and that, for every role and
token scope, the API refuses (403) exactly when the rule says so.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import NamedTuple


class Rule(NamedTuple):
    """``permissions``: all needed. ``any_of``: at least one of them needed too.
    ``kind``: the operation acts on a two-person request whose kind (in the path) decides:
    ``"visible"`` (seeing it) or ``"permission"`` (deciding it), per kmsportal.two_person."""

    permissions: tuple[str, ...]
    write: bool
    any_of: tuple[str, ...] = ()
    kind: str = ""
    note: str = ""


def operation_rules() -> dict[str, Rule]:
    """Every router's RULES, merged; a duplicate operation id is an error."""
    from . import routers

    rules: dict[str, Rule] = {}
    for info in pkgutil.iter_modules(routers.__path__):
        module = importlib.import_module(f"{routers.__name__}.{info.name}")
        for operation_id, rule in getattr(module, "RULES", {}).items():
            if operation_id in rules:
                raise ValueError(f"operation {operation_id!r} is declared twice")
            rules[operation_id] = rule
    return rules
