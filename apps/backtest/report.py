"""Self-contained offline HTML report of a backtest: price with entries/exits, equity, drawdown, metrics, trades.

plotly's JavaScript is embedded in the file (`include_plotlyjs=True`): the report opens without network access and
never loads a script from a CDN. Long histories are downsampled for the charts (trade markers are exact).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.backtest.formatting import format_metric, format_value, metric_label

MAX_POINTS = 5000
MAX_TRADE_ROWS = 1000
MAX_MARKERS = 5000


def money(value: Any, *, sign: bool = False) -> str:
    """Prices, P&L and fees: thousands separators and 2 decimals (a sign for P&L): -320.14, +1,204.50."""
    if value is None:
        return "-"
    return f"{value:+,.2f}" if sign else f"{value:,.2f}"


def pct(value: Any) -> str:
    """Percentages: 2 decimals with a sign: -3.20 %."""
    return "-" if value is None else f"{value:+.2f} %"


def _time(ms: Any) -> str:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError):
        return "-"


def _dt(ms: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms", utc=True)


def _thin(n: int, max_points: int, keep: list[int] | None = None) -> np.ndarray:
    """Evenly spaced indexes (first and last kept) plus `keep` (e.g. the drawdown trough): never dropped."""
    if n <= max_points:
        return np.arange(n)
    idx = np.linspace(0, n - 1, max_points).astype(np.int64)
    if keep:
        idx = np.concatenate([idx, np.asarray([k for k in keep if 0 <= k < n], dtype=np.int64)])
    return np.unique(idx)


def bucket_ohlcv(df: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """At most max_points candles for the browser: consecutive candles merged (open first, high max, low min, close
    last, volume sum, timestamp last), so highs, lows and volume survive downsampling."""
    n = len(df)
    if n <= max_points:
        return df
    size = -(-n // max_points)
    group = np.arange(n) // size
    g = df.groupby(group, sort=True)
    return pd.DataFrame({"timestamp": g["timestamp"].last().to_numpy(), "open": g["open"].first().to_numpy(),
                         "high": g["high"].max().to_numpy(), "low": g["low"].min().to_numpy(),
                         "close": g["close"].last().to_numpy(), "volume": g["volume"].sum().to_numpy()})


def _segments(trades: list[Mapping[str, Any]], win: bool) -> tuple[list, list]:
    xs: list = []
    ys: list = []
    for t in trades:
        if ((t.get("pnl") or 0) > 0) != win or t.get("exit_time") is None:
            continue
        xs += [_dt(np.array([t["entry_time"]]))[0], _dt(np.array([t["exit_time"]]))[0], None]
        ys += [t["entry_price"], t["exit_price"], None]
    return xs, ys


def build_figure(df: pd.DataFrame, result: Mapping[str, Any], indicators: Mapping[str, Any] | None = None):
    """Four stacked panels sharing the time axis: candlesticks with the strategy's indicators and entry→exit segments
    coloured by P&L, volume, equity beside buy-and-hold, drawdown (%)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.03, row_heights=[0.45, 0.12, 0.28, 0.15],
                        subplot_titles=("Price: entries ▲ exits ▼, segments green = win / red = loss", "Volume",
                                        "Equity (strategy vs buy & hold)", "Drawdown %"))
    bars = bucket_ohlcv(df)
    x = _dt(bars["timestamp"].to_numpy(dtype=np.int64))
    fig.add_trace(go.Candlestick(x=x, open=bars["open"], high=bars["high"], low=bars["low"], close=bars["close"],
                                 name="price", increasing_line_color="#26a69a", decreasing_line_color="#ef5350"),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=bars["volume"], name="volume", marker_color="#9aa5b1"), row=2, col=1)
    close_med = float(np.nanmedian(df["close"])) if len(df) else 0.0
    ts_all = df["timestamp"].to_numpy(dtype=np.int64)
    for name, series in (indicators or {}).items():
        values = np.asarray(series, dtype=np.float64)
        if len(values) != len(ts_all) or not np.isfinite(values).any():
            continue
        med = float(np.nanmedian(values))
        if not (close_med and 0.5 < med / close_med < 2.0):
            continue  # not on the price scale (RSI, MACD...): overlaying it would flatten the candles
        idx = _thin(len(values), MAX_POINTS)
        fig.add_trace(go.Scattergl(x=_dt(ts_all[idx]), y=values[idx], mode="lines", name=name,
                                   line={"width": 1}), row=1, col=1)
    trades = list(result.get("trades") or [])[:MAX_MARKERS]
    if trades:
        for win, color in ((True, "#0a7a32"), (False, "#b3261e")):
            xs, ys = _segments(trades, win)
            if xs:
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="winning trades" if win else "losing trades",
                                         line={"color": color, "width": 2}), row=1, col=1)
        fig.add_trace(go.Scatter(x=_dt(np.array([t["entry_time"] for t in trades])),
                                 y=[t["entry_price"] for t in trades], mode="markers", name="entry",
                                 marker={"symbol": "triangle-up", "color": "#0a7a32", "size": 9}), row=1, col=1)
        fig.add_trace(go.Scatter(x=_dt(np.array([t["exit_time"] for t in trades])),
                                 y=[t["exit_price"] for t in trades], mode="markers", name="exit",
                                 text=[t.get("exit_reason", "") for t in trades],
                                 marker={"symbol": "triangle-down", "color": "#b3261e", "size": 9}), row=1, col=1)
    ot = result.get("open_trade")
    if ot and ot.get("entry_time") is not None:
        fig.add_trace(go.Scatter(x=_dt(np.array([ot["entry_time"]])), y=[ot.get("entry_price")], mode="markers",
                                 name="open entry", marker={"symbol": "triangle-up", "color": "#1f5fbf", "size": 11}),
                      row=1, col=1)
    curve = result.get("equity_curve") or {}
    eq_ts = np.asarray(curve.get("timestamp") or [], dtype=np.int64)
    equity = np.asarray([np.nan if v is None else v for v in (curve.get("equity") or [])], dtype=np.float64)
    if len(equity):
        peak = np.fmax.accumulate(equity)
        with np.errstate(divide="ignore", invalid="ignore"):
            dd = np.where(peak > 0, (equity / peak - 1.0) * 100.0, 0.0)
        idx = _thin(len(equity), MAX_POINTS, keep=[int(np.nanargmin(dd))])
        fig.add_trace(go.Scattergl(x=_dt(eq_ts[idx]), y=equity[idx], mode="lines", name="equity",
                                   line={"color": "#1f5fbf", "width": 1.5}), row=3, col=1)
        if len(df):
            initial = float((result.get("metrics") or {}).get("initial_balance") or equity[0])
            bh_idx = _thin(len(ts_all), MAX_POINTS)
            close = df["close"].to_numpy(dtype=np.float64)
            fig.add_trace(go.Scattergl(x=_dt(ts_all[bh_idx]), y=initial * close[bh_idx] / close[0], mode="lines",
                                       name="buy & hold", line={"color": "#999", "width": 1, "dash": "dot"}),
                          row=3, col=1)
        fig.add_trace(go.Scattergl(x=_dt(eq_ts[idx]), y=dd[idx], mode="lines", name="drawdown %", fill="tozeroy",
                                   line={"color": "#b3261e", "width": 1}), row=4, col=1)
    fig.update_layout(height=1000, margin={"l": 60, "r": 20, "t": 40, "b": 40}, hovermode="x unified",
                      legend={"orientation": "h", "y": 1.04}, xaxis_rangeslider_visible=False)
    return fig


