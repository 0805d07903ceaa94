"""Offline HTML reports of backtest runs, sweeps and walk-forward studies (the `--report` files and the dashboard).

One implementation for both: `report_for_run(run)`, `sweep_report(sweep)` and `walkforward_report(study)` return a
full page (plotly.js embedded: it opens without network access and never loads a script from a CDN), or with
`full_html=False` a fragment (`<div class="tb-report">`, no plotly.js) for a page that serves plotly itself.

A run's report, like backtesting.py's `Backtest.plot()` and freqtrade's `plot-dataframe`: candlesticks with a volume
pane, the strategy's own indicators (`get_indicators()`) on the price or, for oscillators, in their own pane, each
trade as an entry->exit segment coloured by P&L with markers for stop-loss / take-profit exits, the equity beside a
buy-and-hold curve, the drawdown. Long histories are downsampled for the browser: candles are rolled up to a coarser
timeframe (apps.market.aggregation.resample_candles), equity curves keep each bucket's min and max
(apps.backtest.engine.run.downsample_minmax, so the drawdown trough survives); trades are never dropped from the chart.
Numbers are formatted by apps.backtest.formatting only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from apps.backtest.engine.run import downsample_minmax
from apps.backtest.formatting import (
    format_amount,
    format_count,
    format_metric,
    format_money,
    format_pct,
    format_price,
    format_time,
    format_value,
    metric_label,
)
from apps.common.errors import ApplicationError

MAX_CANDLES = 3000  # candlesticks drawn; more are rolled up to a coarser timeframe
MAX_POINTS = 5000  # points of an equity / drawdown curve
MAX_TRADE_ROWS = 1000  # rows of the trades TABLE (the chart keeps every trade)
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
WIN, LOSS, BH, EQUITY = "#0a7a32", "#b3261e", "#8c8c8c", "#1f5fbf"
INDICATOR_COLORS = ("#e67e22", "#8e44ad", "#16a085", "#d35400", "#2c3e50", "#c0392b")
SUMMARY_METRICS = ("total_return_pct", "buy_hold_return_pct", "max_drawdown_pct", "sharpe", "closed_trades",
                   "win_rate_pct")


class ReportError(ApplicationError):
    """A report that cannot be drawn (run not done, unknown heat-map parameter...)."""


# --- helpers ------------------------------------------------------------------------------------------------------

def _dt(ms: Any) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms", utc=True)


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def infer_timeframe(ts: np.ndarray) -> str | None:
    from apps.market.timeframes import TIMEFRAME_MS

    if len(ts) < 2:
        return None
    step = int(np.median(np.diff(ts)))
    return next((tf for tf, ms in TIMEFRAME_MS.items() if ms == step), None)


def chart_candles(df: pd.DataFrame, timeframe: str | None, max_candles: int = MAX_CANDLES) -> tuple[pd.DataFrame, str]:
    """The candles to draw and their timeframe: `df` itself, or rolled up to the finest timeframe that fits
    `max_candles` (partial buckets kept, so a data gap never hides a trade's candle)."""
    from apps.market.aggregation import resample_candles
    from apps.market.timeframes import TIMEFRAME_MS

    tf = timeframe or infer_timeframe(df["timestamp"].to_numpy(dtype=np.int64)) or ""
    if len(df) <= max_candles or tf not in TIMEFRAME_MS:
        return df, tf
    src = TIMEFRAME_MS[tf]
    span = int(df["timestamp"].iloc[-1] - df["timestamp"].iloc[0])
    targets = [t for t, ms in TIMEFRAME_MS.items() if ms > src and ms % src == 0]
    for target in targets:
        if span // TIMEFRAME_MS[target] + 1 <= max_candles or target == targets[-1]:
            try:
                return resample_candles(df, tf, target, complete_only=False), target
            except ValueError:  # off-grid CSV data: draw what we have
                return df, tf
    return df, tf


def strategy_indicators(strategy: str, parameters: Mapping[str, Any] | None, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """The strategy's own indicator series over `df` (its `get_indicators()` after `signals(df)`)."""
    from apps.backtest import services

    strat = services.build_strategy(strategy, parameters)
    if len(df) == 0:
        return {}
    strat.signals(df)
    return {k: s.to_numpy(dtype=np.float64) for k, s in strat.get_indicators().items()}


def is_oscillator(values: np.ndarray, low: float, high: float) -> bool:
    """True when an indicator does not live on the price scale (RSI 0..100, MACD around 0): its own pane."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return False
    med = float(np.median(finite))
    return not (0.5 * low <= med <= 1.5 * high)


def _curve(curve: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    curve = curve or {}
    ts = np.asarray(curve.get("timestamp") or [], dtype=np.int64)
    eq = _floats(curve.get("equity") or [])
    if len(eq) > MAX_POINTS:
        small = downsample_minmax(ts, eq, MAX_POINTS)
        ts, eq = np.asarray(small["timestamp"], dtype=np.int64), np.asarray(small["equity"], dtype=np.float64)
    return ts, eq


def drawdown_pct(equity: np.ndarray, initial_balance: float | None = None) -> np.ndarray:
    """Drawdown in % below the running peak; the initial balance is the first peak (as the metrics define it)."""
    if len(equity) == 0:
        return equity
    peak = np.fmax.accumulate(equity)
    if initial_balance:
        peak = np.fmax(peak, float(initial_balance))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, (equity / peak - 1.0) * 100.0, 0.0)


def _html(fig: Any, include_plotlyjs: bool | str, div_id: str | None = None) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=include_plotlyjs, config=PLOT_CONFIG, div_id=div_id)


def _render(template: str, context: dict[str, Any], *, full_html: bool) -> str:
    from django.template.loader import render_to_string

    return render_to_string(template, {**context, "full_html": full_html,
                                       "generated": format_time(datetime.now(tz=UTC).timestamp() * 1000)})


# --- one run ------------------------------------------------------------------------------------------------------

def build_figure(df: pd.DataFrame, result: Mapping[str, Any], *, timeframe: str | None = None,
                 indicators: Mapping[str, Any] | None = None):
    """Stacked panes sharing the time axis: candles + indicators + trades, volume, [oscillators], equity vs buy &
    hold, drawdown %."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ts = df["timestamp"].to_numpy(dtype=np.int64) if len(df) else np.zeros(0, dtype=np.int64)
    candles, chart_tf = chart_candles(df, timeframe) if len(df) else (df, timeframe or "")
    cts = candles["timestamp"].to_numpy(dtype=np.int64) if len(candles) else np.zeros(0, dtype=np.int64)
    low = float(df["low"].min()) if len(df) else 0.0
    high = float(df["high"].max()) if len(df) else 0.0
    indicators = {k: np.asarray(v, dtype=np.float64) for k, v in (indicators or {}).items() if len(v) == len(ts)}
    overlays = {k: v for k, v in indicators.items() if not is_oscillator(v, low, high)}
    oscillators = {k: v for k, v in indicators.items() if k not in overlays}

    rows = ["price", "volume"] + (["oscillators"] if oscillators else []) + ["equity", "drawdown"]
    heights = {"price": 0.42, "volume": 0.1, "oscillators": 0.14, "equity": 0.22, "drawdown": 0.12}
    rolled = f" (rolled up to {chart_tf} for the chart)" if len(candles) != len(df) else ""
    titles = {"price": f"Price{rolled}: trades as entry→exit segments (green win, red loss)", "volume": "Volume",
              "oscillators": "Indicators", "equity": "Equity vs buy & hold", "drawdown": "Drawdown %"}
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        row_heights=[heights[r] for r in rows], subplot_titles=[titles[r] for r in rows])
    row = {name: i + 1 for i, name in enumerate(rows)}

    if len(candles):
        fig.add_trace(go.Candlestick(
            x=_dt(cts), open=candles["open"], high=candles["high"], low=candles["low"], close=candles["close"],
            name="candles", increasing={"line": {"color": "#26a69a", "width": 1}},
            decreasing={"line": {"color": "#ef5350", "width": 1}}, showlegend=False), row=row["price"], col=1)
        up = candles["close"].to_numpy() >= candles["open"].to_numpy()
        fig.add_trace(go.Bar(x=_dt(cts), y=candles["volume"], name="volume", showlegend=False,
                             marker={"color": np.where(up, "rgba(38,166,154,0.5)", "rgba(239,83,80,0.5)")}),
                      row=row["volume"], col=1)
    # Indicator values at the drawn candles: the value at the last source candle of each (rolled-up) candle.
    at = np.clip(np.searchsorted(ts, cts, side="right") - 1, 0, max(len(ts) - 1, 0)) if len(ts) else cts
    for i, (key, values) in enumerate(indicators.items()):
        color = INDICATOR_COLORS[i % len(INDICATOR_COLORS)]
        y = values[at]
        target = row["price"] if key in overlays else row["oscillators"]
        if key in oscillators and key.endswith("hist"):
            fig.add_trace(go.Bar(x=_dt(cts), y=y, name=key, marker={"color": color}), row=target, col=1)
        else:
            fig.add_trace(go.Scattergl(x=_dt(cts), y=y, mode="lines", name=key,
                                       line={"color": color, "width": 1.2}), row=target, col=1)

    _add_trades(fig, go, list(result.get("trades") or []), result.get("open_trade"), row["price"])

    eq_ts, equity = _curve(result.get("equity_curve"))
    metrics = result.get("metrics") or {}
    initial = metrics.get("initial_balance") or (float(equity[0]) if len(equity) else None)
    if len(equity):
        fig.add_trace(go.Scattergl(x=_dt(eq_ts), y=equity, mode="lines", name="equity",
                                   line={"color": EQUITY, "width": 1.5}), row=row["equity"], col=1)
    if len(ts) and initial:
        close = df["close"].to_numpy(dtype=np.float64)
        bh = downsample_minmax(ts, initial * close / close[0], MAX_POINTS)
        fig.add_trace(go.Scattergl(x=_dt(bh["timestamp"]), y=bh["equity"], mode="lines", name="buy & hold",
                                   line={"color": BH, "width": 1.2, "dash": "dot"}), row=row["equity"], col=1)
    if len(equity):
        fig.add_trace(go.Scattergl(x=_dt(eq_ts), y=drawdown_pct(equity, initial), mode="lines", name="drawdown %",
                                   fill="tozeroy", line={"color": LOSS, "width": 1}), row=row["drawdown"], col=1)

    fig.update_xaxes(rangeslider_visible=False)
    fig.update_yaxes(tickformat=",.2f", row=row["equity"], col=1)
    fig.update_yaxes(ticksuffix="%", tickformat=".2f", row=row["drawdown"], col=1)
    fig.update_layout(height=320 + 180 * len(rows), margin={"l": 70, "r": 20, "t": 90, "b": 40}, hovermode="closest",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.035, "x": 0}, template="plotly_white",
                      bargap=0)
    return fig


