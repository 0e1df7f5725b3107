"""The operations API in kmsclient: use keys that never leave the KMS.

`OperationsMixin` gives `KMSClient` ``encrypt``, ``decrypt``, ``reencrypt``,
``generate_data_key``, ``mac``, ``mac_verify``, ``sign``, ``verify``, ``public_key`` and the
batch form ``operate``. Every request travels inside a session (`kmsportal.crypto.session`):
the session is opened with the same signed ephemeral Diffie-Hellman and the same server
identity checks as a key fetch (the server identity pinned at enrollment, its stapled
status, its signature over the transcript), then each request and answer is AES-256-GCM
encrypted under the session's keys, so plaintext and data keys never cross the wire in clear.

Requests travel in the binary frame (`kmsportal.crypto.batch_frame`): items' data as
length-prefixed bytes in the sealed body, never base64 or JSON text; ``operate(...,
framing="json")`` sends the JSON envelope instead (servers from before the binary frame).

Each thread has its own session (a session's counter must only grow, so one session cannot
carry concurrent requests); an expired or forgotten session is reopened once, transparently.
Free of Django, like the rest of kmsclient.
"""

from __future__ import annotations

import base64
import binascii
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, cast

import requests

from kmsportal.crypto import batch_frame, protocol
from kmsportal.crypto import session as wire
from kmsportal.crypto.dh import X25519

SESSION_PATH = "/api/v1/session"
PING_PATH = "/api/v1/session/ping"
OPERATION_PATH = "/api/v1/keys/"
#: Reopen a session this long before the server would expire it.
_SESSION_MARGIN = timedelta(seconds=30)
_REOPEN_CODES = frozenset({"unknown_session", "session_expired"})


@dataclass
class DataKey:
    """A data key for envelope encryption: `plaintext` (None if not asked for) and its
    `ciphertext` under the KMS key (store it next to the data)."""

    ciphertext: str
    version: int
    plaintext: bytes | None = field(default=None, repr=False)


@dataclass
class _Session:
    keys: wire.SessionKeys
    expires_at: Any
    counter: int = 0


def _b64(data: bytes | bytearray) -> str:
    if not isinstance(data, bytes | bytearray):
        raise TypeError("pass bytes")
    return base64.b64encode(bytes(data)).decode("ascii")


def _bytes(data: object) -> bytes:
    if not isinstance(data, bytes | bytearray):
        raise TypeError("pass bytes")
    return bytes(data)


Framing = Literal["binary", "json"]
#: Item members that are bytes (base64 text in the JSON envelope), results likewise.
_BYTES_MEMBERS = frozenset({"plaintext", "message"})


