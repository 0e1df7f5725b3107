"""Layering rules from STYLE.md, enforced on the source tree."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ["accounts", "audit", "vault", "pki", "kmsportal"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def python_files(*folders: str, named: tuple[str, ...] | None = None) -> list[Path]:
    files = [p for folder in folders for p in (ROOT / folder).rglob("*.py")]
    if named:
        files = [p for p in files if p.name in named or p.parent.name in {"views", "forms"}]
    return sorted(files)


def test_views_and_forms_never_import_cryptography() -> None:
    files = python_files(*APPS, named=("views.py", "forms.py"))
    assert files, "no views or forms found: the test would prove nothing"
    offenders = [
        str(p.relative_to(ROOT))
        for p in files
        if any(m == "cryptography" or m.startswith("cryptography.") for m in imported_modules(p))
    ]
    assert offenders == []


def test_crypto_package_imports_no_django() -> None:
    files = python_files("kmsportal/crypto")
    assert len(files) >= 3
    offenders = [
        str(p.relative_to(ROOT))
        for p in files
        for m in imported_modules(p)
        if m == "django"
        or m.startswith("django.")
        or (m.startswith("kmsportal.") and not m.startswith("kmsportal.crypto"))
    ]
    assert offenders == []


def test_kmsclient_imports_no_django() -> None:
    files = python_files("kmsclient")
    offenders = [
        str(p.relative_to(ROOT))
        for p in files
        for m in imported_modules(p)
        if m == "django"
        or m.startswith("django.")
        or (m.startswith("kmsportal.") and not m.startswith("kmsportal.crypto"))
    ]
    assert offenders == []


def test_the_detector_catches_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "views.py"
    sample.write_text("from cryptography.hazmat.primitives import hashes\nimport django.db\n")
    assert {"cryptography.hazmat.primitives", "django.db"} <= imported_modules(sample)
