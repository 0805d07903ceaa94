"""Project-wide building blocks below every app (market <- bots <- backtest all may use it; it uses none of them)."""
