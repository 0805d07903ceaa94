"""Virtual trading: the one set of fill rules (and the equity pass they feed) for live bots and backtests.

Pure: numpy + numba only. Never imports Django, tradebot or any models/services module.
"""
