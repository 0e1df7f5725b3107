"""Operations sessions across nodes: a session opened at node A serves requests at node B,
and a request replayed at the other node is refused (the counter lives in the shared
database, the session key sealed next to it)."""

from __future__ import annotations

import pytest
import requests

from tests.scaleout.test_two_servers import Cluster, cluster  # noqa: F401 (fixture)
from vault.models import Client, Grant, OperationSession

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_a_session_opened_at_one_node_serves_the_other(cluster: Cluster) -> None:  # noqa: F811
    key = cluster.key()
    cluster.enrolled("billing", key)
    Grant.objects.filter(client=Client.objects.get(name="billing")).update(
        operations="encrypt,decrypt"
    )
    at_a, at_b = cluster.client_at(cluster.a, "billing"), cluster.client_at(cluster.b, "billing")
    recorded: list[requests.PreparedRequest] = []
    at_b.session.hooks["response"].append(lambda response, **kw: recorded.append(response.request))
    token = at_a.encrypt("orders-db", b"card 4111", {"t": "1"})
    # Node B answers in the session node A opened: no second handshake.
    at_b._operations_local().session = at_a._operations_local().session
    assert at_b.decrypt("orders-db", token, {"t": "1"}) == b"card 4111"
    assert OperationSession.objects.count() == 1
    # The request B just served, replayed at A: the counter is shared, so it is refused.
    replay = requests.Session()
    replay.trust_env = False
    answer = replay.post(
        cluster.a.url + "/api/v1/keys/decrypt",
        data=recorded[-1].body,
        # As sent (kmsclient uses the binary frame): the replay must differ in nothing.
        headers={"Content-Type": recorded[-1].headers["Content-Type"]},
        timeout=30,
    )
    assert answer.status_code == 409
