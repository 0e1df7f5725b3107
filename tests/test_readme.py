"""The README is the user's manual: it must list every audit event type the code can write,
and start with the two commands."""

from __future__ import annotations

from pathlib import Path

from audit.registry import audit_action_choices

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_readme_lists_every_audit_event_type() -> None:
    actions = [value for value, _ in audit_action_choices()]
    assert len(actions) > 40  # every app registered its types
    missing = [value for value in actions if f"`{value}`" not in README]
    assert missing == []
