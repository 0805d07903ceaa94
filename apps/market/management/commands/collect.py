"""manage.py collect: one collection round now, synchronously, one line per market."""

from __future__ import annotations

from django.core.management.base import CommandError

from apps.common.management import DomainCommand
from apps.market.collector import collect_all, collect_market, market_summary, summary_line
from apps.market.models import Market


class Command(DomainCommand):
    help = (
        "Collect new closed candles now for the watched markets (starting a bot watches its market), or for "
        "the given --market ids. New candles are stored and published. Exits 1 if any market failed."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--market", type=int, action="append", default=[], help="Market id (repeatable)")

    def handle(self, *args, **options) -> None:
        if options["market"]:
            unknown = sorted(set(options["market"]) - set(Market.objects.filter(pk__in=options["market"])
                                                          .values_list("pk", flat=True)))
            if unknown:
                raise CommandError(f"--market: no market with id {', '.join(map(str, unknown))}", returncode=2)
            results = {}
            for market in Market.objects.filter(pk__in=options["market"]):
                try:
                    results[str(market)] = market_summary(market, collect_market(market.pk))
                except Exception as exc:  # noqa: BLE001 - reported per market, recorded in Market.last_error
                    results[str(market)] = market_summary(market, None, f"{type(exc).__name__}: {exc}")
        else:
            results = collect_all()
        if not results:
            self.stdout.write("no watched markets (watch one, or start a bot)")
            return
        for label, item in results.items():
            self.stdout.write(summary_line(label, item))
        failed = [label for label, item in results.items() if "error" in item]
        if failed:
            raise CommandError(f"{len(failed)} of {len(results)} markets failed: {', '.join(failed)}")
