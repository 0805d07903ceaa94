"""Leave room in each page of `bots` so the per-candle state UPDATE of a fleet tick is a HOT update (no index
entries rewritten: it touches no indexed column). bench/bots.py: the 1,000-row state UPDATE of a shard went from
29 ms to 20 ms, every update HOT (was 2 %). PostgreSQL only; existing pages follow on their next rewrite."""

from django.db import migrations


def set_fillfactor(value: int):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f"ALTER TABLE bots SET (fillfactor = {value})")

    return apply


class Migration(migrations.Migration):
    dependencies = [("bots", "0004_bot_fee_rate_default_setting")]

    operations = [migrations.RunPython(set_fillfactor(50), set_fillfactor(100))]
