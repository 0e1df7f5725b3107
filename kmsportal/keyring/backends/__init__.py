"""Key backends, chosen by settings like Django's STORAGES and CACHES.

``settings.KMS_KEY_BACKENDS = {"default": {"BACKEND": "dotted.path.Class", "OPTIONS": {}}}``
(built in `kmsportal.settings` from KMS_KEY_BACKEND=software|pkcs11 and the KMS_PKCS11_*
variables). :func:`key_backend` loads the class with ``import_string`` and builds it once per
process; `kmsportal.keyring.services.keyring_reset` forgets it.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .base import KeyBackend, KeyBackendError, KeyMaterialDestroyed, NewPrivateKey

__all__ = [
    "KeyBackend",
    "KeyBackendError",
    "KeyMaterialDestroyed",
    "NewPrivateKey",
    "key_backend",
    "key_backend_reset",
]

_lock = threading.Lock()
_backends: dict[str, KeyBackend] = {}


def _build(alias: str) -> KeyBackend:
    try:
        config = settings.KMS_KEY_BACKENDS[alias]
    except KeyError:
        raise ImproperlyConfigured(f"KMS_KEY_BACKENDS has no {alias!r} backend") from None
    backend_class = import_string(config["BACKEND"])
    if not issubclass(backend_class, KeyBackend):
        raise ImproperlyConfigured(f"{config['BACKEND']} is not a KeyBackend")
    backend: KeyBackend = backend_class(**config.get("OPTIONS", {}))
    return backend


def key_backend(alias: str = "default") -> KeyBackend:
    """The configured backend, built on first use and kept for the process."""
    backend = _backends.get(alias)
    if backend is None:
        with _lock:
            backend = _backends.get(alias)
            if backend is None:
                backend = _backends[alias] = _build(alias)
    return backend


def key_backend_reset() -> None:
    """Forget the built backends (settings changed: tests, keyring_migrate)."""
    with _lock:
        _backends.clear()
