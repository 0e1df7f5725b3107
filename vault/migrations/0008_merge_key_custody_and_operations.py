# Issues 16 and 17 were built side by side, each with its own 0007; this joins them.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("vault", "0007_key_custody"),
        ("vault", "0007_key_types_operations"),
    ]

    operations = []
