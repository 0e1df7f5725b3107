"""gunicorn settings for kmsportal; every value can be overridden from the environment."""

import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", os.environ.get("WEB_CONCURRENCY", "2")))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
wsgi_app = "kmsportal.wsgi:application"
# Load the application in the master: the start-up checks (master keyring) run once and a
# failure stops gunicorn with the check's message instead of workers crash-looping.
preload_app = True
accesslog = "-"
# No query strings in the access log: they are the only place a secret could leak into it.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
