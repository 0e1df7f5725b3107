"""CRL downloads (issue 9): one indexed query per request, the bytes from Django's cache
(shared by every worker and node with Redis) addressed by their SHA-256, and never a CRL
older than the newest stored one."""

from __future__ import annotations

import hashlib

import pytest
from django.core.cache import cache
from django.core.cache.backends.redis import RedisCache
from django.test import Client

from pki import crl as crl_module
from pki import services
from pki.models import CertificateAuthority, RevocationList
from tests.scaleout import conftest as scaleout

from .test_crl import issue, newest

pytestmark = pytest.mark.django_db

#: This process's cache on Redis (KMS_TEST_REDIS_DB_CACHE_TESTS), as the scale-out tests use it.
redis_cache = scaleout.redis_cache


def test_a_download_costs_one_query_once_the_bytes_are_cached(
    client: Client, issuing: CertificateAuthority, django_assert_num_queries
) -> None:
    first = client.get("/pki/crl/issuing.crl")  # fills the cache: validators, then bytes
    for url in ("/pki/crl/issuing.crl", "/pki/crl/issuing.pem"):
        with django_assert_num_queries(1):  # the newest CRL's validators, nothing else
            response = client.get(url)
        assert response.status_code == 200
    with django_assert_num_queries(1):
        again = client.get("/pki/crl/issuing.crl", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    with django_assert_num_queries(1):
        assert client.head("/pki/crl/issuing.crl").status_code == 200
    assert client.get("/pki/crl/issuing.crl").content == bytes(newest(issuing).crl_der)


def test_a_revocation_is_in_the_very_next_download(
    client: Client, issuing: CertificateAuthority, ec_key
) -> None:
    certificate = issue(issuing, ec_key)
    before = client.get("/pki/crl/issuing-delta.crl")
    client.get("/pki/crl/issuing-delta.pem")  # both forms of the old delta CRL are cached now
    services.certificate_revoke(actor=None, certificate=certificate, reason="keyCompromise")
    row = newest(issuing, delta=True)
    after = client.get("/pki/crl/issuing-delta.crl")
    assert after["ETag"] == f'"{row.sha256}"' != before["ETag"]
    assert after.content == bytes(row.crl_der) != before.content
    pem = client.get("/pki/crl/issuing-delta.pem")
    assert pem.content == crl_module.crl_pem(bytes(row.crl_der))
    assert pem["ETag"] == f'"{row.sha256}-pem"'
    # The complete CRL is the same until it is published again, then it lists it too.
    complete = client.get("/pki/crl/issuing.crl")
    services.crl_publish(actor=None, ca=issuing)
    assert (
        client.get("/pki/crl/issuing.crl").content
        == bytes(newest(issuing).crl_der)
        != (complete.content)
    )


def test_the_cache_holds_only_bytes_whose_hash_is_their_key(
    client: Client, issuing: CertificateAuthority
) -> None:
    row = newest(issuing)
    stored = bytes(row.crl_der)
    # Bytes that do not hash to the stored SHA-256 (a damaged row): served as stored, as
    # before, but not remembered, so repairing the row takes effect at once.
    RevocationList.objects.filter(pk=row.pk).update(crl_der=stored + b"damaged")
    assert client.get("/pki/crl/issuing.crl").content == stored + b"damaged"
    RevocationList.objects.filter(pk=row.pk).update(crl_der=stored)
    assert client.get("/pki/crl/issuing.crl").content == stored
    download = crl_module.crl_download_get(ca_name="issuing")
    assert download is not None and download.sha256 == hashlib.sha256(stored).hexdigest()
    assert crl_module.crl_download_der(download=download) == stored


def test_a_crl_larger_than_the_limit_is_never_kept(
    client: Client,
    issuing: CertificateAuthority,
    monkeypatch: pytest.MonkeyPatch,
    django_assert_num_queries,
) -> None:
    client.get("/pki/crl/issuing.crl")
    with django_assert_num_queries(1):  # kept: the validators only
        client.get("/pki/crl/issuing.crl")
    monkeypatch.setattr(crl_module, "CRL_CACHE_MAX_BYTES", 10)
    services.crl_publish(actor=None, ca=issuing)
    for _ in range(2):
        with django_assert_num_queries(2):  # validators, and the bytes again
            response = client.get("/pki/crl/issuing.crl")
        assert response.content == bytes(newest(issuing).crl_der)


def test_bytes_in_the_cache_are_served_only_under_their_own_hash(
    client: Client, issuing: CertificateAuthority, ec_key
) -> None:
    """A shared cache is not trusted: an older CRL (validly signed, still before its
    nextUpdate) put under the newest one's key would hide a revocation; it is not served."""
    old = bytes(newest(issuing).crl_der)
    services.certificate_revoke(
        actor=None, certificate=issue(issuing, ec_key), reason="keyCompromise"
    )
    services.crl_publish(actor=None, ca=issuing)
    row = newest(issuing)
    cache.set(f"kms:crl:{row.sha256}", old)
    assert client.get("/pki/crl/issuing.crl").content == bytes(row.crl_der) != old
    assert cache.get(f"kms:crl:{row.sha256}") == bytes(row.crl_der)  # repaired from the row


def test_every_node_shares_the_bytes_and_a_new_crl_is_a_new_key(
    redis_cache: str,
    client: Client,
    issuing: CertificateAuthority,
    ec_key,
    django_assert_num_queries,
) -> None:
    """With Redis (CACHE_URL), another node's cache client sees the bytes this one cached,
    this node serves bytes another one cached without reading them, and a publication needs
    no invalidation message: the new CRL's hash is a key nobody has filled yet."""
    other_node = RedisCache(redis_cache, {})
    services.crl_publish(actor=None, ca=issuing)
    row = newest(issuing)
    assert client.get("/pki/crl/issuing.crl").content == bytes(row.crl_der)
    assert other_node.get(f"kms:crl:{row.sha256}") == bytes(row.crl_der)
    services.certificate_revoke(
        actor=None, certificate=issue(issuing, ec_key), reason="keyCompromise"
    )
    services.crl_publish(actor=None, ca=issuing)
    fresh = newest(issuing)
    assert other_node.get(f"kms:crl:{fresh.sha256}") is None
    other_node.set(f"kms:crl:{fresh.sha256}", bytes(fresh.crl_der))  # another node's download
    with django_assert_num_queries(1):  # the validators; the bytes come from Redis
        response = client.get("/pki/crl/issuing.crl")
    assert response.content == bytes(fresh.crl_der) != bytes(row.crl_der)
    other_node.close()
