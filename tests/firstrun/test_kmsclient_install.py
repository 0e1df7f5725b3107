"""kmsclient is its own distribution: installed into a fresh virtualenv outside the
repository, it runs from any directory with only cryptography and requests beside it."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import kmsclient

ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT = (
    420  # pip may fetch setuptools, cryptography and requests (or take them from its cache)
)
ALLOWED = {
    "kmsclient",
    "cryptography",
    "cffi",
    "pycparser",
    "requests",
    "certifi",
    "charset-normalizer",
    "idna",
    "urllib3",
    "pip",
    "setuptools",
}

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def certificates(directory: Path) -> None:
    """A root and a server certificate under it, written as root.pem and leaf.pem."""
    now = dt.datetime.now(dt.UTC)
    root_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Install Test Root")])
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc.example.org")]))
        .issuer_name(root_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("svc.example.org")]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    (directory / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (directory / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))


def test_pip_install_into_a_fresh_virtualenv(tmp_path: Path) -> None:
    venv = tmp_path / "service-venv"
    assert run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path).returncode == 0
    installed = run(
        [str(venv / "bin/pip"), "install", "--disable-pip-version-check", str(ROOT / "kmsclient")],
        cwd=tmp_path,
        timeout=PIP_TIMEOUT,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr

    packages = run([str(venv / "bin/pip"), "list", "--format=freeze"], cwd=tmp_path).stdout
    names = {line.split("==")[0].lower() for line in packages.split()}
    assert "kmsclient" in names and "django" not in names
    assert names <= ALLOWED, names - ALLOWED

    # Elsewhere than the repository: the console script and python -m.
    work = tmp_path / "elsewhere"
    work.mkdir()
    version = run([str(venv / "bin/kmsclient"), "--version"], cwd=work)
    assert (
        version.returncode == 0 and version.stdout.strip() == f"kmsclient {kmsclient.__version__}"
    )
    helped = run([str(venv / "bin/python"), "-m", "kmsclient", "--help"], cwd=work)
    assert helped.returncode == 0 and "enroll" in helped.stdout and "fetch" in helped.stdout
    imported = run(
        [
            str(venv / "bin/python"),
            "-c",
            "import kmsportal.crypto.protocol, kmsclient.client as c; print(c.__file__)",
        ],
        cwd=work,
    )
    assert imported.returncode == 0, imported.stderr
    assert str(venv) in imported.stdout  # the installed copy, not the repository's

    # The shared crypto really works: an offline certificate check.
    certificates(work)
    checked = run(
        [
            str(venv / "bin/kmsclient"),
            "verify-cert",
            "leaf.pem",
            "--ca-cert",
            "root.pem",
            "--hostname",
            "svc.example.org",
            "--purpose",
            "server",
            "--offline",  # no revocation source here: every other check must pass
        ],
        cwd=work,
    )
    assert checked.returncode == 3, checked.stdout + checked.stderr
    assert "passed every other check" in checked.stdout


def test_the_wheel_depends_on_cryptography_and_requests_only(tmp_path: Path) -> None:
    built = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT / "kmsclient"),
        ],
        cwd=tmp_path,
        timeout=PIP_TIMEOUT,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("kmsclient-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(
            archive.read(f"kmsclient-{kmsclient.__version__}.dist-info/METADATA").decode()
        )
        entry_points = archive.read(
            f"kmsclient-{kmsclient.__version__}.dist-info/entry_points.txt"
        ).decode()
    requirements = sorted(
        r.split(">")[0].split("=")[0].strip() for r in metadata.get_all("Requires-Dist")
    )
    assert requirements == ["cryptography", "requests"]
    assert "kmsclient = kmsclient.cli:main" in entry_points
    assert {
        "kmsclient/cli.py",
        "kmsportal/__init__.py",
        "kmsportal/crypto/protocol/__init__.py",
        "kmsportal/crypto/x509/__init__.py",
    } <= names
    assert not any(
        n.startswith(("kmsportal/settings", "vault/", "pki/", "kmsclient/_build")) for n in names
    )
    # The repository is left as it was: no build directories next to the sources.
    assert (
        not list((ROOT / "kmsclient").glob("*.egg-info"))
        and not (ROOT / "kmsclient" / "build").exists()
    )
