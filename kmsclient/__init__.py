"""kmsclient: client library and command line for services and relying parties of kmsportal.

Services fetch their keys and certificates with it; relying parties check certificates, CRLs
and audit exports. It uses ``kmsportal.crypto`` (pure functions shared with the server),
``cryptography`` and ``requests``, and never Django: it runs on machines that have no portal
installed. Install it with ``pip install ./kmsclient`` (or the wheel ``make dist`` builds) and
run ``kmsclient --help`` for the commands; ``python -m kmsclient`` works too.
"""

__version__ = "0.1.0"