def _add_trades(fig: Any, go: Any, trades: list[dict[str, Any]], open_trade: Mapping[str, Any] | None,
                price_row: int) -> None:
    """One segment per closed trade (green when pnl > 0, red otherwise), entry markers, exit markers by reason."""
    for win, name, color in ((True, "winning trades", WIN), (False, "losing trades", LOSS)):
        group = [t for t in trades if ((t.get("pnl") or 0) > 0) == win]
        if not group:
            continue
        xs: list[Any] = []
        ys: list[Any] = []
        text: list[str] = []
        for t in group:
            label = (f"{format_time(t['entry_time'])} → {format_time(t['exit_time'])}<br>pnl "
                     f"{format_money(t.get('pnl'))} ({format_pct(t.get('return_pct'))}), {t.get('exit_reason', '')}")
            xs += [t["entry_time"], t["exit_time"], None]
            ys += [t["entry_price"], t["exit_price"], None]
            text += [label, label, ""]
        x = [None if v is None else pd.Timestamp(int(v), unit="ms", tz="UTC") for v in xs]
        fig.add_trace(go.Scatter(x=x, y=ys, mode="lines", name=f"{name} ({len(group)})", legendgroup=name,
                                 meta=name, line={"color": color, "width": 2.5}, hoverinfo="text", hovertext=text,
                                 connectgaps=False), row=price_row, col=1)
    if trades:
        fig.add_trace(go.Scatter(x=_dt([t["entry_time"] for t in trades]), y=[t["entry_price"] for t in trades],
                                 mode="markers", name="entry", marker={"symbol": "triangle-up", "color": EQUITY,
                                                                       "size": 8},
                                 hovertext=[f"entry {format_price(t['entry_price'])}" for t in trades],
                                 hoverinfo="x+text"), row=price_row, col=1)
    exits = (("signal", "exit", "triangle-down", "#444"), ("stop_loss", "stop-loss exit", "x", LOSS),
             ("take_profit", "take-profit exit", "star", WIN))
    for reason, name, symbol, color in exits:
        group = [t for t in trades if (t.get("exit_reason") or "signal") == reason]
        if not group:
            continue
        fig.add_trace(go.Scatter(x=_dt([t["exit_time"] for t in group]), y=[t["exit_price"] for t in group],
                                 mode="markers", name=name, marker={"symbol": symbol, "color": color, "size": 9},
                                 hovertext=[f"{name} {format_price(t['exit_price'])}, pnl {format_money(t.get('pnl'))}"
                                            for t in group], hoverinfo="x+text"), row=price_row, col=1)
    if open_trade and open_trade.get("entry_time") is not None:
        fig.add_trace(go.Scatter(x=_dt([open_trade["entry_time"]]), y=[open_trade.get("entry_price")],
                                 mode="markers", name="open entry",
                                 marker={"symbol": "triangle-up", "color": "#f39c12", "size": 12}),
                      row=price_row, col=1)


