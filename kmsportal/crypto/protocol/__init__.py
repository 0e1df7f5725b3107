"""Key distribution protocol v1: the pure cryptographic core (no HTTP, no database).

Mutually authenticated ephemeral Diffie-Hellman in one round trip. The client signs its
request with the key of its ``kms-client`` certificate; the server answers with key material
encrypted under a key derived from the ephemeral exchange and signs the whole transcript with
its distribution key. Certificate-chain, revocation, replay (nonce) and authorisation checks
are the caller's job (the Django views / ``kmsclient``); this module does the bytes.

Encodings
---------
* **Canonical JSON**: RFC 8785 (:func:`kmsportal.crypto.canonical.canonical_json`), UTF-8;
  the same bytes as ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
  ensure_ascii=False)`` for every message (fixed ASCII member names, strings and integers;
  no floats, which the encoder refuses). Binary values are standard base64 with padding;
  decoders accept only the canonical encoding (what the encoder would produce).
* **Timestamps**: UTC, second precision, ``YYYY-MM-DDTHH:MM:SSZ``.
* **Signatures**: RSA keys (>= 2048 bits) sign with RSASSA-PSS, SHA-256, MGF1-SHA-256, salt
  length 32; EC keys with ECDSA-SHA-256 (DER-encoded ``Ecdsa-Sig-Value``).

Request (client -> server), a JSON object::

    {"protocol": 1, "type": "fetch-request", "key_name": str, "version": int | null,
     "group": "x25519" | "ffdhe3072", "client_public": b64, "client_nonce": b64 (16 bytes),
     "timestamp": str, "client_certificate_pem": str, "signature": b64}

``RS`` = canonical JSON of every member except ``signature``; ``signature = Sign_client(RS)``.

Response (server -> client), a JSON object::

    {"protocol": 1, "type": "fetch-response", "group": str, "server_public": b64,
     "server_nonce": b64 (16 bytes), "key_name": str, "version": int, "client_name": str,
     "server_certificate_chain": [PEM, ...] (leaf first), "server_status": b64 (DER OCSP
     response for the leaf, signed by the server-identity CA), "gcm_nonce": b64 (12 bytes),
     "ciphertext": b64 (AES-GCM ciphertext || 16-byte tag), "signature": b64}

``server_status`` is the stapled revocation status of the server's own certificate (issue
13): a fresh OCSP response, under the transcript signature like every other member, which
the client checks for age and status (`kmsportal.crypto.server_identity`).

Transcript hash
---------------
``TH(fields) = SHA-256(F(RS) || F(request signature) || F(canonical JSON of fields))`` where
``F(x) = uint64_be(len(x)) || x``. Length-prefixing makes the framing unambiguous: no two
different (request, signature, response) triples hash the same byte string, whatever bytes
each part contains (plain concatenation would let bytes slide from one part to the next).

Key schedule and encryption
---------------------------
1. ``Z`` = DH shared secret of the two ephemeral keys in ``group`` (x25519: 32 bytes,
   ffdhe3072: 384 bytes big-endian, left-padded).
2. ``H_pre = TH(response members except signature, gcm_nonce and ciphertext)`` (the
   "pre-transcript": everything the server says that does not depend on the ciphertext,
   including ``protocol``, ``type`` and the certificate chain).
3. ``K = HKDF-SHA256(IKM=Z, salt=client_nonce || server_nonce,
   info=b"kmsportal key distribution v1" || b"|" || H_pre, L=32)``.
4. ``ciphertext = AES-256-GCM(K, gcm_nonce, plaintext=key material,
   AAD=UTF-8(f"{key_name}|{version}|{client_name}"))``; ``gcm_nonce`` is 12 random bytes.
   The AAD is unambiguous: key names cannot contain ``|`` and the version is an integer, so
   the client name (last) can be anything.
5. ``H = TH(response members except signature)``;
   ``signature = Sign_server(b"kmsportal key distribution v1|fetch-response|" || H)``.

Why this is sound: K depends on both fresh ephemeral keys and both fresh nonces and on a hash
of the signed request, so every exchange uses a distinct key (GCM nonce reuse across
exchanges is impossible); the server signature covers the request (hence the client's
ephemeral key and nonce) and every response member, so a man in the middle cannot substitute
his own ephemeral key; the client signature binds its ephemeral key to its certificate. Both
ephemeral private keys are dropped after one use: a later compromise of either long-term
key does not reveal past key material (forward secrecy). Python cannot wipe memory, so
"dropped" means no reference is kept; the garbage collector frees the OpenSSL objects.

Error codes (``ProtocolError.code``), stable for machines:
request parsing: ``malformed_request``, ``unsupported_protocol``, ``unsupported_group``,
``bad_key_name``, ``bad_version``, ``bad_public_key``, ``bad_nonce``, ``bad_timestamp``,
``bad_certificate``, ``bad_signature``; request checks: ``bad_signature``,
``stale_timestamp``, ``unsupported_key_type``; server exchange: ``bad_public_key``;
response: ``malformed_response``, ``unsupported_protocol``, ``bad_certificate``,
``bad_server_signature``, ``response_mismatch``, ``bad_public_key``, ``decryption_failed``,
``state_consumed``; enrollment: ``malformed_request``, ``bad_token``, ``bad_token_proof``,
``malformed_response``, ``bad_server_mac``, ``bad_server_signature``.

Enrollment (an observer learns nothing usable)
----------------------------------------------
The one-time token ``T`` (32 random bytes, 64 hex digits) never crosses the wire. Both sides
derive ``token_id = HKDF(T, info=ENROLL_LABEL|token-id, 16 bytes)`` and ``K_mac = HKDF(T,
info=ENROLL_LABEL|mac-key, 32 bytes)``. The client sends::

    {"protocol": 1, "type": "enroll-request", "token_id": hex, "csr": PEM,
     "client_nonce": b64 (16 bytes), "mac": b64}

with ``mac = HMAC-SHA256(K_mac, ENROLL_LABEL|enroll-request| || canonical JSON of the other
members)``: it proves possession of T and binds the CSR, so a captured request cannot be
replayed with another CSR. The server stores only SHA-256(token_id) and K_mac sealed under
its master keyring. Its answer::

    {"protocol": 1, "type": "enroll-response", "client", "certificate", "chain",
     "root_ca_certificate", "not_after", "server_identity": {"ca_spki_sha256", "deployment"},
     "server_certificate_chain": [PEM, ...], "server_nonce": b64, "mac": b64, "signature": b64}

``H = SHA-256(F(canonical request, mac included) || F(canonical response without mac and
signature))``; ``mac = HMAC-SHA256(K_mac, ENROLL_LABEL|enroll-response| || H)`` (only the KMS
that issued T can make it) and ``signature = Sign_server(ENROLL_LABEL|enroll-response| || H)``
(the server identity the client is about to pin vouches for it too).
"""