def render_report(*, title: str, df: pd.DataFrame, result: Any, indicators: Mapping[str, Any] | None = None,
                  fragment: bool = False) -> str:
    """HTML text of the report. `result` is an engine BacktestResult, or its to_dict() shape plus `equity_curve`.

    The `--report` file embeds plotly.js (opens offline); `fragment=True` is the dashboard's version: the same
    figure and tables without plotly.js (the page loads it from our static files)."""
    from django.template.loader import render_to_string

    if hasattr(result, "to_dict"):
        result = {**result.to_dict(), "equity_curve": result.equity_curve(max_points=MAX_POINTS)}
    fig = build_figure(df, result, indicators)
    figure_html = fig.to_html(full_html=False, include_plotlyjs=not fragment, config={"displaylogo": False})
    trades = list(result.get("trades") or [])
    rows = [{
        "entry": _time(t.get("entry_time")), "exit": _time(t.get("exit_time")),
        "entry_price": money(t.get("entry_price")), "exit_price": money(t.get("exit_price")),
        "amount": format_value(t.get("amount")), "fees": money(t.get("fees")), "pnl": money(t.get("pnl"), sign=True),
        "return_pct": pct(t.get("return_pct")), "exit_reason": t.get("exit_reason", ""),
        "win": (t.get("pnl") or 0) > 0,
    } for t in trades[:MAX_TRADE_ROWS]]
    ts = df["timestamp"].to_numpy(dtype=np.int64) if len(df) else np.array([], dtype=np.int64)
    period = f"{_time(ts[0])} → {_time(ts[-1])}" if len(ts) else "no candles"
    ot = result.get("open_trade")
    open_rows = [(k, _time(v) if k.endswith("_time") else format_value(v)) for k, v in ot.items()] if ot else []
    return render_to_string("backtest/report_fragment.html" if fragment else "backtest/report.html", {
        "title": title,
        "period": period,
        "n_candles": f"{len(df):,}",
        "generated": datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "warnings": list(result.get("warnings") or []),
        "metrics": [(metric_label(k), format_metric(k, v)) for k, v in (result.get("metrics") or {}).items()],
        "figure": figure_html,
        "open_trade": open_rows,
        "n_trades": len(trades),
        "trades": rows,
        "trades_truncated": len(trades) > MAX_TRADE_ROWS,
    })


