"""Settings for the gunicorn the benchmarks start: the project's own, plus bench-only views.

Everything comes from `kmsportal.settings` (and so from the environment, as in production);
only what a throw-away benchmark server on loopback needs differs:

* `ROOT_URLCONF` is `bench.urls`: the portal's URLs plus the two baseline views of the CRL
  download rows. The production URLconf (`kmsportal.urls`) never contains them.
* Static files are served without collectstatic's manifest (as in the tests), so portal
  pages render from a fresh checkout.
* Cookies are not marked Secure: the benchmark's HTTP client signs in over plain HTTP on
  loopback, and a client that honours the flag would never send them back.
"""

from kmsportal.settings import *  # noqa: F403 - the project's settings, unchanged but for the below
from kmsportal.settings import STORAGES

ROOT_URLCONF = "bench.urls"

STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