def trade_rows(trades: Sequence[Mapping[str, Any]], limit: int = MAX_TRADE_ROWS) -> list[dict[str, Any]]:
    return [{
        "entry": format_time(t.get("entry_time")), "exit": format_time(t.get("exit_time")),
        "entry_price": format_price(t.get("entry_price")), "exit_price": format_price(t.get("exit_price")),
        "amount": format_amount(t.get("amount")), "fees": format_money(t.get("fees")),
        "pnl": format_money(t.get("pnl")),
        "return_pct": format_pct(t.get("return_pct")), "exit_reason": (t.get("exit_reason") or "").replace("_", " "),
        "win": (t.get("pnl") or 0) > 0,
    } for t in list(trades)[:limit]]


def render_report(*, title: str, df: pd.DataFrame, result: Any, timeframe: str | None = None,
                  strategy: str | None = None, parameters: Mapping[str, Any] | None = None,
                  indicators: Mapping[str, Any] | None = None, full_html: bool = True,
                  include_plotlyjs: bool | str | None = None) -> str:
    """HTML of a run's report. `result` is an engine BacktestResult, or its to_dict() shape plus `equity_curve`.
    Indicators: given, or the strategy's `get_indicators()` over `df` when `strategy` is named."""
    if hasattr(result, "to_dict"):
        timeframe = timeframe or getattr(result, "timeframe", None)
        strategy = strategy or getattr(result, "strategy", None)
        parameters = parameters if parameters is not None else getattr(result, "parameters", None)
        result = {**result.to_dict(), "equity_curve": result.equity_curve(max_points=MAX_POINTS)}
    if indicators is None and strategy:
        indicators = strategy_indicators(strategy, parameters, df)
    fig = build_figure(df, result, timeframe=timeframe, indicators=indicators)
    trades = list(result.get("trades") or [])
    ts = df["timestamp"].to_numpy(dtype=np.int64) if len(df) else np.array([], dtype=np.int64)
    ot = result.get("open_trade")
    metrics = result.get("metrics") or {}
    return _render("backtest/report.html", {
        "title": title,
        "period": f"{format_time(ts[0])} → {format_time(ts[-1])}" if len(ts) else "no candles",
        "n_candles": format_count(len(df)),
        "warnings": list(result.get("warnings") or []),
        "summary": [(metric_label(k), format_metric(k, metrics.get(k)), _sign(metrics.get(k)))
                    for k in SUMMARY_METRICS if k in metrics],
        "metrics": [(metric_label(k), format_metric(k, v)) for k, v in metrics.items()],
        "figure": _html(fig, _plotlyjs(include_plotlyjs, full_html)),
        "open_trade": [(k.replace("_", " "), format_metric(k, v)) for k, v in ot.items()] if ot else [],
        "n_trades": format_count(len(trades)),
        "trades": trade_rows(trades),
        "n_shown": format_count(min(len(trades), MAX_TRADE_ROWS)),
        "trades_truncated": len(trades) > MAX_TRADE_ROWS,
    }, full_html=full_html)


