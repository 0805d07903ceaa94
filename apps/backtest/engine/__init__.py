"""The backtest engine (pure: numpy/pandas/numba, no Django): strategies replayed through the bots' fill rules.

Modules: `run` (one backtest), `metrics` (the metric set), `arrays` (candles as arrays), sweeps in `space` (grids,
random samples, validation, chunks), `cache` (the indicator cache), `chunk` (evaluating a chunk of parameter sets) and
`ranking`, and `walkforward`. Import from the submodules; this package imports nothing itself so that loading one part
never compiles or imports the others.
"""
