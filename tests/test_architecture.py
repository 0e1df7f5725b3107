"""Layering rules from DESIGN.md and STYLE.md.

The import-linter contracts in pyproject.toml hold the layers and boundaries (`lint-imports`
runs in `make test`, and here under pytest). What they cannot say is checked below on the
source tree: which modules are views or forms (found by what they define, not by file name),
that those never import `cryptography`, that each is covered by a page contract, and that
the crypto package and kmsclient take nothing from kmsportal but kmsportal.crypto.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Django apps with pages (each has an import-linter page contract in pyproject.toml).
APPS = ["accounts", "audit", "vault", "pki", "notifications", "portal", "adminapi"]
#: Where a view or form may also be defined: the project package (shared mixins, health).
PROJECT = ["kmsportal"]
#: Django's class-based views and forms, by the names this code base subclasses.
VIEW_OR_FORM_BASES = ("View", "Form", "ModelForm", "Mixin")
DJANGO_WEB_MODULES = ("django.views", "django.forms", "django.contrib.auth.views")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "django":
                names.update(f"django.{alias.name}" for alias in node.names)
    return names


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def is_view_or_form_module(path: Path) -> bool:
    """A module that defines a view, a form or a view mixin (a class whose base is a Django
    View/Form or one of ours, named so), or that imports Django's views or forms, or whose
    name says it is one."""
    if path.stem.endswith(("views", "forms")):
        return True
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            _base_name(base).endswith(VIEW_OR_FORM_BASES) for base in node.bases
        ):
            return True
    return any(m.startswith(DJANGO_WEB_MODULES) for m in imported_modules(path))


def python_files(*folders: str) -> list[Path]:
    return sorted(
        p
        for folder in folders
        for p in (ROOT / folder).rglob("*.py")
        if "migrations" not in p.parts and "build" not in p.parts
    )


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def view_and_form_modules(*folders: str) -> list[Path]:
    return [p for p in python_files(*folders) if is_view_or_form_module(p)]


def contracts() -> list[dict]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def test_views_and_forms_never_import_cryptography() -> None:
    files = view_and_form_modules(*APPS, *PROJECT)
    assert len(files) >= 15, "too few views or forms found: the test would prove nothing"
    offenders = [
        module_name(p)
        for p in files
        if any(m == "cryptography" or m.startswith("cryptography.") for m in imported_modules(p))
    ]
    assert offenders == []


def test_every_view_and_form_module_of_an_app_is_under_a_page_contract() -> None:
    """A new views module (say vault/grant_views.py) must join its app's page contract, or
    other apps could import it unseen."""
    protected = {
        module
        for contract in contracts()
        if contract["type"] == "protected"
        for module in contract["protected_modules"]
    }
    found = {module_name(p) for p in view_and_form_modules(*APPS)}
    found |= {
        module_name(p)
        for p in python_files(*APPS)
        if "urlpatterns" in p.read_text() and p.stem.endswith("urls")
    }
    # A protected package protects its modules too (pki.views.cas under "pki.views").
    unprotected = {
        module
        for module in found
        if not any(module == p or module.startswith(p + ".") for p in protected)
    }
    assert unprotected == set()


def test_the_detector_finds_views_by_what_they_define(tmp_path: Path) -> None:
    sample = tmp_path / "grants.py"
    sample.write_text(
        "from kmsportal.mixins import PortalPermissionMixin\n\nclass A(PortalPermissionMixin):\n    pass\n"
    )
    assert is_view_or_form_module(sample)
    plain = tmp_path / "services.py"
    plain.write_text("from cryptography import x509\n\ndef f() -> None:\n    pass\n")
    assert not is_view_or_form_module(plain)
    assert "cryptography" in imported_modules(plain)


def test_crypto_and_kmsclient_take_nothing_from_kmsportal_but_its_crypto_package() -> None:
    """The kmsclient wheel ships kmsportal.crypto only (kmsclient/pyproject.toml); the
    contracts forbid Django and the apps, this forbids the rest of kmsportal."""
    files = python_files("kmsportal/crypto", "kmsclient")
    assert len(files) >= 10
    offenders = [
        f"{module_name(p)} -> {m}"
        for p in files
        for m in imported_modules(p)
        if m.startswith("kmsportal.") and not m.startswith("kmsportal.crypto")
    ]
    assert offenders == []


def test_import_contracts_hold() -> None:
    """`lint-imports` (the layers, forbidden and page contracts in pyproject.toml)."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is not installed (requirements-dev.txt)"
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