def write_report(path: str | Path, *, title: str, df: pd.DataFrame, result: Any) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(title=title, df=df, result=result), encoding="utf-8")
    return out


def strategy_indicators(strategy: str, parameters: Mapping[str, Any], df: pd.DataFrame) -> dict[str, Any]:
    """The strategy's own `get_indicators()` over the candles (empty when it has none or cannot compute)."""
    from apps.backtest import services

    try:
        strat = services.build_strategy(strategy, parameters)
        strat.signals(df)
        return {k: np.asarray(v, dtype=np.float64) for k, v in strat.get_indicators().items()}
    except Exception:  # noqa: BLE001 - indicators are decoration: a report never fails for them
        return {}


def report_for_run(run: Any, *, fragment: bool = False) -> str:
    """Report of a stored BacktestRun (candles re-read from its source)."""
    from apps.backtest import services

    df = services.load_data(run).df
    result = {"metrics": run.metrics, "trades": run.trades, "open_trade": run.open_trade,
              "final_equity": run.final_equity, "warnings": run.warnings, "equity_curve": run.equity_curve}
    title = f"Backtest #{run.pk}: {run.strategy} {run.parameters} on {run.market_label}"
    return render_report(title=title, df=df, result=result, indicators=strategy_indicators(run.strategy,
                                                                                           run.parameters, df),
                         fragment=fragment)


def render_run_fragment(run: Any) -> str:
    return report_for_run(run, fragment=True)


def sweep_heatmap_data(sweep: Any, x: str | None = None, y: str | None = None) -> dict[str, Any]:
    """A heat map of the sweep's metric over two varied parameters (the first two with more than one value)."""
    from apps.backtest import selectors

    rows = [r for r in selectors.sweep_results(sweep) if not r.get("error")]
    varied = [k for k in (sweep.space or {}) if len({str((r.get("parameters") or {}).get(k)) for r in rows}) > 1]
    x = x or (varied[0] if varied else None)
    y = y or (varied[1] if len(varied) > 1 else None)
    if not rows or x is None or y is None:
        return {"x": x, "y": y, "xs": [], "ys": [], "z": [], "metric": sweep.metric}
    xs = sorted({r["parameters"][x] for r in rows})
    ys = sorted({r["parameters"][y] for r in rows})
    z: list[list[float | None]] = [[None] * len(xs) for _ in ys]
    name = sweep.metric.lstrip("-")
    for r in rows:
        v = (r.get("metrics") or {}).get(name)
        cur = z[ys.index(r["parameters"][y])][xs.index(r["parameters"][x])]
        if v is not None and (cur is None or v > cur):
            z[ys.index(r["parameters"][y])][xs.index(r["parameters"][x])] = v
    return {"x": x, "y": y, "xs": xs, "ys": ys, "z": z, "metric": sweep.metric}
