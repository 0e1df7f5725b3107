"""PEP 517 backend of the kmsclient distribution (see kmsclient/pyproject.toml).

It copies kmsclient/*.py and ../kmsportal/crypto (its modules and subpackages such as
kmsportal/crypto/x509/) into a temporary directory with a
generated pyproject.toml and lets setuptools build the wheel (or sdist) from there. Nothing in
the repository moves; the sdist it builds is self-contained (built from the staged tree), so a
wheel can be rebuilt from it anywhere.

The modules of kmsportal/crypto must not import Django or the rest of kmsportal: the build
stops with a message if one does, rather than ship a client that cannot import.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from setuptools import build_meta

HERE = Path(__file__).resolve().parent
CRYPTO = HERE.parent / "kmsportal" / "crypto"
NAME = "kmsclient"
#: The wheel's only dependencies (lower bounds: what the code is tested with, major versions).
DEPENDENCIES = ("cryptography>=46", "requests>=2.32")
NOT_SHIPPED = {"_build_backend.py"}

PYPROJECT = """\
[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "kmsportal client: enroll a service, fetch its keys, verify certificates, CRLs and audit exports"
readme = "README.txt"
requires-python = ">=3.11"
dependencies = [{dependencies}]

[project.scripts]
kmsclient = "kmsclient.cli:main"

[tool.setuptools]
packages = [{packages}]
"""

README = """\
kmsclient: the client of kmsportal for services and relying parties.

  kmsclient --help
  kmsclient enroll --url http://kms:8000 --token=T --ca-cert kms-root.pem --out DIR
  kmsclient fetch NAME --dir DIR --out FILE

Depends on cryptography and requests only. See the kmsportal documentation (docs/kmsclient.md).
"""

KMSPORTAL_INIT = '"""kmsportal.crypto: the pure functions shared by kmsportal and kmsclient."""\n'


def version() -> str:
    """``__version__`` of kmsclient/__init__.py, read without importing it."""
    text = (HERE / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if found is None:
        raise RuntimeError("kmsclient/__init__.py defines no __version__")
    return found.group(1)


def _forbidden_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [
        name
        for name in names
        if name == "django"
        or name.startswith("django.")
        or (name.startswith("kmsportal.") and not name.startswith("kmsportal.crypto"))
    ]


def _copy_modules(source: Path, target: Path, package: str) -> list[str]:
    """Copy the package's modules and, recursively, its subpackages (directories with an
    ``__init__.py``); the dotted names of the packages copied."""
    target.mkdir(parents=True)
    for module in sorted(source.glob("*.py")):
        if module.name in NOT_SHIPPED:
            continue
        problems = _forbidden_imports(module)
        if problems:
            raise RuntimeError(f"{module} imports {', '.join(problems)}: kmsclient cannot ship it")
        shutil.copy2(module, target / module.name)
    packages = [package]
    for sub in sorted(source.iterdir()):
        if sub.is_dir() and (sub / "__init__.py").is_file():
            packages += _copy_modules(sub, target / sub.name, f"{package}.{sub.name}")
    return packages


@contextmanager
def staged() -> Iterator[Path]:
    """A temporary source tree of the distribution; the working directory while in use."""
    with tempfile.TemporaryDirectory(prefix="kmsclient-build-") as temporary:
        root = Path(temporary)
        packages = _copy_modules(HERE, root / "kmsclient", "kmsclient")
        packages += _copy_modules(CRYPTO, root / "kmsportal" / "crypto", "kmsportal.crypto")
        packages.insert(1, "kmsportal")
        (root / "kmsportal" / "__init__.py").write_text(KMSPORTAL_INIT, encoding="utf-8")
        (root / "README.txt").write_text(README, encoding="utf-8")
        dependencies = ", ".join(f'"{d}"' for d in DEPENDENCIES)
        (root / "pyproject.toml").write_text(
            PYPROJECT.format(
                name=NAME,
                version=version(),
                dependencies=dependencies,
                packages=", ".join(f'"{p}"' for p in packages),
            ),
            encoding="utf-8",
        )
        previous = os.getcwd()
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(previous)


def _absolute(directory: str) -> str:
    return str(Path(directory).resolve())


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    return []


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    target = _absolute(metadata_directory)
    with staged():
        return str(build_meta.prepare_metadata_for_build_wheel(target, config_settings))


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    target = _absolute(wheel_directory)
    with staged():
        # The metadata directory (if any) was prepared in another staging tree: let setuptools
        # write it afresh here rather than point it at a path that no longer exists.
        return str(build_meta.build_wheel(target, config_settings))


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    target = _absolute(sdist_directory)
    with staged():
        return str(build_meta.build_sdist(target, config_settings))