def _items_as_bytes(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items for the binary frame: plaintext and message as bytes (base64 text accepted, as
    the JSON envelope takes it, and decoded here)."""
    if not all(isinstance(item, dict) for item in items):
        raise TypeError("each item of a batch must be a dict")
    if not any(
        type(item.get("plaintext")) is str or type(item.get("message")) is str for item in items
    ):
        return items  # the usual case: bytes already, one pass over the batch
    converted = []
    for item in items:
        if any(type(item.get(name)) is str for name in _BYTES_MEMBERS):
            item = dict(item)
            for name in _BYTES_MEMBERS:
                if type(item.get(name)) is str:
                    try:
                        item[name] = base64.b64decode(item[name], validate=True)
                    except (binascii.Error, ValueError):
                        raise ValueError(f"{name} is neither bytes nor base64 text") from None
        converted.append(item)
    return converted


def _items_as_text(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items for the JSON envelope: bytes members as base64 text."""
    converted = []
    for item in items:
        if any(isinstance(item.get(name), bytes | bytearray) for name in _BYTES_MEMBERS):
            item = {
                name: _b64(value) if name in _BYTES_MEMBERS and isinstance(value, bytes | bytearray)
                else value
                for name, value in item.items()
            }  # fmt: skip
        converted.append(item)
    return converted


class OperationsMixin:
    """Operations methods of `kmsclient.client.KMSClient` (see the module docstring)."""

    _local: threading.local

    # -- sessions

    def _operations_local(self) -> threading.local:
        local = self.__dict__.get("_local")
        if local is None:
            local = self.__dict__.setdefault("_local", threading.local())
        return cast(threading.local, local)

    def _open_session(self) -> _Session:
        from kmsclient.client import KMSClientError, _json_answer, _post_json, problem_error

        if not self.server_ca_spki_sha256 or not self.deployment:  # type: ignore[attr-defined]
            from kmsclient.client import _not_pinned_message

            raise KMSClientError(
                "untrusted_server_identity",
                _not_pinned_message(self._directory),  # type: ignore[attr-defined]
            )
        body, state = wire.build_session_request(
            client_private_key=self._key,  # type: ignore[attr-defined]
            client_certificate_pem=self._cert_pem,  # type: ignore[attr-defined]
            now=self._clock(),  # type: ignore[attr-defined]
            group=X25519,
        )
        response = _post_json(
            self.session,  # type: ignore[attr-defined]
            self.url + SESSION_PATH,  # type: ignore[attr-defined]
            body,
            self.timeout,  # type: ignore[attr-defined]
        )
        if response.status_code != 201:
            raise problem_error(response)
        answer = _json_answer(response)
        leaf = self._verify_server(answer)  # type: ignore[attr-defined]
        try:
            opened = wire.open_session_response(
                state=state, response=answer, trusted_server_public_key=leaf.public_key()
            )
        except protocol.ProtocolError as exc:
            raise KMSClientError(
                exc.code, f"rejected the KMS's session answer: {exc.code}: {exc.message}"
            ) from None
        current = _Session(keys=opened.keys, expires_at=opened.expires_at)
        self._operations_local().session = current
        return current

    def _current_session(self) -> _Session:
        current = getattr(self._operations_local(), "session", None)
        if current is None or current.expires_at - _SESSION_MARGIN <= self._clock():  # type: ignore[attr-defined]
            current = self._open_session()
        return current

    def _call(self, operation: str, path: str, body: Any, framing: Framing = "binary") -> Any:
        """One protected request; the decrypted answer body (KMSClientError if refused)."""
        from kmsclient.client import KMSClientError, _json_answer, _post_json, problem_error

        for attempt in (1, 2):
            current = self._current_session()
            current.counter += 1
            if framing == "binary":
                frame, nonce = batch_frame.seal_request(
                    current.keys, operation, current.counter, body
                )
                response = self._post_frame(self.url + path, frame)  # type: ignore[attr-defined]
            else:
                envelope, nonce = wire.seal_request(current.keys, operation, current.counter, body)
                response = _post_json(
                    self.session,  # type: ignore[attr-defined]
                    self.url + path,  # type: ignore[attr-defined]
                    envelope,
                    self.timeout,  # type: ignore[attr-defined]
                )
            content_type = response.headers.get("Content-Type", "")
            if content_type.startswith("application/problem+json"):
                error = problem_error(response)
                if error.code in _REOPEN_CODES and attempt == 1:
                    self._operations_local().session = None
                    continue
                raise error
            try:
                if framing == "binary":
                    if content_type != batch_frame.MEDIA_TYPE:
                        raise problem_error(response)
                    status, answer = batch_frame.open_response(
                        current.keys, operation, current.counter, nonce, response.content
                    )
                else:
                    status, answer = wire.open_response(
                        current.keys, operation, current.counter, nonce, _json_answer(response)
                    )
            except protocol.ProtocolError as exc:
                raise KMSClientError(
                    exc.code, f"rejected the KMS's answer: {exc.code}: {exc.message}"
                ) from None
            if status != 200:
                detail = answer.get("detail", "") if isinstance(answer, dict) else ""
                code = answer.get("code", "refused") if isinstance(answer, dict) else "refused"
                raise KMSClientError(str(code), str(detail), origin="server", status=status)
            return answer
        raise AssertionError("unreachable")

    def _post_frame(self, url: str, frame: bytes) -> requests.Response:
        from kmsclient.client import KMSClientError

        try:
            return self.session.post(  # type: ignore[attr-defined,no-any-return]
                url,
                data=frame,
                headers={
                    "Content-Type": batch_frame.MEDIA_TYPE,
                    "Accept": f"{batch_frame.MEDIA_TYPE}, application/problem+json",
                },
                timeout=self.timeout,  # type: ignore[attr-defined]
            )
        except requests.RequestException as exc:
            raise KMSClientError(
                "connection_failed", f"cannot reach the KMS at {url}: {type(exc).__name__}: {exc}"
            ) from None

    # -- public API

    def ping(self) -> str:
        """A protected round trip that does no key operation; returns our client name."""
        return cast(str, self._call("ping", PING_PATH, {})["client"])

    def operate(
        self,
        operation: str,
        key: str,
        items: list[dict[str, Any]],
        options: dict[str, Any] | None = None,
        *,
        framing: Framing = "binary",
    ) -> list[dict[str, Any]]:
        """Run `operation` on up to 1,000 `items` in one request; one result per item, in
        order (an item that failed is ``{"error": {"code", "detail"}}``).

        Binary members (``plaintext``, ``message``) are bytes (base64 text is accepted too);
        results' ``plaintext`` is bytes; tokens (``ciphertext``, ``mac``, ``signature``) are
        ``kms:v1:`` text. The request travels in the binary frame; ``framing="json"`` sends
        the JSON envelope instead (for a server that predates the binary frame)."""
        if framing == "binary":
            body = {"key": key, "items": _items_as_bytes(items), "options": options or {}}
        else:
            body = {"key": key, "items": _items_as_text(items), "options": options or {}}
        answer = self._call(operation, OPERATION_PATH + operation, body, framing)
        results = cast(list[dict[str, Any]], answer["results"])
        if framing == "json":
            for result in results:
                if type(result.get("plaintext")) is str:
                    result["plaintext"] = base64.b64decode(result["plaintext"])
        return results

    def _one(
        self, operation: str, key: str, item: dict[str, Any], **options: Any
    ) -> dict[str, Any]:
        from kmsclient.client import KMSClientError

        [result] = self.operate(operation, key, [item], options)
        if "error" in result:
            error = result["error"]
            raise KMSClientError(error["code"], error["detail"], origin="server")
        return result

    def encrypt(self, key: str, plaintext: bytes, context: dict[str, str] | None = None) -> str:
        """The ``kms:v1:`` ciphertext of `plaintext` under `key` (its primary version)."""
        item = {"plaintext": _bytes(plaintext), "context": context or {}}
        return cast(str, self._one("encrypt", key, item)["ciphertext"])

    def decrypt(self, key: str, ciphertext: str, context: dict[str, str] | None = None) -> bytes:
        """The plaintext of a ``kms:v1:`` ciphertext (the context must be the encryption's)."""
        result = self._one("decrypt", key, {"ciphertext": ciphertext, "context": context or {}})
        return cast(bytes, result["plaintext"])

    def reencrypt(
        self,
        key: str,
        ciphertext: str,
        context: dict[str, str] | None = None,
        *,
        destination_key: str | None = None,
        destination_context: dict[str, str] | None = None,
    ) -> str:
        """The ciphertext moved to the newest version of `key` (or under `destination_key`);
        the plaintext never leaves the KMS."""
        item: dict[str, Any] = {"ciphertext": ciphertext, "context": context or {}}
        if destination_context is not None:
            item["destination_context"] = destination_context
        options = {"destination_key": destination_key} if destination_key else {}
        return cast(str, self._one("reencrypt", key, item, **options)["ciphertext"])

    def generate_data_key(
        self, key: str, context: dict[str, str] | None = None, *, plaintext: bool = True
    ) -> DataKey:
        """A fresh 256-bit data key, wrapped under `key` (and in clear unless
        ``plaintext=False``)."""
        result = self._one(
            "generate-data-key", key, {"context": context or {}}, plaintext=plaintext
        )
        clear = cast(bytes, result["plaintext"]) if "plaintext" in result else None
        return DataKey(ciphertext=result["ciphertext"], version=result["version"], plaintext=clear)

    def mac(self, key: str, message: bytes) -> str:
        return cast(str, self._one("mac", key, {"message": _bytes(message)})["mac"])

    def mac_verify(self, key: str, message: bytes, mac: str) -> bool:
        item = {"message": _bytes(message), "mac": mac}
        return bool(self._one("mac-verify", key, item)["valid"])

    def sign(self, key: str, message: bytes) -> str:
        return cast(str, self._one("sign", key, {"message": _bytes(message)})["signature"])

    def verify(self, key: str, message: bytes, signature: str) -> bool:
        item = {"message": _bytes(message), "signature": signature}
        result = self._one("verify", key, item)
        return bool(result["valid"])

    def public_key(self, key: str, version: int | None = None) -> str:
        """The PEM public key of an asymmetric key's version (default: the primary)."""
        item = {"version": version} if version is not None else {}
        return cast(str, self._one("public-key", key, item)["public_key"])
