"""Key backend fixtures (a pytest plugin loaded by the root conftest.py).

* ``softhsm``: a throwaway SoftHSM2 token for the whole session, in a temporary directory
  named by its own ``SOFTHSM2_CONF``. Without SoftHSM2 the tests that need it are skipped
  with a message saying how to run them; ``KMS_REQUIRE_SOFTHSM=1`` (set by `.ci/run`) turns
  that skip into a failure.
* ``key_backend_name``: autouse, "software" unless a module or test parametrises it with
  :data:`BOTH_BACKENDS`; "pkcs11" switches the settings to the token for that test.

Every PKI and vault module that seals, signs, issues, publishes CRLs, answers OCSP, rotates,
compromises, enrolls or destroys runs on both backends (``pytestmark = BOTH_BACKENDS``); a
test about the software backend alone says so with :data:`SOFTWARE_ONLY`. Modules that never
touch a key backend beyond what those cover run on software only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN_LABEL = "kmsportal-test"

#: ``pytestmark = BOTH_BACKENDS`` (or the decorator on one test): runs on software and pkcs11.
BOTH_BACKENDS = pytest.mark.parametrize("key_backend_name", ["software", "pkcs11"], indirect=True)
#: On one test that is about the software backend alone (say why next to it), in a module
#: whose other tests run on both.
SOFTWARE_ONLY = pytest.mark.parametrize("key_backend_name", ["software"], indirect=True)


@dataclass(frozen=True)
class SoftHSM:
    conf: Path
    token_dir: Path
    module: str
    token_label: str
    pin: str

    def backend_config(self, **overrides: object) -> dict[str, object]:
        options: dict[str, object] = {
            "MODULE": self.module,
            "TOKEN_LABEL": self.token_label,
            "PIN_SECRET": self.pin,
            "MASTER_KEY_IDS": ["hsm1"],
        }
        options.update(overrides)
        return {"BACKEND": "kmsportal.keyring.backends.pkcs11.Pkcs11KeyBackend", "OPTIONS": options}

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a `manage.py` subprocess that uses this token."""
        env = dict(os.environ)
        env.update(
            SOFTHSM2_CONF=str(self.conf),
            KMS_KEY_BACKEND="pkcs11",
            KMS_PKCS11_MODULE=self.module,
            KMS_PKCS11_TOKEN_LABEL=self.token_label,
            KMS_PKCS11_PIN=self.pin,
        )
        env.update(extra)
        return env


def softhsm_missing() -> str | None:
    """Why SoftHSM2 cannot be used here, or None."""
    if not Path(SOFTHSM_MODULE).exists() or shutil.which("softhsm2-util") is None:
        return "SoftHSM2 is not installed"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed"
    return None


def init_token(conf: Path, label: str, pin: str) -> None:
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            pin,
            "--so-pin",
            secrets.token_hex(8),
        ],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHSM:
    reason = softhsm_missing()
    if reason:
        message = (
            f"{reason}: the PKCS#11 key backend tests need it. Install it with "
            "`apt-get install softhsm2` and run `make test` again (.ci/run does, with "
            "KMS_REQUIRE_SOFTHSM=1)."
        )
        if os.environ.get("KMS_REQUIRE_SOFTHSM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    base = tmp_path_factory.mktemp("softhsm")
    token_dir = base / "tokens"
    token_dir.mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {token_dir}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    # The library reads SOFTHSM2_CONF when it is first initialised in this process, which
    # happens after this (the first pkcs11 test): every token of the run lives here.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin = secrets.token_hex(6)
    init_token(conf, TOKEN_LABEL, pin)
    return SoftHSM(conf, token_dir, SOFTHSM_MODULE, TOKEN_LABEL, pin)


@pytest.fixture(autouse=True)
def key_backend_name(request: pytest.FixtureRequest) -> Iterator[str]:
    name = getattr(request, "param", "software")
    if name == "software":
        yield name
        return
    assert name == "pkcs11", name
    hsm: SoftHSM = request.getfixturevalue("softhsm")
    settings = request.getfixturevalue("settings")
    from kmsportal.keyring.backends import key_backend
    from kmsportal.keyring.services import keyring_reset
    from pki.signers import ca_signer_cache_clear

    settings.KMS_KEY_BACKENDS = {**settings.KMS_KEY_BACKENDS, "default": hsm.backend_config()}
    keyring_reset()
    ca_signer_cache_clear()
    key_backend().prepare()  # the master key, once per token
    yield name
    keyring_reset()
    ca_signer_cache_clear()