def _sign(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "pos" if value > 0 else "neg" if value < 0 else ""
    return ""


def _plotlyjs(include_plotlyjs: bool | str | None, full_html: bool) -> bool | str:
    return full_html if include_plotlyjs is None else include_plotlyjs


def write_report(path: str | Path, *, title: str, df: pd.DataFrame, result: Any, **kwargs: Any) -> Path:
    return _write(path, render_report(title=title, df=df, result=result, **kwargs))


def _write(path: str | Path, html: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out


def report_for_run(run: Any, *, full_html: bool = True, include_plotlyjs: bool | str | None = None,
                   fragment: bool = False) -> str:
    """Report of a stored BacktestRun (candles re-read from its source, indicators recomputed from them).
    `fragment=True` is `full_html=False` (the dashboard's spelling)."""
    from apps.backtest import services

    full_html = full_html and not fragment
    if run.status != "done":
        raise ReportError(f"backtest run #{run.pk} is {run.status}: no report yet", field="status")
    df = services.load_data(run).df
    result = {"metrics": run.metrics, "trades": run.trades, "open_trade": run.open_trade,
              "final_equity": run.final_equity, "warnings": run.warnings, "equity_curve": run.equity_curve}
    title = f"Backtest #{run.pk}: {run.strategy} {_params(run.parameters)} on {run.market_label}"
    return render_report(title=title, df=df, result=result, timeframe=run.timeframe, strategy=run.strategy,
                         parameters=run.parameters, full_html=full_html, include_plotlyjs=include_plotlyjs)


def render_run_fragment(run: Any) -> str:
    """The run's report as a fragment for the dashboard's backtest page (which serves plotly.js itself)."""
    return report_for_run(run, full_html=False)


def _params(parameters: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (parameters or {}).items()) or "defaults"


# --- sweeps -------------------------------------------------------------------------------------------------------

def _metric_value(metrics: Mapping[str, Any] | None, metric: str) -> float:
    v = (metrics or {}).get(metric.lstrip("-"))
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v) else np.nan


def varied_parameters(strategy: str, results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Parameters taking more than one value across `results`, in the strategy's declaration order."""
    from apps.backtest import services

    declared = [p.name for p in services.resolve_strategy(strategy).param_space()]
    seen: dict[str, set] = {}
    for r in results:
        for k, v in (r.get("parameters") or {}).items():
            seen.setdefault(k, set()).add(repr(v))
    order = declared + [k for k in seen if k not in declared]
    return [k for k in order if len(seen.get(k, ())) > 1]


def _axis(values: list[Any], max_bins: int = 20) -> tuple[list[Any], list[str], Any]:
    """Heat-map axis: the distinct values (sorted), or equal-width bins when a random sweep has too many."""
    distinct = sorted(set(values), key=lambda v: (isinstance(v, str), v))
    if len(distinct) <= max_bins or not all(isinstance(v, int | float) for v in distinct):
        return distinct, [format_value(v) if not isinstance(v, float) else f"{v:g}" for v in distinct], \
            (lambda v, d=distinct: d.index(v))
    edges = np.linspace(float(distinct[0]), float(distinct[-1]), max_bins + 1)
    labels = [f"{a:.4g}–{b:.4g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return list(range(max_bins)), labels, (lambda v, e=edges: int(min(np.searchsorted(e, v, side="right") - 1,
                                                                       max_bins - 1)))


