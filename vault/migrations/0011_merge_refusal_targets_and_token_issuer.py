"""Joins two branches made side by side: refusal tally targets (0009) and the enrollment
token's issuer with the expired destruction status (0009, 0010). No operations."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("vault", "0009_refusal_tally_targets"),
        ("vault", "0010_destruction_request_expired"),
    ]

    operations: list[migrations.operations.base.Operation] = []
