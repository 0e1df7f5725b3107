from tests.pki.conftest import ec_key, issuing, root  # noqa: F401 - shared PKI fixtures
