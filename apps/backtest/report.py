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


def _time(ms: Any) -> str:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError):
        return "-"


def _dt(ms: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms", utc=True)


def _thin(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).astype(np.int64))


def build_figure(df: pd.DataFrame, result: Mapping[str, Any]):
    """Three stacked panels sharing the time axis: close + trade markers, equity, drawdown (%)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=[0.5, 0.3, 0.2],
                        subplot_titles=("Price (close) with entries ▲ and exits ▼", "Equity", "Drawdown %"))
    ts = df["timestamp"].to_numpy(dtype=np.int64)
    close = df["close"].to_numpy(dtype=np.float64)
    idx = _thin(len(ts), MAX_POINTS)
    fig.add_trace(go.Scattergl(x=_dt(ts[idx]), y=close[idx], mode="lines", name="close",
                               line={"color": "#555", "width": 1}), row=1, col=1)
    trades = list(result.get("trades") or [])[:MAX_MARKERS]
    if trades:
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
        fig.add_trace(go.Scattergl(x=_dt(eq_ts), y=equity, mode="lines", name="equity",
                                   line={"color": "#1f5fbf", "width": 1.5}), row=2, col=1)
        fig.add_trace(go.Scattergl(x=_dt(eq_ts), y=dd, mode="lines", name="drawdown %", fill="tozeroy",
                                   line={"color": "#b3261e", "width": 1}), row=3, col=1)
    fig.update_layout(height=900, margin={"l": 60, "r": 20, "t": 40, "b": 40}, hovermode="x unified",
                      legend={"orientation": "h", "y": 1.04})
    return fig


def render_report(*, title: str, df: pd.DataFrame, result: Any) -> str:
    """HTML text of the report. `result` is an engine BacktestResult, or its to_dict() shape plus `equity_curve`."""
    from django.template.loader import render_to_string

    if hasattr(result, "to_dict"):
        result = {**result.to_dict(), "equity_curve": result.equity_curve(max_points=MAX_POINTS)}
    fig = build_figure(df, result)
    figure_html = fig.to_html(full_html=False, include_plotlyjs=True, config={"displaylogo": False})
    trades = list(result.get("trades") or [])
    rows = [{
        "entry": _time(t.get("entry_time")), "exit": _time(t.get("exit_time")),
        "entry_price": format_value(t.get("entry_price")), "exit_price": format_value(t.get("exit_price")),
        "amount": format_value(t.get("amount")), "fees": format_value(t.get("fees")), "pnl": format_value(t.get("pnl")),
        "return_pct": format_value(t.get("return_pct")), "exit_reason": t.get("exit_reason", ""),
        "win": (t.get("pnl") or 0) > 0,
    } for t in trades[:MAX_TRADE_ROWS]]
    ts = df["timestamp"].to_numpy(dtype=np.int64) if len(df) else np.array([], dtype=np.int64)
    period = f"{_time(ts[0])} → {_time(ts[-1])}" if len(ts) else "no candles"
    ot = result.get("open_trade")
    open_rows = [(k, _time(v) if k.endswith("_time") else format_value(v)) for k, v in ot.items()] if ot else []
    return render_to_string("backtest/report.html", {
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


def report_for_run(run: Any) -> str:
    """Report of a stored BacktestRun (candles re-read from its source)."""
    from apps.backtest import services

    df = services.load_data(run).df
    result = {"metrics": run.metrics, "trades": run.trades, "open_trade": run.open_trade,
              "final_equity": run.final_equity, "warnings": run.warnings, "equity_curve": run.equity_curve}
    title = f"Backtest #{run.pk}: {run.strategy} {run.parameters} on {run.market_label}"
    return render_report(title=title, df=df, result=result)
