#!/usr/bin/env python
"""Django's command-line utility for kmsportal.

Every command run from here is audited as ``cli:<os user>@<host>`` (kmsportal.cli_actor);
``--actor <username>`` adds the portal user it acts for. A configuration error (a missing
SECRET_KEY, a malformed keyring) prints one line instead of a traceback (``--traceback``
shows it).
"""

import os
import sys


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsportal.settings")
    import django
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    from kmsportal.cli_actor import (
        SERVING_COMMANDS,
        UnknownActorError,
        command_declares_actor,
        command_line_actor_for,
        command_line_actor_set,
        split_actor_option,
    )

    command = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        django.setup()
        if command_declares_actor(command):
            # The command acts for the portal user it names itself (e.g. grant_create).
            argv, username = list(sys.argv), ""
        else:
            argv, username = split_actor_option(sys.argv)
        if command not in SERVING_COMMANDS:
            command_line_actor_set(command_line_actor_for(username))
    except ImproperlyConfigured as exc:
        if "--traceback" in sys.argv:
            raise
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except UnknownActorError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    execute_from_command_line(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
