"""The master keyring as the rest of the project sees it: seal, unseal, check, rewrap.

`kmsportal.crypto.envelope` does the cryptography over bytes; this app adds what needs Django:
reading the keyring from settings once per process, the key check values stored in the
database, the registry of sealed columns (for `rewrap` and for refusing to drop a master key
that still seals data) and the start-up check.
"""
