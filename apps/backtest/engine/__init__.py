"""The backtest engine (pure: numpy/pandas/numba, no Django): fill rules, metrics, one run; sweeps and walk-forward.

Import from the submodules (`fills`, `metrics`, `run`, `sweep`, `walkforward`); this package imports nothing itself so
that loading one part never compiles or imports the others.
"""