from __future__ import annotations

from kmsportal.crypto.protocol.encoding import (
    GCM_NONCE_BYTES,
    KEY_NAME_MAX_LENGTH,
    MAX_CLOCK_SKEW,
    MAX_KEY_MATERIAL_BYTES,
    MAX_VERSION,
    NONCE_BYTES,
    PROTOCOL_LABEL,
    PROTOCOL_VERSION,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    PrivateKey,
    ProtocolError,
    PublicKey,
    check_timestamp,
    format_timestamp,
    parse_timestamp,
    sign,
    transcript_hash,
    verify_signature,
)
from kmsportal.crypto.protocol.enrollment import (
    ENROLL_LABEL,
    EnrollRequest,
    EnrollResponse,
    EnrollState,
    build_enroll_request,
    build_enroll_response,
    enrollment_token_keys,
    enrollment_token_lookup,
    new_enrollment_token,
    open_enroll_response,
    parse_enroll_request,
    verify_enroll_request,
)
from kmsportal.crypto.protocol.fetch import (
    ClientExchangeState,
    FetchedKey,
    FetchRequest,
    build_fetch_request,
    build_fetch_response,
    open_fetch_response,
    server_leaf_certificate,
    verify_fetch_request,
    verify_fetch_request_signature,
)

__all__ = [
    "ENROLL_LABEL",
    "GCM_NONCE_BYTES",
    "KEY_NAME_MAX_LENGTH",
    "MAX_CLOCK_SKEW",
    "MAX_KEY_MATERIAL_BYTES",
    "MAX_VERSION",
    "NONCE_BYTES",
    "PROTOCOL_LABEL",
    "PROTOCOL_VERSION",
    "REQUEST_TYPE",
    "RESPONSE_TYPE",
    "ClientExchangeState",
    "EnrollRequest",
    "EnrollResponse",
    "EnrollState",
    "FetchRequest",
    "FetchedKey",
    "PrivateKey",
    "ProtocolError",
    "PublicKey",
    "build_enroll_request",
    "build_enroll_response",
    "build_fetch_request",
    "build_fetch_response",
    "check_timestamp",
    "enrollment_token_keys",
    "enrollment_token_lookup",
    "format_timestamp",
    "new_enrollment_token",
    "open_enroll_response",
    "open_fetch_response",
    "parse_enroll_request",
    "parse_timestamp",
    "server_leaf_certificate",
    "sign",
    "transcript_hash",
    "verify_enroll_request",
    "verify_fetch_request",
    "verify_fetch_request_signature",
    "verify_signature",
]
