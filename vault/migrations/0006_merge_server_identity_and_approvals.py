# Issues 13 and 15 were built side by side, each with its own 0005; this joins them.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("vault", "0005_export_policy_and_approvals"),
        ("vault", "0005_server_identity_enrollment"),
    ]

    operations = []
