"""One module per area of the admin API: ``router`` and ``RULES`` (adminapi.api, .permissions)."""
