"""Dashboard pages. Data reaches the charts as JSON in <script type="application/json"> (json_script: escaped, so a
bot named `<script>` is text, never code); plotly.js is served from our static files (the installed plotly package)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render

from apps.backtest.models import BacktestRun, Status, Sweep, WalkForward
from apps.backtest.report import render_run_fragment, sweep_report, walkforward_report
from apps.bots import selectors as bot_selectors
from apps.bots.models import Bot
from apps.market import selectors as market_selectors
from apps.market.models import Market
from apps.market.timeframes import TIMEFRAMES, timeframe_ms
from tradebot.dashboard import live
from tradebot.notify import signals_channel, status_channel

MAX_CANDLES = 5000  # per market chart (the range selector narrows it)
RANGES = {"1d": 86_400_000, "7d": 7 * 86_400_000, "30d": 30 * 86_400_000, "90d": 90 * 86_400_000, "all": None}


@login_required
def fleet(request):
    bots = bot_selectors.with_equity(Bot.objects.all()).order_by("name")
    rows = [{"id": b.pk, "name": b.name, "strategy": b.strategy, "market": f"{b.exchange} {b.symbol} {b.timeframe}",
             "status": b.status, "equity": round(b.equity_now, 2),
             "return_pct": round((b.equity_now / b.initial_balance - 1) * 100, 2),
             "drawdown_pct": round(b.drawdown_now * 100, 2), "max_drawdown_pct": round(b.max_drawdown * 100, 2),
             "position": b.position} for b in bots]
    return render(request, "dashboard/fleet.html", {"rows": rows, "markets": Market.objects.all()[:200]})


@login_required
def market(request, pk: int):
    m = get_object_or_404(Market, pk=pk)
    tf = request.GET.get("timeframe", m.timeframe)
    if tf not in TIMEFRAMES:
        raise Http404("unknown timeframe")
    rng = request.GET.get("range", "all")
    if rng not in RANGES:
        raise Http404("unknown range")
    last = market_selectors.last_candle_timestamp(m.exchange, m.symbol, tf)
    start = None if last is None or RANGES[rng] is None else last - RANGES[rng]
    df = market_selectors.candle_frame(exchange=m.exchange, symbol=m.symbol, timeframe=tf, start=start)
    if len(df) > MAX_CANDLES:
        df = df.iloc[-MAX_CANDLES:]
    gaps = []
    if len(df):
        for g in market_selectors.gaps_in_range(m.exchange, m.symbol, tf, int(df["timestamp"].iloc[0]),
                                                int(df["timestamp"].iloc[-1])):
            gaps.append({"start": g.start_timestamp - timeframe_ms(tf), "end": g.end_timestamp, "status": g.status})
    chart = {"t": df["timestamp"].tolist(), "o": df["open"].tolist(), "h": df["high"].tolist(),
             "l": df["low"].tolist(), "c": df["close"].tolist(), "v": df["volume"].tolist(), "gaps": gaps}
    return render(request, "dashboard/market.html", {
        "market": m, "chart": chart, "timeframes": TIMEFRAMES, "ranges": list(RANGES), "tf": tf, "range": rng,
        "coverage": market_selectors.market_coverage(m)})


@login_required
def bot(request, pk: int):
    b = get_object_or_404(Bot, pk=pk)
    perf = list(b.performance.order_by("-timestamp").values_list("timestamp", "equity", "drawdown")[:MAX_CANDLES])
    perf.reverse()
    start = perf[0][0] if perf else None
    df = market_selectors.candle_frame(exchange=b.exchange, symbol=b.symbol, timeframe=b.timeframe, start=start)
    if len(df) > MAX_CANDLES:
        df = df.iloc[-MAX_CANDLES:]
    trades = list(b.trades.order_by("-timestamp", "-id").values(
        "timestamp", "side", "reason", "price", "amount", "fee", "realized_pnl")[:500])
    signals = list(b.signals.exclude(action="hold").order_by("-timestamp").values(
        "timestamp", "action", "price")[:50])
    chart = {"t": df["timestamp"].tolist(), "c": df["close"].tolist(),
             "perf_t": [p[0] for p in perf], "equity": [p[1] for p in perf],
             "drawdown": [round(-p[2] * 100, 4) for p in perf],
             "buys": [[t["timestamp"], t["price"]] for t in trades if t["side"] == "buy"],
             "sells": [[t["timestamp"], t["price"]] for t in trades if t["side"] == "sell"]}
    status = {"id": b.pk, "name": b.name, "status": b.status, "last_error": b.last_error,
              "heartbeat_at": b.heartbeat_at.isoformat() if b.heartbeat_at else None,
              "equity": bot_selectors.bot_equity(b), "position": b.position}
    return render(request, "dashboard/bot.html", {"bot": b, "chart": chart, "trades": trades, "signals": signals,
                                                  "status": status})


@login_required
def bot_events(request, pk: int):
    """SSE: `signals` and `status` events of one bot (Redis pub/sub), bounded per client (see live.py)."""
    b = get_object_or_404(Bot, pk=pk)
    if settings.NOTIFY_BACKEND != "redis":
        raise Http404("live events need Redis (NOTIFY_BACKEND=redis); the page polls instead")
    if not request.META.get("wsgi.multithread"):
        # a sync worker would be held for the whole stream: refuse, the page polls (run gunicorn with --threads)
        return HttpResponse(status=503, headers={"Retry-After": "60"})
    response = StreamingHttpResponse(live.stream([signals_channel(b.pk), status_channel(b.pk)]),
                                     content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@login_required
def run(request, pk: int):
    r = get_object_or_404(BacktestRun, pk=pk)
    fragment = render_run_fragment(r) if r.status == Status.DONE else None
    return render(request, "dashboard/run.html", {"run": r, "fragment": fragment})


@login_required
def sweep(request, pk: int):
    """The sweep's report (ranked table + heat map), the same fragment as `sweep --report` (apps.backtest.report)."""
    s = get_object_or_404(Sweep, pk=pk)
    return render(request, "dashboard/sweep.html", {"sweep": s, "fragment": sweep_report(s, full_html=False)})


@login_required
def walkforward(request, pk: int):
    """The walk-forward report (in-sample vs out-of-sample per window, stitched equity) once the study is done."""
    study = get_object_or_404(WalkForward, pk=pk)
    fragment = walkforward_report(study, full_html=False) if study.status == Status.DONE else None
    return render(request, "dashboard/walkforward.html", {"study": study, "fragment": fragment})



