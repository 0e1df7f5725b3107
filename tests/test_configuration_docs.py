"""Every environment variable kmsportal/settings.py reads is documented in
docs/configuration.md (which says it lists every setting) and in .env.example (which says it
documents each one), and .env.example's values are the defaults: copying it changes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = (ROOT / "kmsportal" / "settings.py").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()

#: env("X"), env.str("X", ...), env.list(\n    "X", ...) and the like.
_READ = re.compile(r"\benv(?:\.\w+)?\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']")


def variables_read() -> list[str]:
    return sorted(set(_READ.findall(SETTINGS)))


def example_values() -> dict[str, str]:
    """The uncommented NAME=value lines of .env.example."""
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE, re.MULTILINE))


def test_the_settings_reader_is_found() -> None:
    found = variables_read()
    # A few read in different shapes, so the pattern keeps up with the file.
    assert {"SECRET_KEY", "KMS_NOTIFY_WINDOWS_DAYS", "EMAIL_URL", "KMS_AUDIT_PUBLIC_KEYS"} <= set(
        found
    )
    assert len(found) >= 45


def test_every_setting_is_in_docs_configuration_md() -> None:
    missing = [name for name in variables_read() if f"`{name}`" not in CONFIGURATION]
    assert missing == [], f"add to docs/configuration.md: {missing}"


def test_every_setting_is_in_env_example() -> None:
    missing = [
        name
        for name in variables_read()
        if not re.search(rf"^(# )?{name}=", ENV_EXAMPLE, re.MULTILINE)
    ]
    assert missing == [], f"add to .env.example (a NAME= line, commented if need be): {missing}"


_SHOW = """
import json
from django.conf import settings
names = json.loads(input())
print(json.dumps({n: repr(getattr(settings, n, None)) for n in names}))
"""


def settings_with(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in variables_read()}
    env.update(extra)
    env.update(
        SECRET_KEY="a-real-looking-secret-key-for-this-test-only-1234567890",
        KMS_DATA_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="kmsportal.settings",
    )
    names = sorted(example_values())
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + _SHOW],
        cwd=ROOT, env=env, input=json.dumps(names), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_env_example_values_are_the_defaults(tmp_path: Path) -> None:
    values = {
        name: value
        for name, value in example_values().items()
        if name not in {"SECRET_KEY", "KMS_DATA_DIR"}
    }
    assert settings_with(tmp_path, values) == settings_with(tmp_path, {})