def heatmap_grid(results: Sequence[Mapping[str, Any]], x: str, y: str, metric: str) -> dict[str, Any]:
    """{"x": labels, "y": labels, "z": rows (len(y) x len(x)), best value of `metric` per cell over the other
    parameters; NaN where no set was evaluated}. '-metric' ranks ascending, so the best is the minimum."""
    ok = [r for r in results if r.get("metrics") is not None and x in (r.get("parameters") or {})
          and y in (r.get("parameters") or {})]
    _, xl, xi = _axis([r["parameters"][x] for r in ok])
    _, yl, yi = _axis([r["parameters"][y] for r in ok])
    z = np.full((len(yl), len(xl)), np.nan)
    better = np.fmin if metric.startswith("-") else np.fmax
    for r in ok:
        i, j = yi(r["parameters"][y]), xi(r["parameters"][x])
        z[i, j] = better(z[i, j], _metric_value(r["metrics"], metric))
    return {"x": xl, "y": yl, "z": z}


def sweep_figure(results: Sequence[Mapping[str, Any]], x: str, y: str, metric: str):
    import plotly.graph_objects as go

    grid = heatmap_grid(results, x, y, metric)
    z = grid["z"]
    text = [[format_metric(metric, None if np.isnan(v) else float(v)) for v in row] for row in z]
    name = metric_label(metric)
    fig = go.Figure(go.Heatmap(
        x=grid["x"], y=grid["y"], z=[[None if np.isnan(v) else float(v) for v in row] for row in z],
        text=text, texttemplate="%{text}", colorscale="RdYlGn" + ("_r" if metric.startswith("-") else ""),
        colorbar={"title": {"text": name}}, name=name, xgap=1, ygap=1,
        hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{name}=%{{text}}<extra></extra>"))
    fig.update_xaxes(title_text=x, type="category")
    fig.update_yaxes(title_text=y, type="category")
    fig.update_layout(title=f"Best {name} per ({x}, {y})", template="plotly_white",
                      height=max(380, 120 + 34 * len(grid["y"])), margin={"l": 70, "r": 20, "t": 60, "b": 60})
    return fig


def render_sweep_report(*, title: str, strategy: str, metric: str, results: Sequence[Mapping[str, Any]],
                        ranking: Sequence[Mapping[str, Any]], x: str | None = None, y: str | None = None,
                        extra: Sequence[str] = (), full_html: bool = True,
                        include_plotlyjs: bool | str | None = None) -> str:
    varied = varied_parameters(strategy, results)
    names = sorted({k for r in results for k in (r.get("parameters") or {})})
    for axis, value in (("x", x), ("y", y)):
        if value is not None and value not in names:
            raise ReportError(f"heat-map parameter {value!r} is not a parameter of this sweep (expected one of "
                              f"{', '.join(names) or 'none'})", field=f"heatmap_{axis}")
    if x is None:
        x = next((k for k in varied if k != y), None)
    if y is None:
        y = next((k for k in varied if k != x), None)
    figure = ""
    note = ""
    if x and y and x != y:
        figure = _html(sweep_figure(results, x, y, metric), _plotlyjs(include_plotlyjs, full_html), div_id="heat")
    else:
        note = "fewer than two parameters vary in this sweep: no heat map"
    key = metric.lstrip("-")
    columns = [k for k in (key, "total_return_pct", "max_drawdown_pct", "sharpe", "closed_trades", "win_rate_pct")]
    columns = list(dict.fromkeys(columns))
    rows = [{"rank": r.get("rank", i + 1), "parameters": _params(r.get("parameters")),
             "values": [(format_metric(c, (r.get("metrics") or {}).get(c)),
                         _sign((r.get("metrics") or {}).get(c)) if c.endswith("_pct") else "") for c in columns]}
            for i, r in enumerate(ranking)]
    return _render("backtest/report_sweep.html", {
        "title": title, "extra": list(extra), "metric": metric_label(metric), "heatmap": figure, "note": note,
        "x": x, "y": y, "columns": [metric_label(c) for c in columns], "rows": rows,
        "n_results": format_count(len(results)),
    }, full_html=full_html)


def sweep_report(sweep: Any, *, x: str | None = None, y: str | None = None, full_html: bool = True,
                 include_plotlyjs: bool | str | None = None) -> str:
    """Report of a stored Sweep: ranked table (its top K) and a heat map of two parameters (`x`, `y`, default the
    first two that vary), each cell the best metric over the other parameters."""
    results = list(sweep.results.filter(error="", metrics__isnull=False).values("parameters", "metrics"))
    extra = [f"{sweep.mode} sweep on {sweep.market_label}", f"{format_count(sweep.completed)}/"
             f"{format_count(sweep.total)} evaluated, {format_count(sweep.failed)} failed ({sweep.status})"]
    return render_sweep_report(title=f"Sweep #{sweep.pk}: {sweep.strategy} ranked by {sweep.metric}",
                               strategy=sweep.strategy, metric=sweep.metric, results=results,
                               ranking=sweep.ranking or [], x=x, y=y, extra=extra, full_html=full_html,
                               include_plotlyjs=include_plotlyjs)


def write_sweep_report(path: str | Path, sweep: Any, **kwargs: Any) -> Path:
    return _write(path, sweep_report(sweep, **kwargs))


# --- walk-forward -------------------------------------------------------------------------------------------------

def walkforward_figure(windows: Sequence[Mapping[str, Any]], stitched_equity: Mapping[str, Any] | None,
                       metric: str):
    """In-sample vs out-of-sample `metric` per window (bars, one pair per window), the stitched out-of-sample
    equity below."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    key = metric.lstrip("-")
    name = metric_label(key)
    labels = [f"window {w['index']}<br>{format_time(w.get('test_start'))[:10]}" for w in windows]
    ins = [_metric_value(w.get("in_sample"), key) for w in windows]
    oos = [_metric_value(w.get("out_of_sample"), key) for w in windows]
    eq_ts, equity = _curve(stitched_equity)
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.14, row_heights=[0.55, 0.45],
                        subplot_titles=(f"{name}: in-sample (best on train) vs out-of-sample (test) per window",
                                        "Stitched out-of-sample equity"))
    for values, label, color in ((ins, "in-sample", "#9aa9c8"), (oos, "out-of-sample", EQUITY)):
        fig.add_trace(go.Bar(x=labels, y=[None if np.isnan(v) else v for v in values], name=label,
                             marker={"color": color}, text=[format_metric(key, None if np.isnan(v) else v)
                                                            for v in values],
                             textposition="outside"), row=1, col=1)
    if len(equity):
        fig.add_trace(go.Scattergl(x=_dt(eq_ts), y=equity, mode="lines", name="out-of-sample equity",
                                   line={"color": EQUITY, "width": 1.5}), row=2, col=1)
    fig.update_layout(barmode="group", template="plotly_white", height=760,
                      margin={"l": 70, "r": 20, "t": 60, "b": 40}, legend={"orientation": "h", "y": 1.06})
    return fig


def render_walkforward_report(*, title: str, result: Mapping[str, Any], metric: str, extra: Sequence[str] = (),
                              full_html: bool = True, include_plotlyjs: bool | str | None = None) -> str:
    """`result` is the walk-forward shape {windows, stitched_metrics, stitched_equity, warnings}."""
    windows = list(result.get("windows") or [])
    key = metric.lstrip("-")
    fig = walkforward_figure(windows, result.get("stitched_equity"), metric)
    rows = [{
        "index": w["index"],
        "train": f"{format_time(w.get('train_start'))} → {format_time(w.get('train_end'))}",
        "test": f"{format_time(w.get('test_start'))} → {format_time(w.get('test_end'))}",
        "parameters": _params(w.get("parameters")),
        "in_sample": format_metric(key, (w.get("in_sample") or {}).get(key)),
        "out_of_sample": format_metric(key, (w.get("out_of_sample") or {}).get(key)),
        "oos_return": format_pct((w.get("out_of_sample") or {}).get("total_return_pct")),
        "oos_trades": format_count((w.get("out_of_sample") or {}).get("closed_trades")),
        "error": w.get("error") or "",
    } for w in windows]
    stitched = result.get("stitched_metrics") or {}
    return _render("backtest/report_walkforward.html", {
        "title": title, "extra": list(extra), "metric": metric_label(key),
        "figure": _html(fig, _plotlyjs(include_plotlyjs, full_html), div_id="walkforward"), "rows": rows,
        "stitched": [(metric_label(k), format_metric(k, v)) for k, v in stitched.items()],
        "warnings": list(result.get("warnings") or []),
    }, full_html=full_html)


def walkforward_report(study: Any, *, full_html: bool = True, include_plotlyjs: bool | str | None = None) -> str:
    """Report of a stored WalkForward study."""
    result = {"windows": study.windows, "stitched_metrics": study.stitched_metrics,
              "stitched_equity": study.stitched_equity, "warnings": [w for w in (study.error or "").split("; ") if w]}
    extra = [f"{study.market_label}; train {format_count(study.train_size)}, test {format_count(study.test_size)}"
             f" candles; grid {_params(study.space)}", f"status {study.status}"]
    return render_walkforward_report(title=f"Walk-forward #{study.pk}: {study.strategy} by {study.metric}",
                                     result=result, metric=study.metric, extra=extra, full_html=full_html,
                                     include_plotlyjs=include_plotlyjs)


def write_walkforward_report(path: str | Path, *, title: str, result: Mapping[str, Any], metric: str,
                             **kwargs: Any) -> Path:
    return _write(path, render_walkforward_report(title=title, result=result, metric=metric, **kwargs))
