"""A client's identity directory: where ``enroll`` stores its key and certificates.

Layout (file names are recorded in ``kmsclient.json``, relative to the directory)::

    kmsclient.json   {"url", "client", "cert", "key", "chain", "ca_cert", "not_after",
                      "server_identity": {"ca_spki_sha256", "deployment"}}
    client.key       the client's private key (PKCS#8 PEM, mode 0600, never leaves the host)
    client.crt       its ``kms-client`` certificate
    chain.pem        the certificate chain the KMS returned, leaf first, up to the root
    ca.pem           the pinned root: the one given to ``enroll --ca-cert``

``server_identity`` is what the client pinned at enrollment, next to the root: the SHA-256
of the server-identity CA's public key (SPKI) and this deployment's URI. Only a server
certificate issued by that key and naming that deployment is taken for the KMS. Directories
enrolled before it existed lack it; ``kmsclient pin-server`` adds it (docs/server-identity.md).

Commands find the directory with ``--dir DIR``, else ``$KMSCLIENT_DIR``, else the current
directory. Secret files are created with ``os.open(..., 0o600)`` so they are never readable
by others, not even for an instant.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmsportal.crypto.errors import KMSError

__all__ = [
    "CONFIG_FILE",
    "ENV_VAR",
    "Identity",
    "IdentityError",
    "load_identity",
    "resolve_identity_dir",
    "write_file",
    "write_secret_file",
]

CONFIG_FILE = "kmsclient.json"
ENV_VAR = "KMSCLIENT_DIR"
_FILE_KEYS = ("cert", "key", "chain", "ca_cert")


class IdentityError(KMSError):
    """The identity directory or one of its files is missing, unreadable or unusable."""

    code = "identity_unusable"


@dataclass(frozen=True)
class Identity:
    """An enrolled client: the server URL, its name and the paths of its files."""

    directory: Path
    url: str
    client: str
    cert: Path
    key: Path
    chain: Path
    ca_cert: Path
    not_after: str = ""
    #: The pinned server identity ("" when enrolled before pinning existed).
    server_ca_spki_sha256: str = ""
    deployment: str = ""


def resolve_identity_dir(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """``explicit`` (``--dir``), else ``$KMSCLIENT_DIR``, else the current directory."""
    if explicit:
        return Path(explicit)
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR])
    return Path.cwd()


def load_identity(directory: str | os.PathLike[str]) -> Identity:
    """Read ``kmsclient.json`` in ``directory``; IdentityError with a one-line reason."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IdentityError(
            f"no client identity in {directory} ({CONFIG_FILE} not found): run "
            f"`python -m kmsclient enroll` first, or pass --dir or set ${ENV_VAR}"
        ) from None
    except OSError as exc:
        raise IdentityError(f"cannot read {config_path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise IdentityError(f"{config_path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise IdentityError(f"{config_path} must hold a JSON object")
    missing = [k for k in ("url", "client", *_FILE_KEYS) if not isinstance(config.get(k), str)]
    if missing:
        raise IdentityError(f"{config_path} lacks: {', '.join(missing)}")
    paths = {k: directory / config[k] for k in _FILE_KEYS}
    pinned = config.get("server_identity")
    if pinned is not None and not (
        isinstance(pinned, dict)
        and isinstance(pinned.get("ca_spki_sha256"), str)
        and isinstance(pinned.get("deployment"), str)
    ):
        raise IdentityError(
            f"{config_path}: server_identity must be {{ca_spki_sha256, deployment}} strings"
        )
    return Identity(
        directory=directory,
        url=config["url"],
        client=config["client"],
        not_after=str(config.get("not_after", "")),
        server_ca_spki_sha256=pinned["ca_spki_sha256"] if pinned else "",
        deployment=pinned["deployment"] if pinned else "",
        **paths,
    )


def write_secret_file(path: str | os.PathLike[str], data: bytes, *, force: bool = False) -> None:
    """Write ``data`` to a new file readable by its owner only (mode 0600).

    Without ``force`` an existing file is never touched (FileExistsError). With ``force`` the
    data goes to a fresh 0600 file in the same directory which then replaces ``path``, so the
    old file's (possibly wider) mode is not inherited and no reader sees a half-written key.
    """
    path = Path(path)
    if not force:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        _write_all(fd, data, path)
        return
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        _write_all(fd, data, Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_all(fd: int, data: bytes, path: Path) -> None:
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write public data (certificates, the config) with mode 0644."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_config(identity: Identity) -> None:
    """Write ``kmsclient.json`` for ``identity`` (file names relative to its directory)."""
    config: dict[str, Any] = {
        "url": identity.url,
        "client": identity.client,
        "not_after": identity.not_after,
        **{k: _relative(getattr(identity, k), identity.directory) for k in _FILE_KEYS},
    }
    if identity.server_ca_spki_sha256 or identity.deployment:
        config["server_identity"] = {
            "ca_spki_sha256": identity.server_ca_spki_sha256,
            "deployment": identity.deployment,
        }
    write_file(
        identity.directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode("utf-8")
    )


def _relative(path: Path, directory: Path) -> str:
    try:
        return str(path.relative_to(directory))
    except ValueError:
        return str(path.resolve())
