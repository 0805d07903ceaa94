"""The collector no longer looks at bots: it collects watched markets, and starting a bot watches its market
(apps.bots.services.bot_start -> apps.market.services.market_watch). Bots already running when this is deployed
get their markets watched here, so collection for them carries on unchanged."""

from django.db import migrations


def watch_running_bots_markets(apps, schema_editor):
    Bot = apps.get_model("bots", "Bot")
    Market = apps.get_model("market", "Market")
    running = Bot.objects.filter(status="running").values_list("exchange", "symbol", "timeframe").distinct()
    for exchange, symbol, timeframe in running:
        market, created = Market.objects.get_or_create(
            exchange=exchange, symbol=symbol, timeframe=timeframe,
            defaults={"watched": True, "provider": "replay" if exchange == "replay" else "ccxt"},
        )
        if not created and not market.watched:
            market.watched = True
            market.save(update_fields=["watched"])


class Migration(migrations.Migration):
    dependencies = [
        ("bots", "0002_bot_failed_at"),
        ("market", "0001_initial"),
    ]

    operations = [migrations.RunPython(watch_running_bots_markets, migrations.RunPython.noop)]
